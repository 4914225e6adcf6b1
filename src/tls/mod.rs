//! TLS for the public listener: rustls with the ring provider, ALPN
//! `http/1.1` (warp's WebSockets have no HTTP/2 extended CONNECT), a
//! certificate that can be swapped at run time (SIGHUP) without dropping
//! connections.

pub mod certs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// Generated and signed by the local CA (ours in `certs/`, or mkcert's).
    Local {
        certs_dir: PathBuf,
        names: Vec<String>,
        ca: PathBuf,
        mkcert: bool,
    },
    /// Given with `--tls-cert` / `--tls-key`.
    Files { cert: PathBuf, key: PathBuf },
}

pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub source: CertSource,
    resolver: Arc<SwappableCert>,
}

/// Hands rustls the current certificate; `reload` swaps it for new handshakes
/// while existing connections keep theirs.
#[derive(Debug)]
struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a valid certificate.
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The names the local certificate covers: loopback, the listen address when
/// it is a specific one, and every `--tls-hostname`.
pub fn local_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let ip = listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    for h in extra {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
            names.push(h.clone());
        }
    }
    names
}

fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading certificates")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM file");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the private key")?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(
        CertifiedKey::from_der(chain, key, &provider)
            .context("certificate and key do not match")?,
    ))
}

fn load_key(source: &CertSource) -> Result<Arc<CertifiedKey>> {
    match source {
        CertSource::Local {
            certs_dir, names, ..
        } => {
            let pem = certs::ensure_server_cert(certs_dir, names)?;
            certified_key(pem.chain.as_bytes(), pem.key.as_bytes())
        }
        CertSource::Files { cert, key } => {
            let c = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let k = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            certified_key(&c, &k)
        }
    }
}

impl Tls {
    /// Local CA mode: `certs_dir` holds (or will hold) the CA and server certificate.
    pub fn local(certs_dir: &Path, names: Vec<String>) -> Result<Self> {
        let ca = certs::ensure_ca(certs_dir, &names)?;
        let source = CertSource::Local {
            certs_dir: certs_dir.to_owned(),
            names,
            ca: ca.cert,
            mkcert: ca.mkcert,
        };
        Self::new(source)
    }

    pub fn files(cert: PathBuf, key: PathBuf) -> Result<Self> {
        Self::new(CertSource::Files { cert, key })
    }

    fn new(source: CertSource) -> Result<Self> {
        let resolver = Arc::new(SwappableCert(RwLock::new(load_key(&source)?)));
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(cfg)),
            source,
            resolver,
        })
    }

    /// Re-reads the certificate (SIGHUP). On error the old one stays in use.
    pub fn reload(&self) -> Result<()> {
        let key = load_key(&self.source)?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    /// `reload`, logging the outcome (SIGHUP handler).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the current certificate")
            }
        }
    }

    /// What to tell a person at start-up: where the CA is and how to trust it.
    pub fn trust_help(&self) -> String {
        match &self.source {
            CertSource::Files { cert, .. } => format!("TLS certificate: {}", cert.display()),
            CertSource::Local {
                ca, mkcert: true, ..
            } => {
                format!(
                    "TLS certificate signed by your mkcert CA ({}); browsers that trust mkcert trust hubbub.",
                    ca.display()
                )
            }
            CertSource::Local { ca, .. } => {
                let ca = ca.display();
                format!(
                    "TLS certificate signed by the local CA {ca}. To trust it:\n\
                     \x20 Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/hubbub-ca.crt && sudo update-ca-certificates\n\
                     \x20 macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}\n\
                     \x20 Firefox/Chromium (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n hubbub -i {ca}"
                )
            }
        }
    }
}
