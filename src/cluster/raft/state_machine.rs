//! The log's state machine: hubbub's own store. Applying an entry writes its
//! messages (with cursors assigned here, from the entry alone) and acks, and
//! then hands what happened to the hub, which shows it to sessions.
//!
//! Determinism: an entry's cursors depend only on the head before it and
//! the leader's stamp in it (`head.next(ts_ms)` per message, resends
//! included), so every node gives a message the same cursor. The head and
//! the last applied log id are stored together, after the entry's writes:
//! after a crash, entries past the stored point are applied again and write
//! the same keys (ids decide duplicates).
//!
//! Snapshots (the log is compacted behind them; see `snapshots.rs` for the
//! files and the crash-safe install):
//! - Built in [`RaftStateMachine::get_snapshot_builder`], which openraft
//!   calls on the state machine's own task: no entry is applied while it
//!   runs, so the file describes exactly the state at `last_applied` (sled
//!   has no point-in-time view across trees; an export while applies go on
//!   would mix states). The cost is a pause of applying for as long as the
//!   export takes, proportional to the whole store (figures in
//!   docs/ARCHITECTURE.md; `hubbub_log_snapshot_pause_seconds`); committing
//!   (and `saved`) goes on meanwhile, and showing catches up after. The
//!   builder openraft then runs elsewhere only hands over the finished file.
//! - Sent in chunks straight from the file; received into a file
//!   (`SnapshotData` is a `tokio::fs::File`): neither side holds it in memory.
//! - Installed by importing the checked file into the store's trees, then
//!   the hub is told ([`StorageEvent::Installed`]): it moves its head and
//!   closes its sessions with 1001, whose views may miss what the snapshot
//!   brought (they resume elsewhere or here with `since`).
//! - A snapshot that cannot be written or installed (a full disk, a file
//!   that fails its checks) is a storage error: openraft stops this node's
//!   log, the node stops serving, and a restart tries again from a clean
//!   directory (partial files are removed at start).

use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::network::Shared;
use super::snapshots::{Header, Snapshots};
use super::types::{NodeId, NodeInfo, Request, TypeConfig, Write, decode, encode};
use crate::error::InternalError;
use crate::metrics::ClusterMetrics;
use crate::protocol::Cursor;
use crate::storage::{
    AccountOp, AccountOutcome, AckCmd, RaftLog, RaftMeta, ReadCmd, Spent, StorageCmd, StorageEvent,
    Store,
};

type SErr = StorageError<NodeId>;

/// What the state machine keeps besides the store's tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Applied {
    pub last: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
    pub head: Cursor,
}

impl Applied {
    /// The last applied log index (0 before any).
    pub fn index(&self) -> u64 {
        self.last.map_or(0, |l| l.index)
    }
}

pub struct StateMachine {
    store: Store,
    log: RaftLog,
    applied: Applied,
    /// To the hub. Full → apply waits: the hub drains storage events first.
    events: mpsc::Sender<StorageEvent>,
    /// The last applied index, for readiness and joins that wait.
    applied_tx: tokio::sync::watch::Sender<u64>,
    /// Callers on this node waiting for their account change.
    shared: Arc<Shared>,
    snapshots: Snapshots,
    metrics: Arc<ClusterMetrics>,
}

/// Where the state machine's parts are.
pub struct SmDeps {
    pub store: Store,
    pub log: RaftLog,
    pub events: mpsc::Sender<StorageEvent>,
    pub applied_tx: tokio::sync::watch::Sender<u64>,
    pub shared: Arc<Shared>,
    pub data_dir: std::path::PathBuf,
    pub metrics: Arc<ClusterMetrics>,
}

impl StateMachine {
    /// Opens the state machine; an install a crash interrupted is finished
    /// first (the hub then hears of it like of any install).
    pub fn open(d: SmDeps) -> anyhow::Result<Self> {
        let (snapshots, redone) = Snapshots::open(&d.data_dir, &d.store)?;
        let applied = match d.log.meta(RaftMeta::StateMachine)? {
            Some(b) => decode(&b)?,
            None => Applied {
                last: None,
                membership: StoredMembership::default(),
                head: Cursor::ZERO,
            },
        };
        if let Some(h) = redone {
            // The hub is not running yet: the queue has room for this one.
            let _ = d.events.try_send(StorageEvent::Installed {
                head: h.applied.head,
            });
        }
        d.applied_tx.send_replace(applied.index());
        Ok(Self {
            store: d.store,
            log: d.log,
            applied,
            events: d.events,
            applied_tx: d.applied_tx,
            shared: d.shared,
            snapshots,
            metrics: d.metrics,
        })
    }

