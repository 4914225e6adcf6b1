//! The cluster: only with `--cluster-listen`. Without it no part of this
//! module runs (no UDP socket, no links, no log) and a node is alone.
//!
//! - `keys`: the cluster secret and the keys derived from it (HKDF).
//! - `gossip`: membership and failure detection (chitchat) behind an
//!   authenticating transport; each node's URL, state and generation.
//! - `generation`: this node's incarnation number, growing on every start.
//! - `cli`: `hubbub cluster remove NODE`, a request to a running node.
//! - `link`: one authenticated TLS stream per pair of nodes.
//! - `live`: what sessions tell other nodes over the links (a session
//!   registered: anti-zombie kicks; typing), and typing stopped when a
//!   node dies.
//! - `ring`: where each user is homed (a consistent-hash ring over the
//!   serving members).
//! - `raft`: the replicated log (openraft): its log and vote in sled trees
//!   of the store's database.

pub mod cli;
pub mod generation;
pub mod gossip;
pub mod keys;
pub mod link;
pub mod live;
pub mod raft;
pub mod ring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::ClusterMetrics;
use crate::storage::{AccountProposal, StorageCmd, StorageEvent, Store};

use gossip::{Gossip, GossipConfig, NodeState, View};
use keys::ClusterKeys;
use link::{LinkConfig, Links};
use raft::network::{Handler, Shared};
use raft::node::{LogConfig, LogNode, LogStatus, ProposerInputs};

/// A dead node's gossip state is kept this long, then forgotten.
const DEAD_GRACE: Duration = Duration::from_secs(20);
/// At shutdown, `draining` is gossiped this long before anything closes, so
/// peers (and, through them, clients) hear it from this node itself.
const DRAIN_NOTICE: Duration = Duration::from_millis(500);
/// How long a leader that shuts down waits for a follower to take over.
const HAND_OVER: Duration = Duration::from_secs(2);
/// A serving node without a majority for this long stops serving: sends
/// are refused, `/readyz` is 503, sessions are closed with 1001 (clients
/// reconnect to another node) and upgrades are refused.
const MINORITY_AFTER: Duration = Duration::from_secs(3);
/// How long a membership change may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is re-evaluated.
const READINESS_EVERY: Duration = Duration::from_millis(100);
/// Attempts at finding a port free for both UDP and TCP when the port is 0.
const BIND_TRIES: usize = 16;

pub struct ClusterConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub secret: Vec<u8>,
    /// This node's public base URL.
    pub url: String,
    pub bootstrap_expect: usize,
    pub data_dir: PathBuf,
    /// `--snapshot-every`: log entries between snapshots.
    pub snapshot_every: u64,
    /// `--ring-exclude` (tests): a node left off this node's ring.
    pub ring_exclude: Option<String>,
}

/// A running cluster membership. `view()` is what the rest of the server reads.
pub struct Cluster {
    gossip: Gossip,
    view: ClusterView,
    /// The bound cluster address (its port is the chosen one with port 0).
    pub addr: SocketAddr,
    readiness: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    links: Links,
    log: LogNode,
}

/// What HTTP and the server read about the cluster: cheap to clone.
#[derive(Clone)]
pub struct ClusterView {
    pub node: Arc<str>,
    pub generation: u64,
    members: watch::Receiver<Arc<View>>,
    ready: watch::Receiver<bool>,
    raft: openraft::Raft<raft::types::TypeConfig>,
    links: Links,
    shared: Arc<Shared>,
    metrics: Arc<ClusterMetrics>,
    ring: watch::Receiver<Arc<ring::Ring>>,
}

/// One member as `/api/admin/cluster` shows it.
#[derive(Serialize)]
pub struct MemberInfo {
    pub node: String,
    pub url: String,
    pub addr: String,
    pub generation: u64,
    pub live: bool,
    pub state: Option<NodeState>,
    pub proto: String,
    /// Milliseconds since its heartbeat last moved (0 for this node).
    pub last_heard_ms: Option<u64>,
    pub this_node: bool,
}

impl ClusterView {
    /// True while this node serves: the log has a leader with a majority,
    /// and this node has applied what it holds.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Changes of [`ClusterView::is_ready`].
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Every member this node knows, the dead ones included.
    pub fn members(&self) -> Vec<MemberInfo> {
        let view = self.members.borrow().clone();
        let now = Instant::now();
        view.members
            .values()
            .map(|m| MemberInfo {
                node: m.node.clone(),
                url: m.url.clone(),
                addr: m.addr.to_string(),
                generation: m.generation,
                live: m.live,
                state: m.state,
                proto: m.proto.clone(),
                last_heard_ms: if m.this_node {
                    Some(0)
                } else {
                    view.heard
                        .get(&m.node)
                        .map(|t| now.duration_since(*t).as_millis() as u64)
                },
                this_node: m.this_node,
            })
            .collect()
    }

