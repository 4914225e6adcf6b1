//! Membership and failure detection: chitchat (scuttlebutt gossip with a
//! phi-accrual failure detector) over the authenticating transport.
//!
//! Each node gossips a few small keys about itself, never messages: its
//! public URL, its state (`joining` → `ready` → `draining`), the protocol
//! version and the address its node links listen on. A poller turns
//! chitchat's state into one [`Member`] list every [`POLL`]: per node id only
//! the highest generation counts (a dead incarnation lingers in chitchat's
//! state until the grace period ends), and "live" is the failure detector's.

pub mod transport;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, Heartbeat, spawn_chitchat,
};
use ring::hmac;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ClusterMetrics, MemberState};

use transport::AuthUdpTransport;

/// One gossip round. With `initial_interval` equal to it and phi 8, a node
/// that stops is marked dead after about 0.7–1 s on one machine.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// How often the member list is rebuilt from chitchat's state.
pub const POLL: Duration = Duration::from_millis(50);
const PHI_THRESHOLD: f64 = 6.0;
/// Heartbeat gaps longer than this are not sampled (a paused laptop).
const MAX_INTERVAL: Duration = Duration::from_secs(2);
/// chitchat's cluster id: nodes of another program, or another version of
/// the gossip keys, do not mix.
const CLUSTER_ID: &str = "hubbub-1";
/// The protocol version each node gossips (`proto` key).
pub const PROTO: &str = "1";

/// How long a deleted key's tombstone stays in a node's state (and is
/// gossiped) before it is collected. Presence deletes a room's key when its
/// last local user leaves: with chitchat's default (an hour) a node whose
/// rooms come and go would carry an hour of tombstones, far past the state's
/// 32 KiB budget. A peer that has not heard from a node for longer than this
/// gets that node's whole state afresh (chitchat's reset), so a short grace
/// loses nothing; it only costs a full state now and then to a peer that was
/// away that long.
pub const TOMBSTONE_GRACE: Duration = Duration::from_secs(60);

const KEY_URL: &str = "url";
const KEY_STATE: &str = "state";
const KEY_PROTO: &str = "proto";
const KEY_LINK: &str = "link";

/// A node's own account of where it is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Started, not yet part of a formed cluster.
    Joining,
    /// Serving.
    Ready,
    /// Shutting down (set before anything closes: chitchat has no leave).
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "joining" => Some(NodeState::Joining),
            "ready" => Some(NodeState::Ready),
            "draining" => Some(NodeState::Draining),
            _ => None,
        }
    }
}

/// One node as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    pub generation: u64,
    /// Where its gossip and node links listen (its `--cluster-advertise`).
    pub addr: SocketAddr,
    /// Its `--advertise-url`, for clients.
    pub url: String,
    /// `None` until its keys have arrived, or when it gossips an unknown one.
    pub state: Option<NodeState>,
    pub proto: String,
    /// The failure detector's verdict (this node is always live to itself).
    pub live: bool,
    pub this_node: bool,
}

impl Member {
    /// Live, ready, and speaking our protocol: may serve clients.
    pub fn serving(&self) -> bool {
        self.live && self.state == Some(NodeState::Ready) && self.proto == PROTO
    }
}

/// The member list with when each member was last heard of.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// By node id.
    pub members: BTreeMap<String, Member>,
    /// When each member's heartbeat last moved (not part of a change).
    pub heard: HashMap<String, Instant>,
    /// The origin (`scheme://host:port`) of every URL a member advertised
    /// since this node started, dead members' included: a page loaded from a
    /// node that died still opens its socket here.
    pub origins: BTreeSet<String>,
}

pub struct GossipConfig {
    pub node_id: String,
    pub generation: u64,
    /// Peers gossip and link to this address.
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub url: String,
    /// How long a dead node's state is kept (then forgotten).
    pub dead_grace: Duration,
}

