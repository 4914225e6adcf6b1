//! Node links: one authenticated TLS 1.3 stream per pair of nodes, carrying
//! request/response calls and one-way messages between them.
//!
//! - `tls`: the ephemeral certificate and the any-certificate verifier.
//! - `hello`: the proof of the cluster secret over the TLS exporter.
//! - `handshake`: TCP, TLS, hellos and verdicts, either side.
//! - `frame`: length-prefixed frames after the hello.
//! - `conn`: one established link (send queue, pending calls, its task).
//! - `node`: the accept loop, the dial loops and the peer table.
//!
//! One link per pair: the node whose id sorts first dials, the other only
//! accepts (and refuses a dial from a node whose id sorts after its own, or
//! one not in its peer list). A new link from a peer replaces the one it
//! already has (the peer redials only when it lost the old one).

mod conn;
mod frame;
mod handshake;
mod hello;
mod node;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_faults;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ring::hmac;
use tokio::net::TcpListener;

use crate::metrics::{ClusterMetrics, LinkFail};

pub use hello::LINK_VERSION;
pub use tls::TlsSetupError;

/// How a node's links behave. `new` gives the defaults; tests shorten them.
#[derive(Clone)]
pub struct LinkConfig {
    /// This node's id, proven in every hello.
    pub node_id: String,
    /// `ClusterKeys::link`.
    pub key: hmac::Key,
    /// Frames queued per link before it is dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Largest frame (kind, id and body) sent or accepted.
    pub max_frame: usize,
    /// TCP connect, TLS and hellos together, either side.
    pub handshake_timeout: Duration,
    /// A ping is sent this often on every link.
    pub keepalive: Duration,
    /// A link on which nothing arrived for this long is dropped (`idle`).
    pub idle_timeout: Duration,
    /// Requests from one peer run at once; more are answered `Busy`.
    pub max_inflight: usize,
    /// Redial backoff: starts here, doubles (with jitter) up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl LinkConfig {
    pub fn new(node_id: impl Into<String>, key: hmac::Key) -> Self {
        Self {
            node_id: node_id.into(),
            key,
            // Raft sends a few RPCs at a time per peer; forwarded writes and
            // typing are small. 1024 frames is seconds of backlog.
            queue_capacity: 1024,
            // Raft's append batches and snapshot chunks must fit.
            max_frame: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(1),
            // Several missed pings, and time for a max-size frame on a slow link.
            idle_timeout: Duration::from_secs(10),
            max_inflight: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Traffic arriving over links.
#[async_trait::async_trait]
pub trait LinkHandler: Send + Sync + 'static {
    /// Answers a call from `from`. Runs in its own task, at most
    /// `max_inflight` at once per link.
    async fn request(&self, from: &str, body: Bytes) -> Bytes;
    /// A one-way message from `from`. Called on the link's reader: it must
    /// not block (hand the message to a bounded queue).
    fn message(&self, from: &str, body: Bytes);
}

/// Why a call or a send failed. None of these close anything but the one
/// link named, and only `QueueFull` does that.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no link to {0}")]
    NoLink(String),
    #[error("the send queue to {0} was full: the link was dropped")]
    QueueFull(String),
    #[error("the link to {0} dropped")]
    Dropped(String),
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("a body of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    #[error("{0} runs too many requests from this node")]
    Busy(String),
    #[error("{0}'s answer exceeds the frame limit")]
    AnswerTooLarge(String),
    #[error("the links are shut down")]
    Shutdown,
}

/// Why a handshake failed. `reason()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("during the hello: {0}")]
    Io(std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("not a link hello")]
    Hello,
    #[error("link version {0}, this node speaks {LINK_VERSION}")]
    Version(u16),
    #[error("the peer did not prove the cluster secret")]
    Proof,
    #[error("not a peer to link with: {0}")]
    Peer(String),
    #[error("the peer refused the link (code {0})")]
    Refused(u8),
    #[error("setup: {0}")]
    Setup(String),
}

impl HandshakeError {
    pub fn reason(&self) -> LinkFail {
        match self {
            HandshakeError::Connect(_) | HandshakeError::Tls(_) | HandshakeError::Setup(_) => {
                LinkFail::Tls
            }
            HandshakeError::Io(_) | HandshakeError::Hello => LinkFail::Hello,
            HandshakeError::Timeout => LinkFail::Timeout,
            HandshakeError::Version(_) => LinkFail::Version,
            HandshakeError::Proof => LinkFail::Proof,
            HandshakeError::Peer(_) | HandshakeError::Refused(_) => LinkFail::Peer,
        }
    }
}

/// This node's links. Cheap to clone; `shutdown` ends every task.
#[derive(Clone)]
pub struct Links {
    node: Arc<node::Node>,
}

impl Links {
    /// Starts accepting on `listener` (already bound by the caller). No
    /// link is dialed until `set_peers`. Call within a tokio runtime (it
    /// spawns the accept loop).
    pub fn start(
        cfg: LinkConfig,
        listener: TcpListener,
        metrics: Arc<ClusterMetrics>,
        handler: Arc<dyn LinkHandler>,
    ) -> Result<Links, TlsSetupError> {
        Ok(Links {
            node: node::Node::start(cfg, listener, metrics, handler)?,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr
    }

    /// The peers this node links with (node id → link address), replacing
    /// the previous list: links to nodes no longer listed are closed; this
    /// node's own id is ignored.
    pub fn set_peers(&self, peers: HashMap<String, SocketAddr>) {
        self.node.set_peers(peers);
    }

    /// A request to `peer`, answered by its handler. Fails at once without
    /// a link, when the link drops while waiting, or after `timeout`.
    pub async fn call(
        &self,
        peer: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, LinkError> {
        self.node.link(peer)?.call(body, timeout).await
    }

    /// A one-way message to `peer`; never waits (a full queue drops the link).
    pub fn send(&self, peer: &str, body: Bytes) -> Result<(), LinkError> {
        self.node.link(peer)?.send(body)
    }

    /// The peers with a link up now, sorted.
    pub fn up_peers(&self) -> Vec<String> {
        self.node.up_peers()
    }

    /// Links established since start (both directions), for the admin view.
    pub fn established_total(&self) -> u64 {
        self.node.established()
    }

    /// Closes every link and the listener, and waits for every task.
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}

/// Dials `addr`, proves `key`, and returns the node id that answered; the
/// connection is then closed. Not counted in this node's metrics.
pub async fn probe(
    addr: SocketAddr,
    this_node_id: &str,
    key: &hmac::Key,
    timeout: Duration,
) -> Result<String, HandshakeError> {
    let connector = tls::connector().map_err(|e| HandshakeError::Setup(e.to_string()))?;
    let me = handshake::Local {
        node_id: this_node_id,
        key,
    };
    let dial = handshake::dial(&me, &connector, addr, hello::Role::Probe, None);
    let (mut stream, id) = tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    Ok(id)
}
