//! This node's part of the replicated log: the Raft, the task that forms
//! the cluster and grows it from gossip, and the proposer that turns the
//! hub's appends and the sessions' acks into log entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::LogStore;
use super::network::{ForwardError, Network, Shared, forward};
use super::state_machine::{SmDeps, StateMachine};
use super::types::{NodeId, NodeInfo, Request, TypeConfig, Write, node_id};
use crate::cluster::gossip::{self, NodeState, View};
use crate::cluster::link::Links;
use crate::metrics::ClusterMetrics;
use crate::storage::{AccountProposal, DurableMsg, StorageCmd, StorageEvent, Store};

/// Leader heartbeats; elections start after 300–600 ms without one. A
/// follower that knew a leader waits the leader's lease (the maximum) on top,
/// so a dead leader is replaced after about 1 s.
const HEARTBEAT_MS: u64 = 100;
const ELECTION_MS: (u64, u64) = (300, 600);
/// openraft's leader lease (its `election_timeout_max`): a node refuses
/// another candidate this long after it last heard from (or became) a leader.
pub const LEADER_LEASE: Duration = Duration::from_millis(ELECTION_MS.1);
/// Entries per append RPC.
const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// One entry carries at most this many writes, and about this many bytes
/// (content plus `WRITE_OVERHEAD` per write): what was queued while the
/// previous entry committed.
const MAX_WRITES: usize = 1024;
const MAX_ENTRY_BYTES: usize = 512 << 10;
/// A write's encoded size besides its content (ids, names, kind), rounded up.
const WRITE_OVERHEAD: usize = 256;
/// The largest write: a message of 4000 characters of 4 bytes each.
const MAX_WRITE_BYTES: usize = 16_000 + WRITE_OVERHEAD;
// An append RPC of MAX_PAYLOAD_ENTRIES full entries must fit in one link
// frame (16 MiB, `LinkConfig::new`), or replication to a lagging node would
// fail on every try.
const _: () = assert!(
    (MAX_PAYLOAD_ENTRIES as usize) * (MAX_ENTRY_BYTES + MAX_WRITE_BYTES) < (16 << 20) - (1 << 20)
);
/// A batch that is not committed within this long is reported failed
/// (`unavailable`); its writes may still commit later (ids make a resend safe).
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Without a known leader, ask again this often.
const LEADER_RETRY: Duration = Duration::from_millis(25);
/// Voters at most; later nodes stay learners (they still apply everything).
const MAX_VOTERS: usize = 5;
/// The membership task looks at replication and gossip this often.
const MEMBERSHIP_EVERY: Duration = Duration::from_millis(250);

/// Entries kept in the log behind a snapshot, at most: a node down for a
/// short while (this many entries) catches up from the log; one further
/// behind gets the snapshot. Never more than the snapshot interval.
const KEEP_BEHIND_SNAPSHOT: u64 = 10_000;

/// Where the log lives and how often it is compacted.
pub struct LogConfig<'a> {
    pub name: &'a str,
    pub store: &'a Store,
    pub data_dir: std::path::PathBuf,
    /// `--snapshot-every`: entries between snapshots.
    pub snapshot_every: u64,
    pub metrics: Arc<ClusterMetrics>,
}

/// How the log is doing, for `/api/admin/cluster`.
#[derive(Serialize)]
pub struct LogStatus {
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// The last entry removed by compaction (the log starts after it).
    pub last_purged: Option<u64>,
    /// The last entry the current snapshot covers.
    pub snapshot: Option<u64>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
}

