//! HTTP: where a server is ([`Endpoint`], plain or TLS), one request per
//! connection, and signing up or logging in ([`Account`]).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// An HTTP response, body read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// All `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The value a `Set-Cookie` gives to `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (k, v) = first.split_once('=')?;
            (k.trim() == name).then(|| v.to_owned())
        })
    }
}

/// Where a server is: its address, and for `https`/`wss` the TLS settings
/// (which CA to trust). A plain `SocketAddr` converts into a plain endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<TlsConnector>,
    /// The local address to connect from (e.g. another loopback address).
    source: Option<IpAddr>,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            tls: None,
            source: None,
        }
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(e: &Endpoint) -> Self {
        e.clone()
    }
}

/// A byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Endpoint {
    /// TLS, trusting the CA certificates in the PEM file `ca` (e.g. `certs/ca.pem`).
    pub fn tls(addr: SocketAddr, ca: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(c?)?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Endpoint {
            addr,
            tls: Some(TlsConnector::from(Arc::new(cfg))),
            source: None,
        })
    }

    /// Connects from `ip` (any port): a second client address on one machine,
    /// e.g. `127.0.0.2` on Linux, where all of 127.0.0.0/8 is local.
    pub fn from_source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// The same settings (TLS roots, source address) at another address:
    /// another node of a cluster.
    pub fn at(&self, addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            ..self.clone()
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Connects, completing the TLS handshake for `localhost` when TLS is on.
    pub async fn connect(&self) -> anyhow::Result<Box<dyn Io>> {
        let tcp = match self.source {
            None => TcpStream::connect(self.addr).await.context("connect")?,
            Some(ip) => {
                let sock = if ip.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .context("socket")?;
                sock.bind(SocketAddr::new(ip, 0))
                    .with_context(|| format!("binding {ip}"))?;
                sock.connect(self.addr).await.context("connect")?
            }
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let name = ServerName::try_from("localhost")?;
                Ok(Box::new(
                    c.connect(name, tcp).await.context("TLS handshake")?,
                ))
            }
        }
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    ep: impl Into<Endpoint>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let ep = ep.into();
    let addr = ep.addr;
    let io = ep.connect().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("handshake")?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.unwrap_or("").to_owned())))?;
    let resp = sender.send_request(req).await.context("send")?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.context("body")?.to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A logged-in user: the tokens the server set as cookies.
#[derive(Clone, Debug)]
pub struct Account {
    pub username: String,
    pub access: String,
    pub refresh: String,
}

impl Account {
    /// The `Cookie` header a browser would send to `/api/*` and `/ws`.
    pub fn cookie_header(&self) -> String {
        format!(
            "access_token={}; refresh_token={}",
            self.access, self.refresh
        )
    }

    fn from_response(username: &str, r: &HttpResponse) -> anyhow::Result<Self> {
        Ok(Account {
            username: username.to_owned(),
            access: r
                .cookie("access_token")
                .ok_or_else(|| anyhow!("no access_token cookie"))?,
            refresh: r
                .cookie("refresh_token")
                .ok_or_else(|| anyhow!("no refresh_token cookie"))?,
        })
    }
}

/// The body of `POST /api/auth/signup` and `/api/auth/login`.
#[derive(Serialize)]
struct Credentials<'a> {
    username: &'a str,
    password: &'a str,
}

/// Signs up (or, when the name is taken, logs in).
pub async fn signup_or_login(
    ep: impl Into<Endpoint>,
    username: &str,
    password: &str,
) -> anyhow::Result<Account> {
    let ep = ep.into();
    let body = serde_json::to_string(&Credentials { username, password })?;
    let r = request(&ep, "POST", "/api/auth/signup", &[], Some(&body)).await?;
    let r = if r.status == 409 {
        request(&ep, "POST", "/api/auth/login", &[], Some(&body)).await?
    } else {
        r
    };
    if r.status != 200 && r.status != 201 {
        bail!("auth for {username} failed: {} {}", r.status, r.body);
    }
    Account::from_response(username, &r)
}
