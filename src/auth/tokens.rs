//! Access tokens (JWT HS256) and refresh tokens (random, stored by hash).

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::InternalError;
use crate::files;
use crate::protocol::Username;

const ISSUER: &str = "hubbub";
const AUDIENCE: &str = "hubbub";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    /// The username, so a connection needs no lookup to know who it is.
    name: String,
    /// The refresh-token family this token was issued with: revoking the
    /// family (logout, reuse) closes the sockets opened with it.
    #[serde(default)]
    fam: Option<Uuid>,
    iss: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
}

/// Who a valid access token speaks for.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user_id: Uuid,
    pub username: Username,
    /// Expiry, seconds since the epoch: an open socket closes with 1008 then.
    pub exp: u64,
    pub family: Option<Uuid>,
}

pub struct Jwt {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &[u8]) -> Self {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.validate_nbf = true;
        // Clock skew between our own nodes only; tokens are short-lived.
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Jwt {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation: v,
        }
    }

    pub fn issue(
        &self,
        user_id: Uuid,
        username: &Username,
        family: Uuid,
        now_s: u64,
        ttl_s: u64,
    ) -> Result<String, InternalError> {
        let c = Claims {
            sub: user_id.to_string(),
            name: username.to_string(),
            fam: Some(family),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now_s + ttl_s,
            nbf: now_s,
            iat: now_s,
        };
        Ok(encode(&Header::new(Algorithm::HS256), &c, &self.enc)?)
    }

    /// `None` for anything but a valid, current token of ours.
    pub fn verify(&self, token: &str) -> Option<Identity> {
        let c = decode::<Claims>(token, &self.dec, &self.validation)
            .ok()?
            .claims;
        Some(Identity {
            user_id: Uuid::parse_str(&c.sub).ok()?,
            username: Username::parse(&c.name)?,
            exp: c.exp,
            family: c.fam,
        })
    }
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], InternalError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| InternalError::Password("system random failed".into()))?;
    Ok(b)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new refresh token: the string for the cookie and the hash to store.
pub fn new_refresh() -> Result<(String, Vec<u8>), InternalError> {
    let token = hex(&random_bytes::<32>()?);
    let hash = refresh_hash(&token);
    Ok((token, hash))
}

pub fn refresh_hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Loads the JWT secret from `path`, creating it (mode 0600) on first start.
///
/// Only a missing file is replaced: a file that cannot be read or is not UTF-8
/// stops the start, because a new secret would silently log everyone out (and
/// hide whatever damaged the old one). A secret others may read is used, with
/// a warning: anyone who reads it can mint tokens for any user.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    match std::fs::read(path) {
        Ok(bytes) => {
            warn_if_shared(path);
            let s = String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "JWT secret in {} is not valid UTF-8; refusing to start \
                     (fix it, or delete it to generate a new one, which signs everyone out)",
                    path.display()
                )
            })?;
            let s = s.trim();
            anyhow::ensure!(
                s.len() >= 32,
                "JWT secret in {} is too short",
                path.display()
            );
            Ok(s.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex(&random_bytes::<32>()?);
            files::write_private(path, secret.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Warns when group or others may read the secret file (it is created 0600;
/// a copy or a restore may have widened it).
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "the JWT secret is readable by other users; anyone who reads it can sign in as anyone (chmod 600 it)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies() {
        let jwt = Jwt::new(b"0123456789abcdef0123456789abcdef");
        let now = crate::protocol::time::now_ms() / 1000;
        let alice = Username::parse("alice").unwrap();
        let (id, fam) = (Uuid::new_v4(), Uuid::new_v4());
        let t = jwt.issue(id, &alice, fam, now, 60).unwrap();
        let who = jwt.verify(&t).unwrap();
        assert_eq!(
            (who.user_id, who.username.as_str(), who.exp),
            (id, "alice", now + 60)
        );
        // Another key, an expired token, a future token, a tampered one.
        assert!(
            Jwt::new(b"another secret another secret!!!")
                .verify(&t)
                .is_none()
        );
        assert!(
            jwt.verify(&jwt.issue(id, &alice, fam, now - 3600, 60).unwrap())
                .is_none()
        );
        assert!(
            jwt.verify(&jwt.issue(id, &alice, fam, now + 3600, 60).unwrap())
                .is_none()
        );
        let mut bad = t.clone();
        bad.insert(bad.len() / 2, 'x');
        assert!(jwt.verify(&bad).is_none());
    }

    #[test]
    fn secret_file_not_utf8_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt_secret");
        let bad: Vec<u8> = [0xff, 0xfe].iter().copied().cycle().take(64).collect();
        std::fs::write(&path, &bad).unwrap();
        let e = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bad);
        // A missing file is created once, then read back unchanged.
        std::fs::remove_file(&path).unwrap();
        let a = load_or_create_secret(&path).unwrap();
        assert_eq!(load_or_create_secret(&path).unwrap(), a);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh().unwrap();
        let (b, _) = new_refresh().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(refresh_hash(&a), ha);
    }
}