pub struct LogNode {
    raft: Raft<TypeConfig>,
    name: String,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LogNode {
    /// Starts this node's Raft (not yet part of any cluster unless its log
    /// says so) on `store`'s trees; applied entries go to `events` (the hub).
    pub async fn start(
        cfg: LogConfig<'_>,
        links: Links,
        shared: Arc<Shared>,
        events: mpsc::Sender<StorageEvent>,
    ) -> anyhow::Result<(Self, watch::Receiver<u64>)> {
        let (name, store) = (cfg.name, cfg.store);
        let config = Config {
            cluster_name: "hubbub".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MS.0,
            election_timeout_max: ELECTION_MS.1,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // Per chunk (openraft's default chunk: 3 MiB, under the 16 MiB link frame).
            install_snapshot_timeout: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT.min(cfg.snapshot_every),
            ..Default::default()
        }
        .validate()?;
        let log_store = LogStore::open(store)?;
        let (applied_tx, applied) = watch::channel(0);
        let deps = SmDeps {
            store: store.clone(),
            log: store.raft_log()?,
            events,
            applied_tx,
            shared: shared.clone(),
            data_dir: cfg.data_dir,
            metrics: cfg.metrics,
        };
        // Off the async workers: finishing an interrupted install reads and
        // writes the whole snapshot.
        let sm = tokio::task::spawn_blocking(move || StateMachine::open(deps)).await??;
        let raft = Raft::new(
            node_id(name),
            Arc::new(config),
            Network { links },
            log_store,
            sm,
        )
        .await?;
        // The links answer Raft's calls from now on.
        let _ = shared.raft.set(raft.clone());
        let node = Self {
            raft,
            name: name.to_owned(),
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        };
        Ok((node, applied))
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Forms the cluster once `expect` nodes see each other (the smallest
    /// name initialises it), adds later nodes as learners and promotes them
    /// when caught up, and keeps the links pointed at the members.
    pub fn spawn_membership(
        &mut self,
        view: watch::Receiver<Arc<View>>,
        links: Links,
        expect: usize,
    ) {
        let task = Membership {
            raft: self.raft.clone(),
            name: self.name.clone(),
            view,
            links,
            expect,
            adding: BTreeSet::new(),
        };
        self.tasks.push(tokio::spawn(task.run(self.stop.clone())));
    }

    /// Keeps `shared.led_since` (when this node became leader) for the
    /// hand-over.
    pub fn spawn_leadership_clock(&mut self, shared: Arc<Shared>) {
        let task = super::handover::track(self.raft.clone(), shared, self.stop.clone());
        self.tasks.push(tokio::spawn(task));
    }

    /// Turns what arrives on `rx` (the hub's appends, the sessions' acks,
    /// read positions and first joins) into entries, one at a time, each proposed at the leader.
    pub fn spawn_proposer(&mut self, inputs: ProposerInputs) {
        let p = Proposer {
            raft: self.raft.clone(),
            serving: inputs.serving,
            metrics: inputs.metrics,
            me: node_id(&self.name),
            links: inputs.links,
            shared: inputs.shared,
            events: inputs.events,
        };
        self.tasks.push(tokio::spawn(p.run(
            inputs.writes,
            inputs.accounts,
            self.stop.clone(),
        )));
    }
}

/// What the proposer reads from and reports to.
pub struct ProposerInputs {
    /// The hub's appends and the sessions' acks, reads and first joins.
    pub writes: mpsc::Receiver<StorageCmd>,
    /// Auth's account changes.
    pub accounts: mpsc::Receiver<AccountProposal>,
    pub links: Links,
    pub shared: Arc<Shared>,
    /// To the hub: entries that were not committed in time.
    pub events: mpsc::Sender<StorageEvent>,
    /// This node serves (part of a majority): otherwise refuse at once.
    pub serving: watch::Receiver<bool>,
    pub metrics: Arc<ClusterMetrics>,
}

/// How the log is doing on this node.
pub fn status(raft: &Raft<TypeConfig>) -> LogStatus {
    {
        let m = raft.metrics().borrow().clone();
        let name_of = |id: NodeId| {
            m.membership_config
                .nodes()
                .find(|(i, _)| **i == id)
                .map_or_else(|| id.to_string(), |(_, n)| n.name.clone())
        };
        let voters: BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
        LogStatus {
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader.map(name_of),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            last_purged: m.purged.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            voters: voters.iter().map(|id| name_of(*id)).collect(),
            learners: m
                .membership_config
                .nodes()
                .filter(|(id, _)| !voters.contains(id))
                .map(|(_, n)| n.name.clone())
                .collect(),
        }
    }
}

/// What the metrics last saw of the log, to count changes.
#[derive(Default)]
pub struct LogSeen {
    term: u64,
    leader: Option<NodeId>,
}

impl LogSeen {
    /// Samples the log into the metrics; counts new terms and leader changes.
    pub fn update(&mut self, raft: &Raft<TypeConfig>, metrics: &ClusterMetrics) {
        let m = raft.metrics().borrow().clone();
        if m.current_term > self.term {
            if self.term > 0 {
                metrics.log_elections.inc_by(m.current_term - self.term);
            }
            self.term = m.current_term;
        }
        if m.current_leader != self.leader {
            if self.leader.is_some() {
                metrics.log_leader_changes.inc();
            }
            self.leader = m.current_leader;
        }
        let leads = m.state == ServerState::Leader;
        metrics.log_term.set(m.current_term as i64);
        metrics.log_is_leader.set(i64::from(leads));
        metrics
            .log_last_applied
            .set(m.last_applied.map_or(0, |l| l.index) as i64);
        let last = m.last_log_index.unwrap_or(0);
        let lag = match (&m.replication, leads) {
            (Some(r), true) => r
                .values()
                .map(|matched| last.saturating_sub(matched.map_or(0, |l| l.index)))
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        metrics.log_replication_lag.set(lag as i64);
    }
}

/// The name of node `id` in the log's membership.
pub fn name_of(raft: &Raft<TypeConfig>, id: NodeId) -> Option<String> {
    let m = raft.metrics().borrow().clone();
    m.membership_config
        .nodes()
        .find(|(i, _)| **i == id)
        .map(|(_, n)| n.name.clone())
}

/// Waits until this node has applied everything committed at the leader
/// when asked (a join on a node that is behind honours `since` from any
/// node). Gives up at `limit`, or when no leader is known: `false` then.
pub async fn catch_up(
    raft: &Raft<TypeConfig>,
    shared: &Shared,
    links: &Links,
    limit: Duration,
) -> bool {
    let caught_up = tokio::time::timeout(limit, async {
        let mut watch = raft.metrics();
        loop {
            // During an election (a client moved here because its node died)
            // there is no leader for a moment: wait for one, within `limit`.
            let Ok(m) = watch
                .wait_for(|m| m.current_leader.is_some())
                .await
                .map(|m| m.clone())
            else {
                return false;
            };
            let Some(leader) = m.current_leader else {
                return false;
            };
            let index = if leader == m.id {
                shared.read_index().await
            } else {
                match name_of(raft, leader) {
                    // A leader that stopped answering is replaced about 1 s
                    // later: ask the new one then.
                    Some(name) => tokio::select! {
                        i = super::network::read_index(links, &name, limit) => i,
                        _ = watch.wait_for(|m| m.current_leader != Some(leader)) => None,
                    },
                    None => None,
                }
            };
            if let Some(i) = index {
                return raft
                    .wait(None)
                    .applied_index_at_least(Some(i), "join")
                    .await
                    .is_ok();
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
    })
    .await;
    caught_up.unwrap_or(false)
}

/// A leader that has not heard from a majority for this long is cut off.
const QUORUM_ACK_MS: u64 = 1500;

/// True while this node is part of a working majority (it knows a leader,
/// or leads and a majority answered lately) and has applied what it holds.
pub fn caught_up(raft: &Raft<TypeConfig>) -> bool {
    let m = raft.metrics().borrow().clone();
    let quorum = match m.state {
        ServerState::Leader => m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms < QUORUM_ACK_MS),
        _ => m.current_leader.is_some(),
    };
    // Under steady writes a node always holds a few entries appended and not
    // yet applied (or not yet committed): "caught up" allows for that.
    let lag = m
        .last_log_index
        .unwrap_or(0)
        .saturating_sub(m.last_applied.map_or(0, |l| l.index));
    quorum && lag <= MAX_APPLY_LAG && m.running_state.is_ok()
}

/// Entries a serving node may hold unapplied (appended, in flight to commit
/// or apply). A node further behind is catching up and not ready.
const MAX_APPLY_LAG: u64 = 256;

impl LogNode {
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the log stopped with an error");
        }
    }
}

struct Membership {
    raft: Raft<TypeConfig>,
    name: String,
    view: watch::Receiver<Arc<View>>,
    links: Links,
    expect: usize,
    /// Learners being added (the call runs in its own task).
    adding: BTreeSet<NodeId>,
}

impl Membership {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(MEMBERSHIP_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                r = self.view.changed() => if r.is_err() { return },
            }
            let view = self.view.borrow().clone();
            self.links.set_peers(
                view.members
                    .values()
                    .filter(|m| !m.this_node)
                    .map(|m| (m.node.clone(), m.addr))
                    .collect(),
            );
            if let Err(e) = self.step(&view).await {
                tracing::debug!(error = %e, "membership step");
            }
        }
    }

    async fn step(&mut self, view: &View) -> anyhow::Result<()> {
        let candidates: BTreeMap<NodeId, NodeInfo> = view
            .members
            .values()
            .filter(|m| m.live && m.proto == gossip::PROTO && m.state != Some(NodeState::Draining))
            .map(|m| {
                let info = NodeInfo {
                    name: m.node.clone(),
                    addr: m.addr.to_string(),
                };
                (node_id(&m.node), info)
            })
            .collect();
        if !self.raft.is_initialized().await? {
            let formed_elsewhere = view
                .members
                .values()
                .any(|m| m.live && !m.this_node && m.state == Some(NodeState::Ready));
            let smallest = candidates.values().map(|n| n.name.as_str()).min();
            if !formed_elsewhere && candidates.len() >= self.expect && smallest == Some(&self.name)
            {
                tracing::info!(nodes = candidates.len(), "forming the cluster's log");
                if let Err(e) = self.raft.initialize(candidates).await {
                    tracing::warn!(error = %e, "initialising the log");
                }
            }
            return Ok(());
        }
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Ok(());
        }
        let known: BTreeSet<NodeId> = m.membership_config.nodes().map(|(id, _)| *id).collect();
        for (id, info) in &candidates {
            if !known.contains(id) && self.adding.insert(*id) {
                tracing::info!(node = %info.name, "adding a learner");
                let (raft, info, id) = (self.raft.clone(), info.clone(), *id);
                tokio::spawn(async move {
                    if let Err(e) = raft.add_learner(id, info, false).await {
                        tracing::warn!(error = %e, "adding a learner");
                    }
                });
            }
        }
        self.adding.retain(|id| !known.contains(id));
        // Promote a learner that has caught up, while there is room.
        let voters: BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
        if voters.len() >= MAX_VOTERS
            || m.membership_config.membership().get_joint_config().len() > 1
        {
            return Ok(());
        }
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = m.replication.as_ref().and_then(|r| {
            r.iter()
                .find(|(id, matched)| {
                    !voters.contains(id)
                        && candidates.contains_key(id)
                        && matched.map(|l| l.index).unwrap_or(0) + 1 >= last
                })
                .map(|(id, _)| *id)
        });
        if let Some(id) = caught_up {
            let mut next = voters.clone();
            next.insert(id);
            tracing::info!(
                voters = next.len(),
                "promoting a caught-up learner to voter"
            );
            self.raft.change_membership(next, false).await?;
        }
        Ok(())
    }
}