    /// The writes of one entry: messages, acks, read positions and member
    /// records as storage commands
    /// (advancing the head), account changes applied at once (their waiting
    /// caller, if on this node, gets the outcome; revocations close sessions).
    fn commands(
        &mut self,
        req: Request,
        cmds: &mut Vec<StorageCmd>,
        events: &mut Vec<StorageEvent>,
    ) -> Result<(), InternalError> {
        let at = Instant::now();
        for w in req.writes {
            match w {
                Write::Account { op_id, op } => {
                    let out = self.store.apply_account(&op, req.ts_ms)?;
                    if let Some(ev) = revoked(&op, &out) {
                        events.push(ev);
                    }
                    if let Some(waiting) = self.shared.take_waiter(&op_id) {
                        let _ = waiting.send(out);
                    }
                }
                Write::Post(p) => {
                    self.applied.head = self.applied.head.next(req.ts_ms);
                    let m = p.stored(Vec::new(), self.applied.head);
                    cmds.push(StorageCmd::Append(Arc::new(m), at));
                }
                Write::Mentioned { post, mentions } => {
                    self.applied.head = self.applied.head.next(req.ts_ms);
                    let m = post.stored(mentions, self.applied.head);
                    cmds.push(StorageCmd::Append(Arc::new(m), at));
                }
                Write::Ack { by, ids, status } => {
                    cmds.push(StorageCmd::Ack(AckCmd { by, ids, status }))
                }
                Write::Read { user, room, cursor } => {
                    cmds.push(StorageCmd::Read(ReadCmd { user, room, cursor }))
                }
                Write::Member { room, user } => cmds.push(StorageCmd::Member { room, user }),
            }
        }
        Ok(())
    }
}

/// The sessions an applied account change closes on every node.
fn revoked(op: &AccountOp, out: &AccountOutcome) -> Option<StorageEvent> {
    match (op, out) {
        (AccountOp::RevokeFamily { family, user }, _) => Some(StorageEvent::Revoked {
            user: user.clone(),
            family: Some(*family),
        }),
        (
            AccountOp::SetDisabled {
                name,
                disabled: true,
            },
            AccountOutcome::Found(true),
        ) => Some(StorageEvent::Revoked {
            user: name.clone(),
            family: None,
        }),
        (_, AccountOutcome::Spent(Spent::Reused(rec))) => Some(StorageEvent::Revoked {
            user: rec.username.clone(),
            family: Some(rec.family),
        }),
        _ => None,
    }
}

fn write_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Built;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>), SErr> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut cmds = Vec::new();
        let mut out = Vec::new();
        let mut account_events = Vec::new();
        for e in entries {
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(req) => self
                    .commands(req, &mut cmds, &mut account_events)
                    .map_err(write_err)?,
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(e.log_id), m)
                }
            }
            self.applied.last = Some(e.log_id);
            // One response per entry, in order (openraft's rule).
            out.push(());
        }
        let mut events = self.store.apply_replicated(&cmds).map_err(write_err)?;
        events.extend(account_events);
        let state = encode(&self.applied).map_err(write_err)?;
        self.log
            .stage_meta(RaftMeta::StateMachine, &state)
            .map_err(write_err)?;
        self.applied_tx.send_replace(self.applied.index());
        for ev in events {
            // Closed only while the node shuts down: nobody is left to show it to.
            let _ = self.events.send(ev).await;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Built {
        Built(Some(self.build().await))
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        Ok(Box::new(self.snapshots.receiving().await?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let started = Instant::now();
        let (header, bytes) = self.snapshots.install(&self.store, *snapshot).await?;
        if header.applied.last != meta.last_log_id {
            // The leader's meta and its file disagree: the file is what was installed.
            tracing::warn!(meta = ?meta.last_log_id, file = ?header.applied.last,
                "a snapshot whose file and meta differ");
        }
        self.applied = header.applied;
        self.applied_tx.send_replace(self.applied.index());
        self.metrics.snapshots_installed.inc();
        self.metrics.snapshot_bytes.set(bytes as i64);
        tracing::info!(snapshot = %header.id, index = self.applied.index(),
            bytes, ms = started.elapsed().as_millis() as u64, "installed a snapshot from the leader");
        // Closed only while the node shuts down: nobody is left to tell.
        let _ = self
            .events
            .send(StorageEvent::Installed {
                head: self.applied.head,
            })
            .await;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        Ok(self
            .snapshots
            .open_current()
            .await?
            .map(|(file, h)| Snapshot {
                meta: h.meta(),
                snapshot: Box::new(file),
            }))
    }
}

impl StateMachine {
    /// Writes the snapshot of the state now (applies wait meanwhile).
    async fn build(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let started = Instant::now();
        let last = self.applied.last;
        let header = Header {
            id: format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                crate::cluster::gossip::transport::wall_ms()
            ),
            applied: self.applied.clone(),
        };
        let meta = header.meta();
        let (file, n) = self.snapshots.build(&self.store, header).await?;
        let pause = started.elapsed();
        self.metrics.snapshots_built.inc();
        self.metrics.snapshot_bytes.set(n.bytes as i64);
        self.metrics.snapshot_pause_seconds.set(pause.as_secs_f64());
        tracing::info!(snapshot = %meta.snapshot_id, records = n.records, bytes = n.bytes,
            pause_ms = pause.as_millis() as u64, "wrote a snapshot (applies paused meanwhile)");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// A snapshot already written by `get_snapshot_builder` (or why not).
pub struct Built(Option<Result<Snapshot<TypeConfig>, SErr>>);

impl RaftSnapshotBuilder<TypeConfig> for Built {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        match self.0.take() {
            Some(built) => built,
            None => Err(
                StorageIOError::read_snapshot(None, AnyError::error("built once already")).into(),
            ),
        }
    }
}
