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
//! Snapshots are not built yet (the log is not compacted): the policy is
//! `Never`, and a request to build or install one is refused.

use std::io::Cursor as IoCursor;
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
use super::types::{NodeId, NodeInfo, Request, TypeConfig, Write, decode, encode};
use crate::error::InternalError;
use crate::protocol::{Cursor, StoredMsg};
use crate::storage::{
    AccountOp, AccountOutcome, AckCmd, RaftLog, RaftMeta, Spent, StorageCmd, StorageEvent, Store,
};

type SErr = StorageError<NodeId>;

/// What the state machine keeps besides the store's tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeInfo>,
    head: Cursor,
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
}

impl StateMachine {
    pub fn open(
        store: Store,
        log: RaftLog,
        events: mpsc::Sender<StorageEvent>,
        applied_tx: tokio::sync::watch::Sender<u64>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let applied = match log.meta(RaftMeta::StateMachine)? {
            Some(b) => decode(&b)?,
            None => Applied {
                last: None,
                membership: StoredMembership::default(),
                head: Cursor::ZERO,
            },
        };
        applied_tx.send_replace(applied.last.map_or(0, |l| l.index));
        Ok(Self {
            store,
            log,
            applied,
            events,
            applied_tx,
            shared,
        })
    }

    /// The writes of one entry: messages and acks as storage commands
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
                    let cursor = self.applied.head;
                    cmds.push(StorageCmd::Append(
                        Arc::new(StoredMsg {
                            id: p.id,
                            kind: p.kind,
                            room: p.room,
                            sender: p.sender,
                            target: p.target,
                            content: p.content,
                            action: p.action,
                            ts_ms: cursor.ms,
                            cursor,
                        }),
                        at,
                    ));
                }
                Write::Ack { by, ids, status } => {
                    cmds.push(StorageCmd::Ack(AckCmd { by, ids, status }))
                }
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
    type SnapshotBuilder = NoSnapshots;

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
        self.applied_tx
            .send_replace(self.applied.last.map_or(0, |l| l.index));
        for ev in events {
            // Closed only while the node shuts down: nobody is left to show it to.
            let _ = self.events.send(ev).await;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> NoSnapshots {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<IoCursor<Vec<u8>>>, SErr> {
        Ok(Box::new(IoCursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        _snapshot: Box<IoCursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        Err(StorageIOError::write_snapshot(
            Some(meta.signature()),
            AnyError::error("snapshots are not supported yet (the log is not compacted)"),
        )
        .into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        Ok(None)
    }
}

/// The log is never compacted yet, so no snapshot is ever needed.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        Err(StorageIOError::read_snapshot(
            None,
            AnyError::error("snapshots are not supported yet (the log is not compacted)"),
        )
        .into())
    }
}