struct Proposer {
    raft: Raft<TypeConfig>,
    /// False while this node is not part of a serving majority: writes
    /// are refused at once (`unavailable`) instead of waiting for a leader.
    serving: watch::Receiver<bool>,
    metrics: Arc<ClusterMetrics>,
    me: NodeId,
    links: Links,
    shared: Arc<Shared>,
    events: mpsc::Sender<StorageEvent>,
}

impl Proposer {
    async fn run(
        self,
        mut rx: mpsc::Receiver<StorageCmd>,
        mut accounts: mpsc::Receiver<AccountProposal>,
        stop: CancellationToken,
    ) {
        loop {
            let mut batch = Batch::default();
            tokio::select! {
                _ = stop.cancelled() => return,
                c = rx.recv() => match c { Some(c) => batch.push_cmd(c), None => return },
                a = accounts.recv() => match a { Some(a) => batch.push_account(a, &self.shared), None => return },
            }
            while !batch.full() {
                if let Ok(c) = rx.try_recv() {
                    batch.push_cmd(c);
                } else if let Ok(a) = accounts.try_recv() {
                    batch.push_account(a, &self.shared);
                } else {
                    break;
                }
            }
            // One entry in flight at a time: entries commit in the order a
            // session sent its messages; what queues meanwhile is the next.
            let req = Request {
                ts_ms: 0,
                writes: std::mem::take(&mut batch.writes),
            };
            let started = Instant::now();
            let result = self.propose(req).await;
            if result.is_ok() {
                self.metrics
                    .log_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            if let Err(e) = result {
                self.metrics.log_failed_entries.inc();
                tracing::warn!(error = %e, messages = batch.posts.len(), "an entry was not committed in time");
                // Their callers get `unavailable` (the senders dropped).
                for op in &batch.ops {
                    self.shared.take_waiter(op);
                }
                if !batch.posts.is_empty() {
                    let _ = self.events.send(StorageEvent::Failed(batch.posts)).await;
                }
            }
        }
    }

    /// At the leader (this node, or over its link), retried while no leader
    /// is known or the leader moves, until `WRITE_DEADLINE`.
    async fn propose(&self, req: Request) -> Result<(), ForwardError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut last = ForwardError::Failed("no leader".into());
        while Instant::now() < deadline {
            if !*self.serving.borrow() {
                return Err(ForwardError::Failed(
                    "not part of a serving majority".into(),
                ));
            }
            let leader = self.raft.metrics().borrow().current_leader;
            let result = match leader {
                Some(l) if l == self.me => self.shared.write_local(req.clone()).await,
                Some(l) => match self.leader_name(l) {
                    Some(name) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        // A leader that stopped answering (frozen, cut off with
                        // its link still up) is replaced about 1 s later: give
                        // up on it then and retry at the new one, instead of
                        // stalling every write until the deadline. The
                        // abandoned call may still commit: ids make that safe.
                        let mut metrics = self.raft.metrics();
                        tokio::select! {
                            r = forward(&self.links, &name, &req, left) => r,
                            _ = metrics.wait_for(|m| m.current_leader != Some(l)) => {
                                Err(ForwardError::NotLeader(None))
                            }
                        }
                    }
                    None => Err(ForwardError::NotLeader(None)),
                },
                None => Err(ForwardError::NotLeader(None)),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(LEADER_RETRY).await;
        }
        Err(last)
    }

