//! chitchat's gossip over UDP, authenticated: every datagram carries a
//! timestamp and an HMAC-SHA256 tag under the cluster's gossip key, checked
//! before chitchat sees a byte. A node with another secret, a forger, or a
//! replay of a recorded datagram can never join or change anything.
//!
//! One datagram (version 1):
//!
//! ```text
//! 0        u8   version (1)
//! 1..9     u64  sender's wall clock, ms since the epoch (big-endian)
//! 9..13    u32  message number (per socket, wrapping)
//! 13       u8   fragment index
//! 14       u8   fragment count (1..=MAX_FRAGMENTS)
//! 15..n-32      this fragment of chitchat's encoded message
//! n-32..n       HMAC-SHA256(gossip key, bytes 0..n-32)
//! ```
//!
//! chitchat fills a message up to the whole UDP budget (65 507 bytes) when it
//! has that much to send, so the header and tag do not always fit beside it:
//! such a message goes out as two fragments, each authenticated on its own,
//! and is put back together on arrival (a lost fragment loses the message, as
//! a lost datagram would; gossip repeats itself every round).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use ring::hmac;

use crate::metrics::{ClusterMetrics, GossipReject};

const VERSION: u8 = 1;
const HEADER: usize = 15;
const TAG: usize = 32;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
const MAX_FRAGMENT_PAYLOAD: usize = MAX_DATAGRAM - HEADER - TAG;
const MAX_FRAGMENTS: u8 = 4;
/// Datagrams stamped further than this from the receiver's clock are dropped;
/// recently seen tags are remembered this long to drop replays inside it.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Tags remembered against replays. Gossip sends a few datagrams per peer and
/// round (200 ms): this covers 30 s of a cluster of dozens of nodes. Beyond
/// it the oldest are forgotten first.
const REPLAY_CAPACITY: usize = 16_384;
/// Messages being reassembled at once, and how long a part waits for the rest.
const PARTIAL_CAPACITY: usize = 64;
const PARTIAL_TTL: Duration = Duration::from_secs(2);

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seals one encoded message into datagrams (one, or a few fragments).
pub fn seal(key: &hmac::Key, now_ms: u64, msg_no: u32, message: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = if message.is_empty() {
        vec![&[][..]]
    } else {
        message.chunks(MAX_FRAGMENT_PAYLOAD).collect()
    };
    let count = chunks.len() as u8;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut d = Vec::with_capacity(HEADER + chunk.len() + TAG);
            d.push(VERSION);
            d.extend_from_slice(&now_ms.to_be_bytes());
            d.extend_from_slice(&msg_no.to_be_bytes());
            d.push(i as u8);
            d.push(count);
            d.extend_from_slice(chunk);
            let tag = hmac::sign(key, &d);
            d.extend_from_slice(tag.as_ref());
            d
        })
        .collect()
}

struct Partial {
    started: Instant,
    parts: Vec<Option<Vec<u8>>>,
}

/// The receiving side's checks and state: replay memory and reassembly.
pub struct Opener {
    key: hmac::Key,
    seen: HashSet<[u8; 16]>,
    seen_order: VecDeque<(u64, [u8; 16])>,
    partial: HashMap<(SocketAddr, u32), Partial>,
}

impl Opener {
    pub fn new(key: hmac::Key) -> Self {
        Self {
            key,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            partial: HashMap::new(),
        }
    }

    /// Checks one datagram. `Ok(Some(message))` when it completes a message,
    /// `Ok(None)` when it is a fragment waiting for the rest.
    pub fn open(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, GossipReject> {
        if datagram.len() < HEADER + TAG || datagram.len() > MAX_DATAGRAM {
            return Err(GossipReject::Length);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG);
        hmac::verify(&self.key, signed, tag).map_err(|_| GossipReject::Mac)?;
        // Authentic from here on: only a node with the secret wrote it.
        if signed[0] != VERSION {
            return Err(GossipReject::Decode);
        }
        let ts = u64::from_be_bytes(header_bytes(signed, 1));
        if ts.abs_diff(now_ms) > MAX_SKEW.as_millis() as u64 {
            return Err(GossipReject::Stale);
        }
        let mut tag16 = [0u8; 16];
        tag16.copy_from_slice(&tag[..16]);
        self.forget_before(now_ms.saturating_sub(MAX_SKEW.as_millis() as u64));
        if !self.seen.insert(tag16) {
            return Err(GossipReject::Replay);
        }
        self.seen_order.push_back((ts.max(now_ms), tag16));
        if self.seen_order.len() > REPLAY_CAPACITY
            && let Some((_, old)) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        let msg_no = u32::from_be_bytes(header_bytes(signed, 9));
        let (index, count) = (signed[13], signed[14]);
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            return Err(GossipReject::Length);
        }
        let payload = &signed[HEADER..];
        if count == 1 {
            return Ok(Some(payload.to_vec()));
        }
        Ok(self.reassemble(from, msg_no, index, count, payload))
    }

