//! The hello: the first bytes inside TLS, in which both ends prove the
//! cluster secret, and the verdict byte that follows it.
//!
//! ```text
//! magic "HBLK" | version: u16 BE | role: u8 | id_len: u8 | node id | proof: 32 bytes
//! ```
//!
//! `proof = HMAC-SHA256(link key, PROOF_LABEL || role || id_len || node id || exporter)`,
//! where `exporter` is 32 bytes of the TLS session's keying-material exporter
//! (RFC 8446 §7.5, label [`EXPORTER_LABEL`]). Both ends of one TLS session
//! compute the same exporter; a man in the middle runs two sessions with two
//! exporters, so a proof relayed from one to the other does not verify. The
//! role is inside the MAC so that a hello reflected back to its sender
//! (dialer's proof presented as the acceptor's) fails.
//!
//! Both ends write their hello at once and then read the other's, so a
//! wrong secret is seen (and counted `proof`) on both sides. Then each
//! writes one verdict byte (`0` = accepted, else a [`Verdict`] code) and
//! reads the other's: a link is up only when both accepted.

use ring::hmac;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::HandshakeError;

pub const LINK_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"HBLK";
const PROOF_LABEL: &[u8] = b"hubbub link hello v1";
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-hubbub-link-v1";
pub const EXPORTER_LEN: usize = 32;
const PROOF_LEN: usize = 32;

/// Which end of a link a hello comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialed to keep a link.
    Dialer = 1,
    Acceptor = 2,
    /// Dialed only to learn the node's id (`probe`); never becomes a link.
    Probe = 3,
}

impl Role {
    fn from_u8(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Dialer),
            2 => Some(Role::Acceptor),
            3 => Some(Role::Probe),
            _ => None,
        }
    }
}

/// One end's answer after checking the other's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept = 0,
    /// The hello did not decode or carried another version.
    BadHello = 1,
    /// The proof did not verify.
    Proof = 2,
    /// Not a peer this node links with (unknown, itself, the wrong id, or
    /// dialing against the one-dialer rule).
    Peer = 3,
}

/// A verified hello from the other end.
#[derive(Debug)]
pub struct PeerHello {
    pub node_id: String,
    pub role: Role,
}

/// What the proof MACs; one function for signing and verifying.
fn proof_input(role: Role, id: &[u8], exporter: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(PROOF_LABEL.len() + 2 + id.len() + exporter.len());
    msg.extend_from_slice(PROOF_LABEL);
    // The id is at most 255 bytes (checked by `encode`, and one length byte
    // on the wire): its length keeps `role || id || exporter` unambiguous.
    msg.extend_from_slice(&[role as u8, id.len() as u8]);
    msg.extend_from_slice(id);
    msg.extend_from_slice(exporter);
    msg
}

/// This end's hello. `None` when the node id is longer than 255 bytes.
pub fn encode(key: &hmac::Key, role: Role, node_id: &str, exporter: &[u8]) -> Option<Vec<u8>> {
    let id_len = u8::try_from(node_id.len()).ok()?;
    let mut out = Vec::with_capacity(8 + node_id.len() + PROOF_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&LINK_VERSION.to_be_bytes());
    out.extend_from_slice(&[role as u8, id_len]);
    out.extend_from_slice(node_id.as_bytes());
    let input = proof_input(role, node_id.as_bytes(), exporter);
    out.extend_from_slice(hmac::sign(key, &input).as_ref());
    Some(out)
}

/// Reads and checks the other end's hello. The caller bounds it in time.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    key: &hmac::Key,
    exporter: &[u8],
) -> Result<PeerHello, HandshakeError> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await.map_err(HandshakeError::Io)?;
    if &head[..4] != MAGIC {
        return Err(HandshakeError::Hello);
    }
    let version = u16::from_be_bytes([head[4], head[5]]);
    if version != LINK_VERSION {
        return Err(HandshakeError::Version(version));
    }
    let role = Role::from_u8(head[6]).ok_or(HandshakeError::Hello)?;
    let mut rest = vec![0u8; head[7] as usize + PROOF_LEN];
    r.read_exact(&mut rest).await.map_err(HandshakeError::Io)?;
    let (id, tag) = rest.split_at(head[7] as usize);
    let node_id = std::str::from_utf8(id).map_err(|_| HandshakeError::Hello)?;
    let msg = proof_input(role, id, exporter);
    // Constant-time comparison over the full tag.
    hmac::verify(key, &msg, tag).map_err(|_| HandshakeError::Proof)?;
    Ok(PeerHello {
        node_id: node_id.to_owned(),
        role,
    })
}

/// Writes this end's verdict, then reads the other's. `Ok` only when both
/// accepted; this end's refusal wins over the other's in the error.
pub async fn exchange_verdicts<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: Verdict,
) -> Result<(), HandshakeError> {
    s.write_all(&[ours as u8])
        .await
        .map_err(HandshakeError::Io)?;
    s.flush().await.map_err(HandshakeError::Io)?;
    if ours != Verdict::Accept {
        return Err(HandshakeError::Peer("refused by this node".into()));
    }
    let theirs = s.read_u8().await.map_err(HandshakeError::Io)?;
    match theirs {
        0 => Ok(()),
        2 => Err(HandshakeError::Proof),
        other => Err(HandshakeError::Refused(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[b; 32])
    }

    async fn check(wire: &[u8], k: &hmac::Key, exp: &[u8]) -> Result<PeerHello, HandshakeError> {
        let mut r = wire;
        read(&mut r, k, exp).await
    }

    #[tokio::test]
    async fn a_hello_verifies_only_with_its_key_exporter_role_and_id() {
        let exp = [9u8; EXPORTER_LEN];
        let wire = encode(&key(1), Role::Dialer, "node-a", &exp).unwrap();
        let ok = check(&wire, &key(1), &exp).await.unwrap();
        assert_eq!((ok.node_id.as_str(), ok.role), ("node-a", Role::Dialer));
        // Another secret, or another TLS session (a relay), fails.
        assert!(matches!(
            check(&wire, &key(2), &exp).await,
            Err(HandshakeError::Proof)
        ));
        assert!(matches!(
            check(&wire, &key(1), &[8u8; EXPORTER_LEN]).await,
            Err(HandshakeError::Proof)
        ));
        // A changed role byte (a reflected hello) or id fails.
        let mut reflected = wire.clone();
        reflected[6] = Role::Acceptor as u8;
        assert!(matches!(
            check(&reflected, &key(1), &exp).await,
            Err(HandshakeError::Proof)
        ));
        let mut renamed = wire.clone();
        renamed[8] = b'm';
        assert!(matches!(
            check(&renamed, &key(1), &exp).await,
            Err(HandshakeError::Proof)
        ));
    }

    #[tokio::test]
    async fn garbage_and_other_versions_are_refused() {
        let exp = [0u8; EXPORTER_LEN];
        let mut wire = encode(&key(1), Role::Dialer, "a", &exp).unwrap();
        wire[5] = 9;
        assert!(matches!(
            check(&wire, &key(1), &exp).await,
            Err(HandshakeError::Version(9))
        ));
        assert!(matches!(
            check(b"GET / HTTP/1.1\r\n\r\n", &key(1), &exp).await,
            Err(HandshakeError::Hello)
        ));
        assert!(matches!(
            check(b"HBL", &key(1), &exp).await,
            Err(HandshakeError::Io(_))
        ));
        assert!(encode(&key(1), Role::Dialer, &"x".repeat(256), &exp).is_none());
    }
}
