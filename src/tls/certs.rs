//! The local certificate authority: a CA and a server certificate generated on
//! first start (rcgen), reused afterwards, and renewed when the server
//! certificate nears expiry or no longer names every host. A mkcert CA
//! (`$CAROOT` or `mkcert -CAROOT`) is used instead when present, so browsers
//! that already trust mkcert trust hubbub at once.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};

use crate::files::write_private;
use crate::protocol::time::{now_ms, ymd};

/// A server certificate this close to expiry is renewed at start.
const RENEW_BEFORE_DAYS: u64 = 30;
/// Server certificate lifetime (browsers reject longer than 398 days).
const LEAF_DAYS: u64 = 397;
const CA_YEARS: u64 = 10;
const DAY_MS: u64 = 86_400_000;
/// The common name of the CA we generate: how a start tells our CA (which it
/// may replace) from one a person put into the certs directory (kept).
const CA_NAME: &str = "hubbub local development CA";

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

fn ca_params(names: &[String]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name
        .push(DnType::OrganizationName, "hubbub");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted(names),
        excluded_subtrees: Vec::new(),
    });
    let now = now_ms();
    set_validity(&mut p, now - DAY_MS, now + CA_YEARS * 365 * DAY_MS);
    Ok(p)
}

/// What the generated CA may sign for: `localhost` (and its subdomains),
/// 127.0.0.0/8 and ::1, and every other name and address of `names`. Users
/// trust this CA system-wide; with the constraints a stolen key cannot
/// impersonate any other site. A wildcard name permits its parent domain.
pub fn permitted(names: &[String]) -> Vec<GeneralSubtree> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = vec![
        GeneralSubtree::DnsName("localhost".into()),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            8,
        )),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            128,
        )),
    ];
    for n in names {
        let sub = match n.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => continue,
            Ok(ip @ IpAddr::V4(_)) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, 32))
            }
            Ok(ip) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, 128)),
            Err(_) => {
                let d = n
                    .trim_start_matches("*.")
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    continue;
                }
                GeneralSubtree::DnsName(d)
            }
        };
        if !out.contains(&sub) {
            out.push(sub);
        }
    }
    out
}

/// Finds or creates the CA: mkcert's if present, else `certs/ca.pem` + `ca.key`.
///
/// A CA we generated earlier that lacks name constraints (made before they
/// existed) or whose constraints do not cover `names` is replaced, with a
/// warning: browsers must trust the new one, and the server certificate it
/// signed is removed so that it is issued anew. A CA with another name is a
/// person's choice and kept, with a warning if it is unconstrained.
pub fn ensure_ca(certs: &Path, names: &[String]) -> Result<CaFiles> {
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
        let pem = std::fs::read_to_string(&files.cert)
            .with_context(|| format!("reading {}", files.cert.display()))?;
        match ca_fit(&pem, names) {
            CaFit::Good => return Ok(files),
            CaFit::Foreign => {
                tracing::warn!(ca = %files.cert.display(), "the CA in the certs directory is not one hubbub generated and has no name constraints; whoever holds its key can impersonate any site to machines that trust it");
                return Ok(files);
            }
            CaFit::Replace => {
                tracing::warn!(ca = %files.cert.display(), names = ?names, "replacing the generated CA with one constrained to this server's names; trust the new ca.pem again (and remove the old one from your trust stores)");
                for f in ["server.pem", "server.key"] {
                    let _ = std::fs::remove_file(certs.join(f));
                }
            }
        }
    }
    std::fs::create_dir_all(certs).with_context(|| format!("creating {}", certs.display()))?;
    let key = KeyPair::generate()?;
    let ca = ca_params(names)?.self_signed(&key)?;
    write_private(&files.key, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", files.key.display()))?;
    std::fs::write(&files.cert, ca.pem())
        .with_context(|| format!("writing {}", files.cert.display()))?;
    tracing::info!(ca = %files.cert.display(), "generated a local certificate authority");
    Ok(files)
}

/// A subnet as the extension stores it: address then mask.
fn cidr_bytes(c: &CidrSubnet) -> Vec<u8> {
    match c {
        CidrSubnet::V4(a, m) => [a.as_slice(), m.as_slice()].concat(),
        CidrSubnet::V6(a, m) => [a.as_slice(), m.as_slice()].concat(),
    }
}

