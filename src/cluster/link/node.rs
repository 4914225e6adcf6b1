//! The node's side of its links: the peer table, the accept loop, one dial
//! loop per peer this node dials, and the life of each link in the table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{self, LinkCtx, LinkShared};
use super::handshake::{self, Local};
use super::hello::{PeerHello, Role, Verdict};
use super::{HandshakeError, LinkConfig, LinkError, LinkHandler, TlsSetupError, tls};
use crate::metrics::{ClusterMetrics, LinkDrop, LinkFail};

/// Handshakes in progress at once on the listener. Past it a new connection
/// is closed unanswered (counted `busy`): a flood of idle connections costs
/// at most this many tasks, each ended by the handshake timeout.
const MAX_HANDSHAKES: usize = 64;

struct Peer {
    addr: SocketAddr,
    /// Which dial loop owns this entry: a loop whose epoch is gone stops.
    epoch: u64,
    /// Cancels this peer's dial loop and link (a child of the node's token).
    cancel: CancellationToken,
    link: Option<Arc<LinkShared>>,
}

pub struct Node {
    pub local_addr: SocketAddr,
    cfg: LinkConfig,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    ctx: LinkCtx,
    peers: Mutex<HashMap<String, Peer>>,
    shutdown: CancellationToken,
    handshakes: Arc<Semaphore>,
    established: AtomicU64,
    next_id: AtomicU64,
}

