//! TLS for the public listener: rustls with the ring provider, ALPN
//! `http/1.1` (warp's WebSockets have no HTTP/2 extended CONNECT), a
//! certificate that can be swapped at run time (SIGHUP) without dropping
//! connections.

pub mod certs;
mod records;
pub mod stream;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
    /// The rustls config every handshake uses (`stream::accept`).
    pub config: Arc<ServerConfig>,
    pub source: CertSource,
    resolver: Arc<SwappableCert>,
    served: Arc<ServedNames>,
}

/// The names the served certificate is for, swapped with it on reload. The
/// Host check reads it per request: a short read lock to clone an `Arc`,
/// never held across an await.
#[derive(Debug, Default)]
pub struct ServedNames(RwLock<Arc<CertNames>>);

impl ServedNames {
    pub fn new(names: CertNames) -> Self {
        ServedNames(RwLock::new(Arc::new(names)))
    }

    pub fn get(&self) -> Arc<CertNames> {
        // A poisoned lock still holds a complete value (it is only ever replaced whole).
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, names: CertNames) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(names);
    }
}

/// A certificate's subject alternative names: DNS names (lowercase, maybe
/// `*.` wildcards) and IP addresses.
#[derive(Debug, Default, PartialEq)]
pub struct CertNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl CertNames {
    /// From SAN strings as `certs::served_names` gives them.
    pub fn new(sans: Vec<String>) -> Self {
        let mut n = CertNames::default();
        for s in sans {
            match s.parse::<IpAddr>() {
                Ok(ip) => n.ips.push(ip),
                Err(_) => n.dns.push(s.trim_end_matches('.').to_ascii_lowercase()),
            }
        }
        n
    }

    fn of(key: &CertifiedKey) -> Self {
        key.cert.first().map_or_else(CertNames::default, |leaf| {
            CertNames::new(certs::served_names(leaf))
        })
    }

    /// Whether `host` (lowercase, no trailing dot) is one of the names, or
    /// matches a wildcard `*.base` as TLS clients match it: exactly one
    /// non-empty label in front of `base`.
    pub fn covers_name(&self, host: &str) -> bool {
        self.dns.iter().any(|d| match d.strip_prefix("*.") {
            Some(base) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
            None => d == host,
        })
    }

    pub fn covers_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
    }
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
        let key = load_key(&source)?;
        let served = Arc::new(ServedNames::new(CertNames::of(&key)));
        let resolver = Arc::new(SwappableCert(RwLock::new(key)));
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(cfg),
            source,
            resolver,
            served,
        })
    }

    /// The names of the certificate being served, kept current by `reload`.
    pub fn served_names(&self) -> Arc<ServedNames> {
        self.served.clone()
    }

    /// Re-reads the certificate (SIGHUP). On error the old one stays in use.
    /// The allowed Host names follow the new certificate: a name it no longer
    /// covers is refused from now on (unless configured by flag).
    pub fn reload(&self) -> Result<()> {
        let key = load_key(&self.source)?;
        let names = CertNames::of(&key);
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.served.set(names);
        Ok(())
    }

    /// `reload`, logging the outcome (SIGHUP handler).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => {
                let names = self.served.get();
                tracing::info!(dns = ?names.dns, ips = ?names.ips, "TLS certificate reloaded");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_names_match_exactly_and_wildcards_cover_one_label() {
        let n = CertNames::new(
            ["Chat.Test.", "*.wild.test", "192.0.2.7", "::2"]
                .map(String::from)
                .to_vec(),
        );
        for ok in ["chat.test", "a.wild.test", "x-1.wild.test"] {
            assert!(n.covers_name(ok), "{ok}");
        }
        for bad in [
            "wild.test",
            "a.b.wild.test",
            ".wild.test",
            "evil.test",
            "chat.test.evil",
            "xchat.test",
            "192.0.2.7",
        ] {
            assert!(!n.covers_name(bad), "{bad}");
        }
        assert!(n.covers_ip("192.0.2.7".parse().unwrap()));
        assert!(n.covers_ip("::2".parse().unwrap()));
        assert!(!n.covers_ip("192.0.2.8".parse().unwrap()));
    }
}