#[derive(Debug, PartialEq)]
enum CaFit {
    /// Ours and constrained to (at least) the names we serve.
    Good,
    /// Ours, but unconstrained or not covering every name: generate anew.
    Replace,
    /// Not ours (or unreadable): keep it.
    Foreign,
}

fn ca_fit(ca_pem: &str, names: &[String]) -> CaFit {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return CaFit::Foreign;
    };
    let Ok(ca) = pem.parse_x509() else {
        return CaFit::Foreign;
    };
    let ours = ca
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(CA_NAME));
    let have = match ca.name_constraints() {
        Ok(Some(nc)) => nc.value.permitted_subtrees.clone().unwrap_or_default(),
        _ => Vec::new(),
    };
    if !ours {
        return if have.is_empty() {
            CaFit::Foreign
        } else {
            CaFit::Good
        };
    }
    let covered = permitted(names).iter().all(|want| {
        have.iter().any(|h| match (want, &h.base) {
            (GeneralSubtree::DnsName(w), x509_parser::extensions::GeneralName::DNSName(d)) => {
                w.eq_ignore_ascii_case(d)
            }
            (GeneralSubtree::IpAddress(w), x509_parser::extensions::GeneralName::IPAddress(b)) => {
                cidr_bytes(w) == *b
            }
            _ => false,
        })
    });
    if covered { CaFit::Good } else { CaFit::Replace }
}

/// The server certificate for `names`, signed by the CA; reused while it is
/// valid for 30 more days, names every host, and was issued by this CA.
pub fn ensure_server_cert(certs: &Path, names: &[String]) -> Result<ServerPem> {
    let ca = ensure_ca(certs, names)?;
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

/// The DNS names (as written, wildcards included) and IP addresses (as text)
/// of a certificate's subject alternative names; `None` without that extension.
fn sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let san = cert.subject_alternative_name().ok()??;
    let names = san
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
    Some(names)
}

/// The names a DER certificate (the served leaf) is for: its SANs only, as
/// clients check (the subject CN is ignored). Empty when it cannot be parsed.
pub fn served_names(der: &[u8]) -> Vec<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| sans(&c))
        .unwrap_or_default()
}

fn leaf_still_good(chain_pem: &str, ca_pem: &str, names: &[String]) -> bool {
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
    let Some(have) = sans(&leaf) else {
        return false;
    };
    names
        .iter()
        .all(|n| have.iter().any(|h| h.eq_ignore_ascii_case(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn permitted_names_cover_loopback_and_the_configured_names_once() {
        let p = permitted(&names(&[
            "localhost",
            "127.0.0.1",
            "::1",
            "*.Chat.Example.com",
            "chat.example.com",
            "10.0.0.1",
            "dev.localhost",
        ]));
        let dns: Vec<_> = p
            .iter()
            .filter_map(|g| match g {
                GeneralSubtree::DnsName(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(dns, ["localhost", "chat.example.com"]);
        let ips: Vec<_> = p
            .iter()
            .filter_map(|g| match g {
                GeneralSubtree::IpAddress(c) => Some(cidr_bytes(c)),
                _ => None,
            })
            .collect();
        assert_eq!(ips.len(), 3, "127/8, ::1, 10.0.0.1: {ips:?}");
        assert!(ips.contains(&vec![10, 0, 0, 1, 255, 255, 255, 255]));
    }

    #[test]
    fn a_ca_fits_the_names_it_was_made_for() {
        let key = KeyPair::generate().unwrap();
        let ca = ca_params(&names(&["a.test"]))
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(ca_fit(&ca.pem(), &names(&["localhost"])), CaFit::Good);
        assert_eq!(ca_fit(&ca.pem(), &names(&["a.test"])), CaFit::Good);
        assert_eq!(ca_fit(&ca.pem(), &names(&["b.test"])), CaFit::Replace);
        let mut unconstrained = ca_params(&[]).unwrap();
        unconstrained.name_constraints = None;
        let old = unconstrained.self_signed(&key).unwrap();
        assert_eq!(ca_fit(&old.pem(), &[]), CaFit::Replace);
        let mut foreign = unconstrained.clone();
        foreign.distinguished_name = rcgen::DistinguishedName::new();
        foreign
            .distinguished_name
            .push(DnType::CommonName, "someone's CA");
        let other = foreign.self_signed(&key).unwrap();
        assert_eq!(ca_fit(&other.pem(), &[]), CaFit::Foreign);
        assert_eq!(ca_fit("not a certificate", &[]), CaFit::Foreign);
    }
}