/// The running gossip: chitchat's server and the poller that keeps [`View`].
pub struct Gossip {
    handle: ChitchatHandle,
    view: watch::Receiver<Arc<View>>,
    stop: CancellationToken,
    poller: tokio::task::JoinHandle<()>,
}

impl Gossip {
    /// Starts gossip on `socket` (already bound to the cluster address).
    pub async fn start(
        cfg: GossipConfig,
        socket: tokio::net::UdpSocket,
        key: hmac::Key,
        metrics: Arc<ClusterMetrics>,
    ) -> anyhow::Result<Self> {
        let listen = socket.local_addr()?;
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node_id.clone(), cfg.generation, cfg.advertise),
            cluster_id: CLUSTER_ID.to_owned(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 1000,
                max_interval: MAX_INTERVAL,
                initial_interval: GOSSIP_INTERVAL,
                dead_node_grace_period: cfg.dead_grace,
            },
            marked_for_deletion_grace_period: TOMBSTONE_GRACE,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let keys = vec![
            (KEY_URL.to_owned(), cfg.url.clone()),
            (KEY_STATE.to_owned(), NodeState::Joining.as_str().to_owned()),
            (KEY_PROTO.to_owned(), PROTO.to_owned()),
            (KEY_LINK.to_owned(), cfg.advertise.to_string()),
        ];
        let transport = AuthUdpTransport::new(socket, key, metrics.clone());
        let handle = spawn_chitchat(config, keys, &transport).await?;
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let stop = CancellationToken::new();
        let poller = tokio::spawn(poll(handle.chitchat(), tx, metrics, stop.clone()));
        Ok(Self {
            handle,
            view,
            stop,
            poller,
        })
    }

    /// The member list; `changed()` fires when a member joins, leaves, dies,
    /// or changes state (not on heartbeats).
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Writes this node's own keys (cheap to clone; for tasks).
    pub fn publisher(&self) -> Publisher {
        Publisher(self.handle.chitchat())
    }

    /// Reads other nodes' keys (cheap to clone; for tasks).
    pub fn reader(&self) -> StateReader {
        StateReader(self.handle.chitchat())
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.poller.await;
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip stopped with an error");
        }
    }
}

/// Writes this node's own gossip keys.
#[derive(Clone)]
pub struct Publisher(Arc<tokio::sync::Mutex<chitchat::Chitchat>>);

impl Publisher {
    /// Gossips this node's new state (peers see it within a round or two).
    pub async fn set_state(&self, state: NodeState) {
        self.0
            .lock()
            .await
            .self_node_state()
            .set(KEY_STATE, state.as_str());
    }
}

impl Publisher {
    /// Sets (`Some`) or deletes (`None`) this node's keys in one lock, and
    /// returns the size of its state afterwards (see [`state_bytes`]).
    pub async fn write(&self, writes: Vec<(String, Option<String>)>) -> u64 {
        let mut c = self.0.lock().await;
        let st = c.self_node_state();
        for (key, value) in writes {
            match value {
                Some(v) => st.set(key, v),
                // Deleting a key never set would only log a warning.
                None if st.contains_key(&key) => st.delete(&key),
                None => {}
            }
        }
        state_bytes(st)
    }
}

/// The bytes of a node's keys and values as chitchat holds them, tombstones
/// (deleted keys not yet collected) included: what its gossip state weighs.
pub fn state_bytes(st: &chitchat::NodeState) -> u64 {
    st.key_values_including_deleted()
        .map(|(k, v)| (k.len() + v.value.len()) as u64)
        .sum()
}

/// Another node's keys with a prefix, newer than what the caller saw.
#[derive(Clone)]
pub struct StateReader(Arc<tokio::sync::Mutex<chitchat::Chitchat>>);