    fn leader_name(&self, id: NodeId) -> Option<String> {
        name_of(&self.raft, id)
    }
}

/// What one entry will carry: its writes, the posts in it (reported failed
/// if it is not committed) and its account ops (their waiters dropped then).
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    posts: Vec<DurableMsg>,
    ops: Vec<uuid::Uuid>,
    bytes: usize,
}

impl Batch {
    fn full(&self) -> bool {
        self.writes.len() >= MAX_WRITES || self.bytes >= MAX_ENTRY_BYTES
    }

    fn push_account(&mut self, a: AccountProposal, shared: &Shared) {
        let op_id = uuid::Uuid::new_v4();
        shared.add_waiter(op_id, a.reply);
        self.ops.push(op_id);
        self.bytes += 2 * WRITE_OVERHEAD;
        self.writes.push(Write::Account { op_id, op: a.op });
    }

    fn push_cmd(&mut self, c: StorageCmd) {
        let w = match c {
            StorageCmd::Append(m, _) => {
                self.bytes += m.content.len() + WRITE_OVERHEAD;
                self.posts.push(DurableMsg {
                    id: m.id,
                    room: m.room.clone(),
                    sender: m.sender.clone(),
                });
                Write::of_msg(&m)
            }
            StorageCmd::Ack(a) => Write::Ack {
                by: a.by,
                ids: a.ids,
                status: a.status,
            },
            StorageCmd::Read(r) => Write::Read {
                user: r.user,
                room: r.room,
                cursor: r.cursor,
            },
            StorageCmd::Member { room, user } => Write::Member { room, user },
        };
        self.writes.push(w);
    }
}
