//! `hubbub cluster remove NODE`: asks a running node (any member) to remove
//! another from the log's membership, through its admin API. A plain
//! HTTP/1.1 request over TCP or TLS (trusting the given CA).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer read (the admin API's answers are small JSON).
const MAX_ANSWER: u64 = 1 << 20;

/// `POST {url}/api/admin/cluster/remove/{node}`; returns the answer's body.
pub async fn remove(url: &str, token: &str, ca: &Path, node: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        node.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "not a node name: {node:?}"
    );
    let (tls, rest) = match url.split_once("://") {
        Some(("https", r)) => (true, r),
        Some(("http", r)) => (false, r),
        _ => bail!("--url must start with https:// or http://"),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let request = format!(
        "POST /api/admin/cluster/remove/{node} HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let tcp = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let answer = if tls {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading the CA {}", ca.display()))?
        {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        exchange(stream, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("{url} answered {status}: {body}");
    }
    Ok(body.to_owned())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> anyhow::Result<String> {
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