impl StateReader {
    /// `member`'s (that generation's) keys starting with `prefix` (deleted
    /// ones left out) and its max version, unless its max version is still
    /// `seen`; `None` also when its state is not here.
    pub async fn keys_if_moved(
        &self,
        member: &Member,
        seen: Option<u64>,
        prefix: &str,
    ) -> Option<(u64, Vec<(String, String)>)> {
        let id = ChitchatId::new(member.node.clone(), member.generation, member.addr);
        let c = self.0.lock().await;
        let st = c.node_state(&id)?;
        let version = st.max_version();
        if seen == Some(version) {
            return None;
        }
        let keys = st
            .iter_prefix(prefix)
            .map(|(k, v)| (k.to_owned(), v.value.clone()))
            .collect();
        Some((version, keys))
    }
}

async fn poll(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    tx: watch::Sender<Arc<View>>,
    metrics: Arc<ClusterMetrics>,
    stop: CancellationToken,
) {
    let mut beats: HashMap<String, (u64, Heartbeat, Instant)> = HashMap::new();
    let mut origins = BTreeSet::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let members = {
            let c = chitchat.lock().await;
            read_members(&c, &mut beats)
        };
        count_states(&members, &metrics);
        origins.extend(members.values().filter_map(|m| origin_of(&m.url)));
        tx.send_if_modified(|view| {
            let changed = view.members != members || view.origins != origins;
            let heard = beats
                .iter()
                .map(|(n, (_, _, at))| (n.clone(), *at))
                .collect();
            *view = Arc::new(View {
                members,
                heard,
                origins: origins.clone(),
            });
            changed
        });
    }
}

/// One [`Member`] per node id: its highest generation, live by the failure
/// detector. `beats` remembers each node's last heartbeat and when it moved.
fn read_members(
    c: &chitchat::Chitchat,
    beats: &mut HashMap<String, (u64, Heartbeat, Instant)>,
) -> BTreeMap<String, Member> {
    let me = c.self_chitchat_id().clone();
    let live: Vec<&ChitchatId> = c.live_nodes().collect();
    let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in c.node_states().keys() {
        let slot = newest.entry(id.node_id.as_str()).or_insert(id);
        if id.generation_id > slot.generation_id {
            *slot = id;
        }
    }
    let now = Instant::now();
    let mut out = BTreeMap::new();
    for (node, id) in newest {
        let Some(st) = c.node_state(id) else { continue };
        let hb = st.heartbeat();
        let entry = beats
            .entry(node.to_owned())
            .or_insert((id.generation_id, hb, now));
        if entry.0 != id.generation_id || entry.1 != hb {
            *entry = (id.generation_id, hb, now);
        }
        out.insert(
            node.to_owned(),
            Member {
                node: node.to_owned(),
                generation: id.generation_id,
                addr: id.gossip_advertise_addr,
                url: st.get(KEY_URL).unwrap_or_default().to_owned(),
                state: st.get(KEY_STATE).and_then(NodeState::parse),
                proto: st.get(KEY_PROTO).unwrap_or_default().to_owned(),
                live: live.contains(&id),
                this_node: *id == me,
            },
        );
    }
    beats.retain(|n, _| out.contains_key(n));
    out
}

/// `scheme://host[:port]` of a base URL, lowercased; `None` for anything else.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty() && matches!(scheme, "http" | "https"))
        .then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

fn count_states(members: &BTreeMap<String, Member>, metrics: &ClusterMetrics) {
    let mut n = [0i64; MemberState::ALL.len()];
    for m in members.values() {
        let s = match (m.live, m.state) {
            (false, _) => MemberState::Dead,
            (true, Some(NodeState::Ready)) => MemberState::Ready,
            (true, Some(NodeState::Draining)) => MemberState::Draining,
            (true, _) => MemberState::Joining,
        };
        n[s as usize] += 1;
    }
    for (s, v) in MemberState::ALL.iter().zip(n) {
        metrics.members(*s).set(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_advertised_urls() {
        assert_eq!(
            origin_of("https://Chat.example:8443/base").as_deref(),
            Some("https://chat.example:8443")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:1").as_deref(),
            Some("http://127.0.0.1:1")
        );
        for bad in ["", "ftp://x", "https://", "chat.example:8443"] {
            assert_eq!(origin_of(bad), None, "{bad:?}");
        }
    }
}