    /// True when `origin` is one a member advertised (see `View::origins`).
    pub fn is_peer_origin(&self, origin: &str) -> bool {
        self.members
            .borrow()
            .origins
            .contains(&origin.to_ascii_lowercase())
    }

    /// Waits (at most `limit`) until this node has applied what the leader
    /// had committed: called before a session joins. `false`: it could not
    /// (no leader, or not within `limit`).
    pub async fn catch_up(&self, limit: Duration) -> bool {
        raft::node::catch_up(&self.raft, &self.shared, &self.links, limit).await
    }

    /// Removes `node` from the log's membership (at the leader). For a node
    /// that is gone for good: one that still runs and gossips is added back
    /// as a learner.
    pub async fn remove(&self, node: &str) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        let r = match m.current_leader {
            None => Err(raft::network::ForwardError::Failed("no leader".into())),
            Some(l) if l == m.id => self.shared.remove_local(node).await,
            Some(l) => match raft::node::name_of(&self.raft, l) {
                Some(leader) => {
                    raft::network::remove(&self.links, &leader, node, REMOVE_TIMEOUT).await
                }
                None => Err(raft::network::ForwardError::Failed("unknown leader".into())),
            },
        };
        r.map_err(|e| e.to_string())
    }

    /// The log's state as this node sees it.
    pub fn log_status(&self) -> LogStatus {
        raft::node::status(&self.raft)
    }

    /// The peers with a node link up now.
    pub fn links_up(&self) -> Vec<String> {
        self.links.up_peers()
    }

    /// Every origin a member advertised since start, sorted.
    pub fn peer_origins(&self) -> Vec<String> {
        self.members.borrow().origins.iter().cloned().collect()
    }

    /// Tells every peer with a link up (kicks, typing; see `live`).
    pub fn relay(&self, note: &crate::protocol::Relay) {
        live::broadcast(&self.links, &self.metrics, note);
    }

    /// `user`'s home node on the current ring (`None`: no node serves).
    pub fn home(&self, user: &str) -> Option<ring::Home> {
        self.ring.borrow().home(user).cloned()
    }

    /// The ring, changing when the serving members change.
    pub fn ring(&self) -> watch::Receiver<Arc<ring::Ring>> {
        self.ring.clone()
    }

    /// `(node, url)` of every live, ready node: where clients may connect.
    pub fn serving(&self) -> Vec<(String, String)> {
        self.members
            .borrow()
            .members
            .values()
            .filter(|m| m.serving())
            .map(|m| (m.node.clone(), m.url.clone()))
            .collect()
    }
}

/// What the cluster needs from the rest of the server.
pub struct ClusterDeps {
    pub store: Store,
    /// To the hub: the log's applied messages and receipts, failed proposals.
    pub events: mpsc::Sender<StorageEvent>,
    /// From the hub and the sessions: appends and acks to propose.
    pub proposals: mpsc::Receiver<StorageCmd>,
    /// From auth: account changes to propose.
    pub accounts: mpsc::Receiver<AccountProposal>,
    pub metrics: Arc<ClusterMetrics>,
    /// To the hub: what other nodes' sessions did (see `live`).
    pub live: mpsc::Sender<crate::protocol::Relay>,
}

