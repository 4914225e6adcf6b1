//! The local certificate authority: a CA and a server certificate generated on
//! first start (rcgen), reused afterwards, and renewed when the server
//! certificate nears expiry or no longer names every host. A mkcert CA
//! (`$CAROOT` or `mkcert -CAROOT`) is used instead when present, so browsers
//! that already trust mkcert trust hubbub at once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::auth::tokens::write_private;
use crate::protocol::time::{now_ms, ymd};

/// A server certificate this close to expiry is renewed at start.
const RENEW_BEFORE_DAYS: u64 = 30;
/// Server certificate lifetime (browsers reject longer than 398 days).
const LEAF_DAYS: u64 = 397;
const CA_YEARS: u64 = 10;
const DAY_MS: u64 = 86_400_000;

/// Where the CA comes from.
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mkcert: bool,
}

/// PEM of the server certificate (leaf first, then the CA) and its key.
pub struct ServerPem {
    pub chain: String,
    pub key: String,
    pub ca: CaFiles,
    /// `true` when this start wrote a new server certificate.
    pub renewed: bool,
}

/// Sets a certificate's validity from one instant to another (UTC days).
fn set_validity(p: &mut CertificateParams, from_ms: u64, to_ms: u64) {
    let (y, m, d) = ymd(from_ms);
    p.not_before = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
    let (y, m, d) = ymd(to_ms);
    p.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
}

/// The mkcert CA root, if mkcert is set up on this machine.
fn mkcert_caroot() -> Option<PathBuf> {
    let dir = std::env::var_os("CAROOT").map(PathBuf::from).or_else(|| {
        let out = Command::new("mkcert").arg("-CAROOT").output().ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })?;
    (dir.join("rootCA.pem").is_file() && dir.join("rootCA-key.pem").is_file()).then_some(dir)
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "hubbub local development CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "hubbub");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = now_ms();
    set_validity(&mut p, now - DAY_MS, now + CA_YEARS * 365 * DAY_MS);
    Ok(p)
}

/// Finds or creates the CA: mkcert's if present, else `certs/ca.pem` + `ca.key`.
pub fn ensure_ca(certs: &Path) -> Result<CaFiles> {
    if let Some(root) = mkcert_caroot() {
        return Ok(CaFiles {
            cert: root.join("rootCA.pem"),
            key: root.join("rootCA-key.pem"),
            mkcert: true,
        });
    }
    let files = CaFiles {
        cert: certs.join("ca.pem"),
        key: certs.join("ca.key"),
        mkcert: false,
    };
    if files.cert.is_file() && files.key.is_file() {
        return Ok(files);
    }
    std::fs::create_dir_all(certs).with_context(|| format!("creating {}", certs.display()))?;
    let key = KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&key)?;
    write_private(&files.key, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", files.key.display()))?;
    std::fs::write(&files.cert, ca.pem())
        .with_context(|| format!("writing {}", files.cert.display()))?;
    tracing::info!(ca = %files.cert.display(), "generated a local certificate authority");
    Ok(files)
}

/// The server certificate for `names`, signed by the CA; reused while it is
/// valid for 30 more days, names every host, and was issued by this CA.
pub fn ensure_server_cert(certs: &Path, names: &[String]) -> Result<ServerPem> {
    let ca = ensure_ca(certs)?;
    let ca_pem = std::fs::read_to_string(&ca.cert)
        .with_context(|| format!("reading {}", ca.cert.display()))?;
    let ca_key = std::fs::read_to_string(&ca.key)
        .with_context(|| format!("reading {}", ca.key.display()))?;
    let (cert_path, key_path) = (certs.join("server.pem"), certs.join("server.key"));
    if let (Ok(chain), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) && leaf_still_good(&chain, &ca_pem, names)
    {
        return Ok(ServerPem {
            chain,
            key,
            ca,
            renewed: false,
        });
    }
    let issuer = Issuer::from_ca_cert_pem(
        &ca_pem,
        KeyPair::from_pem(&ca_key).context("reading the CA key")?,
    )
    .context("reading the CA certificate")?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = now_ms();
    set_validity(&mut p, now - DAY_MS, now + LEAF_DAYS * DAY_MS);
    let key = KeyPair::generate()?;
    let leaf = p.signed_by(&key, &issuer)?;
    let chain = format!("{}{}", leaf.pem(), ca_pem);
    std::fs::create_dir_all(certs)?;
    write_private(&key_path, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key_path.display()))?;
    std::fs::write(&cert_path, &chain)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::info!(cert = %cert_path.display(), names = ?names, "issued a server certificate");
    Ok(ServerPem {
        chain,
        key: key.serialize_pem(),
        ca,
        renewed: true,
    })
}

fn leaf_still_good(chain_pem: &str, ca_pem: &str, names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, leaf_pem)) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, ca_pem)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf_pem.parse_x509(), ca_pem.parse_x509()) else {
        return false;
    };
    if leaf.issuer() != ca.subject() {
        return false;
    }
    let not_after_ms = leaf.validity().not_after.timestamp().max(0) as u64 * 1000;
    if not_after_ms < now_ms() + RENEW_BEFORE_DAYS * DAY_MS {
        return false;
    }
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return false;
    };
    let have: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names
        .iter()
        .all(|n| have.iter().any(|h| h.eq_ignore_ascii_case(n)))
}