    fn forget_before(&mut self, cutoff_ms: u64) {
        while let Some(&(t, tag)) = self.seen_order.front() {
            if t >= cutoff_ms {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&tag);
        }
    }

    fn reassemble(
        &mut self,
        from: SocketAddr,
        msg_no: u32,
        index: u8,
        count: u8,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.partial
            .retain(|_, p| now.duration_since(p.started) < PARTIAL_TTL);
        if self.partial.len() >= PARTIAL_CAPACITY && !self.partial.contains_key(&(from, msg_no)) {
            // Full of fragments whose siblings never came: start over.
            self.partial.clear();
        }
        let entry = self
            .partial
            .entry((from, msg_no))
            .or_insert_with(|| Partial {
                started: now,
                parts: vec![None; count as usize],
            });
        if entry.parts.len() != count as usize {
            self.partial.remove(&(from, msg_no));
            return None;
        }
        entry.parts[index as usize] = Some(payload.to_vec());
        if entry.parts.iter().any(Option::is_none) {
            return None;
        }
        let parts = self.partial.remove(&(from, msg_no))?.parts;
        Some(parts.into_iter().flatten().flatten().collect())
    }
}

/// Bytes `at..at + N` of a slice already checked to be at least `HEADER` long.
fn header_bytes<const N: usize>(signed: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&signed[at..at + N]);
    b
}

/// chitchat's `Transport`: opens the socket bound beforehand (the cluster
/// port is chosen together with the TCP listener of the node links).
pub struct AuthUdpTransport {
    socket: Mutex<Option<tokio::net::UdpSocket>>,
    key: hmac::Key,
    metrics: Arc<ClusterMetrics>,
}

impl AuthUdpTransport {
    pub fn new(
        socket: tokio::net::UdpSocket,
        key: hmac::Key,
        metrics: Arc<ClusterMetrics>,
    ) -> Self {
        Self {
            socket: Mutex::new(Some(socket)),
            key,
            metrics,
        }
    }
}

#[async_trait]
impl Transport for AuthUdpTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow::anyhow!("gossip socket lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip socket was opened already"))?;
        Ok(Box::new(AuthUdpSocket {
            socket,
            key: self.key.clone(),
            opener: Opener::new(self.key.clone()),
            buf: vec![0u8; MAX_DATAGRAM],
            msg_no: rand_u32(),
            metrics: self.metrics.clone(),
        }))
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // A failing system RNG only makes message numbers start at 0.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_be_bytes(b)
}

struct AuthUdpSocket {
    socket: tokio::net::UdpSocket,
    key: hmac::Key,
    opener: Opener,
    buf: Vec<u8>,
    msg_no: u32,
    metrics: Arc<ClusterMetrics>,
}