impl Cluster {
    pub async fn start(cfg: ClusterConfig, deps: ClusterDeps) -> anyhow::Result<Self> {
        let keys = ClusterKeys::derive(&cfg.secret)?;
        let (tcp, udp) = bind(cfg.listen).await?;
        let addr = udp.local_addr().context("cluster address")?;
        let advertise = cfg.advertise.unwrap_or(addr);
        let generation = generation::next(&cfg.data_dir)?;
        let gossip = Gossip::start(
            GossipConfig {
                node_id: cfg.node_id.clone(),
                generation,
                advertise,
                seeds: cfg.seeds.clone(),
                url: cfg.url.clone(),
                dead_grace: DEAD_GRACE,
            },
            udp,
            keys.gossip.clone(),
            deps.metrics.clone(),
        )
        .await
        .context("starting gossip")?;
        let shared = Shared::new();
        let inbox = live::Inbox::new(deps.live, gossip.view(), deps.metrics.clone());
        let links = Links::start(
            LinkConfig::new(cfg.node_id.clone(), keys.link.clone()),
            tcp,
            deps.metrics.clone(),
            Arc::new(Handler(shared.clone(), inbox.clone())),
        )
        .context("starting the node links")?;
        let (mut log, _applied) = LogNode::start(
            LogConfig {
                name: &cfg.node_id,
                store: &deps.store,
                data_dir: cfg.data_dir.clone(),
                snapshot_every: cfg.snapshot_every,
                metrics: deps.metrics.clone(),
            },
            links.clone(),
            shared.clone(),
            deps.events.clone(),
        )
        .await
        .context("starting the replicated log")?;
        let (ready_tx, ready) = watch::channel(false);
        log.spawn_membership(gossip.view(), links.clone(), cfg.bootstrap_expect);
        log.spawn_leadership_clock(shared.clone());
        log.spawn_proposer(ProposerInputs {
            writes: deps.proposals,
            accounts: deps.accounts,
            links: links.clone(),
            shared: shared.clone(),
            events: deps.events,
            serving: ready.clone(),
            metrics: deps.metrics.clone(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(live::watch_deaths(inbox, stop.clone()));
        let (ring_tx, ring_rx) = watch::channel(Arc::new(ring::Ring::default()));
        tokio::spawn(ring::follow(
            gossip.view(),
            ring_tx,
            cfg.ring_exclude.clone(),
            stop.clone(),
        ));
        let readiness = tokio::spawn(readiness(
            log.raft().clone(),
            gossip.publisher(),
            ready_tx,
            deps.metrics.clone(),
            stop.clone(),
        ));
        let view = ClusterView {
            node: cfg.node_id.into(),
            generation,
            members: gossip.view(),
            ready,
            raft: log.raft().clone(),
            links: links.clone(),
            shared: shared.clone(),
            metrics: deps.metrics.clone(),
            ring: ring_rx,
        };
        tracing::info!(%addr, %advertise, generation, "cluster started");
        Ok(Self {
            gossip,
            view,
            addr,
            readiness,
            stop,
            links,
            log,
        })
    }

    pub fn view(&self) -> ClusterView {
        self.view.clone()
    }

    /// Gossips `draining`, then waits a moment so that peers hear it before
    /// this node closes anything.
    /// A leader then hands leadership over (sessions still open: their
    /// writes go to the new leader from then on).
    pub async fn drain(&self) {
        self.stop.cancel();
        self.gossip.publisher().set_state(NodeState::Draining).await;
        tokio::time::sleep(DRAIN_NOTICE).await;
        if let Some(to) =
            raft::handover::hand_over(self.log.raft(), &self.view.shared, &self.links, HAND_OVER)
                .await
        {
            tracing::info!(leader = %to, "leadership handed over");
        }
    }

    /// After the hub: the log (nothing more to apply or propose), the
    /// links, gossip.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.readiness.await;
        self.log.shutdown().await;
        self.links.shutdown().await;
        self.gossip.shutdown().await;
    }
}

/// Ready ("serving") = part of a working majority and caught up. Becomes
/// true at once; false only after [`MINORITY_AFTER`] without a majority, so
/// an election (about a second) does not close anyone's socket. Gossiped as
/// `ready` / `joining`, so peers and clients know.
async fn readiness(
    raft: openraft::Raft<raft::types::TypeConfig>,
    publisher: gossip::Publisher,
    ready: watch::Sender<bool>,
    metrics: Arc<ClusterMetrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(READINESS_EVERY);
    let mut lost_at: Option<Instant> = None;
    let mut seen = raft::node::LogSeen::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        seen.update(&raft, &metrics);
        let ok = raft::node::caught_up(&raft);
        let serving = *ready.borrow();
        let now = match (ok, serving) {
            (true, _) => {
                lost_at = None;
                true
            }
            (false, false) => false,
            (false, true) => {
                let since = *lost_at.get_or_insert_with(Instant::now);
                since.elapsed() < MINORITY_AFTER
            }
        };
        if now != serving {
            let state = if now {
                NodeState::Ready
            } else {
                NodeState::Joining
            };
            publisher.set_state(state).await;
            ready.send_replace(now);
            tracing::info!(ready = now, "cluster readiness changed");
        }
    }
}

/// Binds UDP and TCP on one address. With port 0, TCP picks the port and UDP
/// takes the same number (retried if that UDP port is taken).
async fn bind(listen: SocketAddr) -> anyhow::Result<(TcpListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..BIND_TRIES {
        let tcp = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding --cluster-listen {listen} (TCP)"))?;
        let at = tcp.local_addr().context("cluster TCP address")?;
        match UdpSocket::bind(at).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("binding --cluster-listen {listen} (UDP)"));
            }
        }
    }
    Err(anyhow::anyhow!(
        "no port free for both UDP and TCP on {listen}: {last:?}"
    ))
}
