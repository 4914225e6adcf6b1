//! The cluster secret and the keys derived from it.
//!
//! Every node is given the same secret (`--cluster-secret[-file]`, at least
//! 32 bytes). It is never used directly: HKDF-SHA256 derives one key per use
//! with distinct labels, so a key that leaks from one use (say a gossip MAC
//! key recovered from a core dump of a tool) does not open the other.

use ring::{hkdf, hmac};

/// The shortest secret a node accepts.
pub const MIN_SECRET_LEN: usize = 32;

/// Salt for the extraction step: fixed, it only separates hubbub's keys from
/// other uses of the same secret.
const SALT: &[u8] = b"hubbub cluster v1";
const GOSSIP_LABEL: &[u8] = b"hubbub gossip mac";
const LINK_LABEL: &[u8] = b"hubbub link proof";
const JWT_LABEL: &[u8] = b"hubbub jwt signing";

/// The secret was shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret must be at least {MIN_SECRET_LEN} bytes (got {0})")]
pub struct ShortSecret(pub usize);

/// The keys of one cluster: equal on every node given the same secret.
#[derive(Clone)]
pub struct ClusterKeys {
    /// MACs every gossip datagram.
    pub gossip: hmac::Key,
    /// Proves the secret on both ends of a node link (over the TLS exporter).
    pub link: hmac::Key,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKeys(..)")
    }
}

impl ClusterKeys {
    pub fn derive(secret: &[u8]) -> Result<Self, ShortSecret> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(ShortSecret(secret.len()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        Ok(Self {
            gossip: expand(&prk, GOSSIP_LABEL),
            link: expand(&prk, LINK_LABEL),
        })
    }
}

/// The JWT signing secret of a cluster: one per cluster secret, so a token
/// issued by any node is valid on every node, from the first start on.
pub fn jwt_secret(secret: &[u8]) -> Result<[u8; 32], ShortSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(ShortSecret(secret.len()));
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
    let mut out = [0u8; 32];
    let info = [JWT_LABEL];
    // 32 bytes is a valid HKDF-SHA256 output length (at most 255 × 32).
    #[allow(clippy::expect_used)]
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF output length");
    Ok(out)
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8]) -> hmac::Key {
    let info = [label];
    // `expand` fails only when the requested length exceeds 255 × the hash
    // length; an HMAC-SHA256 key is one hash length.
    #[allow(clippy::expect_used)]
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .expect("one hash length is a valid HKDF output length");
    hmac::Key::from(okm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &hmac::Key) -> Vec<u8> {
        hmac::sign(k, b"x").as_ref().to_vec()
    }

    #[test]
    fn same_secret_same_keys_and_uses_differ() {
        let s = [7u8; 32];
        let (a, b) = (
            ClusterKeys::derive(&s).unwrap(),
            ClusterKeys::derive(&s).unwrap(),
        );
        assert_eq!(tag(&a.gossip), tag(&b.gossip));
        assert_eq!(tag(&a.link), tag(&b.link));
        assert_ne!(tag(&a.gossip), tag(&a.link));
        let other = ClusterKeys::derive(&[8u8; 32]).unwrap();
        assert_ne!(tag(&a.gossip), tag(&other.gossip));
    }

    #[test]
    fn the_jwt_secret_is_one_per_cluster_secret() {
        let a = jwt_secret(&[7u8; 32]).unwrap();
        assert_eq!(a, jwt_secret(&[7u8; 32]).unwrap());
        assert_ne!(a, jwt_secret(&[8u8; 32]).unwrap());
        assert!(jwt_secret(&[7u8; 31]).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            ClusterKeys::derive(&[1u8; 31]),
            Err(ShortSecret(31))
        ));
    }
}