impl Node {
    pub fn start(
        mut cfg: LinkConfig,
        listener: TcpListener,
        metrics: Arc<ClusterMetrics>,
        handler: Arc<dyn LinkHandler>,
    ) -> Result<Arc<Node>, TlsSetupError> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| TlsSetupError::new(format!("listener address: {e}")))?;
        // A frame's length is a u32 on the wire.
        cfg.max_frame = cfg.max_frame.min(u32::MAX as usize);
        // `tokio::time::interval` panics on a zero period.
        cfg.keepalive = cfg.keepalive.max(Duration::from_millis(10));
        let tracker = TaskTracker::new();
        let node = Arc::new(Node {
            local_addr,
            acceptor: tls::acceptor()?,
            connector: tls::connector()?,
            ctx: LinkCtx {
                handler,
                metrics,
                tracker: tracker.clone(),
                keepalive: cfg.keepalive,
                idle_timeout: cfg.idle_timeout,
                max_inflight: cfg.max_inflight,
            },
            cfg,
            peers: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            established: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        tracker.spawn(node.clone().accept_loop(listener));
        Ok(node)
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<String, Peer>> {
        // No code panics while holding it; a poisoned table is still usable.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one-dialer rule: the node whose id sorts first dials.
    fn dials(&self, peer: &str) -> bool {
        self.cfg.node_id.as_str() < peer
    }

    pub fn set_peers(self: &Arc<Self>, wanted: HashMap<String, SocketAddr>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut peers = self.peers();
        peers.retain(|id, p| {
            let keep = wanted
                .get(id)
                .is_some_and(|a| *a == p.addr || !self.dials(id));
            if !keep {
                tracing::info!(peer = %id, "node link peer removed");
                if let Some(l) = &p.link {
                    l.close(LinkDrop::Removed);
                }
                p.cancel.cancel();
            }
            keep
        });
        for (id, addr) in wanted {
            if id == self.cfg.node_id {
                continue;
            }
            if let Some(p) = peers.get_mut(&id) {
                // Only an acceptor's entry stays with a new address (it
                // never dials it); a dialer's was replaced above.
                p.addr = addr;
                continue;
            }
            let epoch = self.next_id.fetch_add(1, Ordering::Relaxed);
            let cancel = self.shutdown.child_token();
            if self.dials(&id) {
                let run = self
                    .clone()
                    .dial_loop(id.clone(), addr, epoch, cancel.clone());
                self.ctx.tracker.spawn(run);
            }
            let link = None;
            peers.insert(
                id,
                Peer {
                    addr,
                    epoch,
                    cancel,
                    link,
                },
            );
        }
    }

    pub fn link(&self, peer: &str) -> Result<Arc<LinkShared>, LinkError> {
        if self.shutdown.is_cancelled() {
            return Err(LinkError::Shutdown);
        }
        self.peers()
            .get(peer)
            .and_then(|p| p.link.clone())
            .ok_or_else(|| LinkError::NoLink(peer.to_owned()))
    }

    pub fn up_peers(&self) -> Vec<String> {
        let mut up: Vec<String> = self
            .peers()
            .iter()
            .filter(|(_, p)| p.link.as_ref().is_some_and(|l| !l.cancel.is_cancelled()))
            .map(|(id, _)| id.clone())
            .collect();
        up.sort();
        up
    }

    pub fn established(&self) -> u64 {
        self.established.load(Ordering::Relaxed)
    }

    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.peers().clear();
        self.ctx.tracker.close();
        self.ctx.tracker.wait().await;
    }

    fn me(&self) -> Local<'_> {
        Local {
            node_id: &self.cfg.node_id,
            key: &self.cfg.key,
        }
    }

    fn failed(&self, e: &HandshakeError, peer: &str) {
        let reason = e.reason();
        self.ctx.metrics.link_handshake_failed(reason).inc();
        if matches!(
            e,
            HandshakeError::Connect(_) | HandshakeError::Peer(_) | HandshakeError::Refused(_)
        ) {
            // A peer that is down, or that has not heard of this node by
            // gossip yet (while a cluster forms): expected, retried with backoff.
            tracing::debug!(peer, reason = reason.label(), error = %e, "node link dial failed");
        } else {
            tracing::warn!(peer, reason = reason.label(), error = %e, "node link handshake failed");
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "node link accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                self.ctx.metrics.link_handshake_failed(LinkFail::Busy).inc();
                tracing::warn!(peer = %from, reason = "busy", "node link handshake refused");
                continue;
            };
            let node = self.clone();
            self.ctx.tracker.spawn(async move {
                let accepted = node.inbound(tcp, from).await;
                drop(permit);
                if let Some((stream, peer)) = accepted {
                    node.run_link(stream, &peer, None).await;
                }
            });
        }
    }

    /// One inbound handshake; the stream and the peer's id when it is a link.
    async fn inbound(
        &self,
        tcp: TcpStream,
        from: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, String)> {
        let me = self.me();
        let decide = |p: &PeerHello| match p.role {
            Role::Probe => Verdict::Accept,
            _ if self.may_accept(&p.node_id) => Verdict::Accept,
            _ => Verdict::Peer,
        };
        let hs = handshake::accept(&me, &self.acceptor, tcp, decide);
        let res = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            r = tokio::time::timeout(self.cfg.handshake_timeout, hs) => r,
        };
        match res.unwrap_or(Err(HandshakeError::Timeout)) {
            Ok((_, hello)) if hello.role == Role::Probe => {
                tracing::debug!(peer = %hello.node_id, "node link probed");
                None
            }
            Ok((stream, hello)) => Some((stream, hello.node_id)),
            Err(e) => {
                self.failed(&e, &from.to_string());
                None
            }
        }
    }

    /// Whether a proven node dialing this one may have a link.
    fn may_accept(&self, peer: &str) -> bool {
        peer != self.cfg.node_id && !self.dials(peer) && self.peers().contains_key(peer)
    }

    async fn dial_loop(
        self: Arc<Self>,
        peer: String,
        addr: SocketAddr,
        epoch: u64,
        cancel: CancellationToken,
    ) {
        let (min, max) = (
            self.cfg.backoff_min,
            self.cfg.backoff_max.max(self.cfg.backoff_min),
        );
        let mut backoff = min;
        loop {
            let me = self.me();
            let hs = handshake::dial(&me, &self.connector, addr, Role::Dialer, Some(&peer));
            let res = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(self.cfg.handshake_timeout, hs) => r,
            };
            match res.unwrap_or(Err(HandshakeError::Timeout)) {
                Ok((stream, _)) => {
                    let up = Instant::now();
                    self.run_link(stream, &peer, Some(epoch)).await;
                    // A link that lived a while was healthy: redial promptly.
                    if up.elapsed() >= max {
                        backoff = min;
                    }
                }
                Err(e) => self.failed(&e, &peer),
            }
            let delay = jittered(backoff);
            backoff = backoff.saturating_mul(2).min(max);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Puts a new link in the table (replacing an older one to the same
    /// peer). `None` when the peer left the table (or, for a dialer, its
    /// entry now belongs to another dial loop) meanwhile.
    fn register(
        &self,
        peer: &str,
        epoch: Option<u64>,
    ) -> Option<(Arc<LinkShared>, mpsc::Receiver<Bytes>)> {
        let mut peers = self.peers();
        let p = peers.get_mut(peer)?;
        if epoch.is_some_and(|e| e != p.epoch) {
            return None;
        }
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (shared, out_rx) = LinkShared::new(
            peer.to_owned(),
            conn_id,
            self.cfg.queue_capacity,
            self.cfg.max_frame,
            p.cancel.child_token(),
        );
        if let Some(old) = p.link.replace(shared.clone()) {
            old.close(LinkDrop::Replaced);
        }
        Some((shared, out_rx))
    }

    async fn run_link(&self, stream: TlsStream<TcpStream>, peer: &str, epoch: Option<u64>) {
        let Some((shared, out_rx)) = self.register(peer, epoch) else {
            tracing::debug!(peer, "node link no longer wanted");
            return;
        };
        self.established.fetch_add(1, Ordering::Relaxed);
        self.ctx.metrics.links_up.inc();
        tracing::info!(peer, conn = shared.conn_id, "node link up");
        let why = conn::run(stream, shared.clone(), out_rx, &self.ctx).await;
        {
            let mut peers = self.peers();
            if let Some(p) = peers.get_mut(peer)
                && p.link.as_ref().is_some_and(|l| l.conn_id == shared.conn_id)
            {
                p.link = None;
            }
        }
        self.ctx.metrics.links_up.dec();
        match why {
            Some(reason) => {
                self.ctx.metrics.link_dropped(reason).inc();
                tracing::info!(
                    peer,
                    conn = shared.conn_id,
                    reason = reason.label(),
                    "node link dropped"
                );
            }
            None => tracing::debug!(peer, conn = shared.conn_id, "node link closed"),
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1): peers that lost each other at
/// the same moment do not redial in lockstep.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    // On failure the bytes stay zero: no jitter, still a valid delay.
    let _ = SystemRandom::new().fill(&mut b);
    let r = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    d.mul_f64(0.5 + 0.5 * r)
}