#[async_trait]
impl Socket for AuthUdpSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let mut encoded = Vec::with_capacity(msg.serialized_len());
        msg.serialize(&mut encoded);
        self.msg_no = self.msg_no.wrapping_add(1);
        for d in seal(&self.key, wall_ms(), self.msg_no, &encoded) {
            // A send error is this datagram's loss, not a broken transport
            // (chitchat stops gossiping for good on an error): gossip repeats.
            match self.socket.send_to(&d, to).await {
                Ok(n) => {
                    self.metrics.gossip_datagrams_sent.inc();
                    self.metrics.gossip_bytes_sent.inc_by(n as u64);
                }
                Err(e) => tracing::debug!(peer = %to, error = %e, "gossip send failed"),
            }
        }
        Ok(())
    }

    /// Cancel-safe (chitchat polls it in a `select!`): the only await is
    /// `recv_from`; everything after it runs without yielding.
    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                // ICMP errors of earlier sends (a peer that is down) show up
                // here on Linux: not this socket's failure.
                Err(e) => {
                    tracing::debug!(error = %e, "gossip recv error");
                    continue;
                }
            };
            self.metrics.gossip_datagrams_received.inc();
            self.metrics.gossip_bytes_received.inc_by(len as u64);
            let message = match self.opener.open(from, &self.buf[..len], wall_ms()) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(why) => {
                    self.metrics.gossip_rejected(why).inc();
                    tracing::debug!(peer = %from, reason = why.label(), "gossip datagram rejected");
                    continue;
                }
            };
            match ChitchatMessage::deserialize(&mut &message[..]) {
                Ok(m) => return Ok((from, m)),
                Err(e) => {
                    self.metrics.gossip_rejected(GossipReject::Decode).inc();
                    tracing::debug!(peer = %from, error = %e, "authentic gossip that does not decode");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[b; 32])
    }

    const FROM: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9,
    ));
    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_sealed_message_opens_once() {
        let mut o = Opener::new(key(1));
        let d = seal(&key(1), NOW, 7, b"hello");
        assert_eq!(d.len(), 1);
        assert_eq!(o.open(FROM, &d[0], NOW + 5), Ok(Some(b"hello".to_vec())));
        assert_eq!(o.open(FROM, &d[0], NOW + 6), Err(GossipReject::Replay));
    }

    #[test]
    fn wrong_key_bit_flips_and_lengths_are_rejected() {
        let mut o = Opener::new(key(1));
        let d = seal(&key(2), NOW, 1, b"hello").remove(0);
        assert_eq!(o.open(FROM, &d, NOW), Err(GossipReject::Mac));
        let mut d = seal(&key(1), NOW, 1, b"hello").remove(0);
        d[HEADER] ^= 1;
        assert_eq!(o.open(FROM, &d, NOW), Err(GossipReject::Mac));
        assert_eq!(o.open(FROM, &[0u8; 20], NOW), Err(GossipReject::Length));
        assert_eq!(
            o.open(FROM, &vec![0u8; MAX_DATAGRAM + 1], NOW),
            Err(GossipReject::Length)
        );
    }

    #[test]
    fn stamps_outside_the_window_are_stale() {
        let mut o = Opener::new(key(1));
        let skew = MAX_SKEW.as_millis() as u64;
        let old = seal(&key(1), NOW - skew - 1, 1, b"x").remove(0);
        assert_eq!(o.open(FROM, &old, NOW), Err(GossipReject::Stale));
        let future = seal(&key(1), NOW + skew + 1, 2, b"x").remove(0);
        assert_eq!(o.open(FROM, &future, NOW), Err(GossipReject::Stale));
        let edge = seal(&key(1), NOW - skew, 3, b"x").remove(0);
        assert_eq!(o.open(FROM, &edge, NOW), Ok(Some(b"x".to_vec())));
    }

    #[test]
    fn a_full_budget_message_travels_in_two_fragments_in_any_order() {
        let msg: Vec<u8> = (0..MAX_DATAGRAM).map(|i| i as u8).collect();
        let d = seal(&key(1), NOW, 9, &msg);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|f| f.len() <= MAX_DATAGRAM));
        let mut o = Opener::new(key(1));
        assert_eq!(o.open(FROM, &d[1], NOW), Ok(None));
        assert_eq!(o.open(FROM, &d[0], NOW), Ok(Some(msg)));
    }

    #[test]
    fn replay_memory_forgets_what_the_window_covers() {
        let mut o = Opener::new(key(1));
        let skew = MAX_SKEW.as_millis() as u64;
        let d = seal(&key(1), NOW, 1, b"x").remove(0);
        assert!(o.open(FROM, &d, NOW).is_ok());
        // Later it is stale anyway, so forgetting its tag opens nothing.
        assert!(
            o.open(
                FROM,
                &seal(&key(1), NOW + skew + 5, 2, b"y")[0],
                NOW + skew + 5
            )
            .is_ok()
        );
        assert_eq!(o.seen.len(), 1);
        assert_eq!(o.open(FROM, &d, NOW + skew + 5), Err(GossipReject::Stale));
    }

    #[test]
    fn bad_fragment_headers_are_rejected() {
        let mut d = seal(&key(1), NOW, 1, b"x").remove(0);
        d[13] = 3; // index 3 of 1
        let n = d.len() - TAG;
        let tag = hmac::sign(&key(1), &d[..n]);
        d[n..].copy_from_slice(tag.as_ref());
        assert_eq!(
            Opener::new(key(1)).open(FROM, &d, NOW),
            Err(GossipReject::Length)
        );
    }
}
