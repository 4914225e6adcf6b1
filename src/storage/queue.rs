//! The write-ahead queue's interface: what goes on it (`StorageCmd`), what
//! the writer reports back (`StorageEvent`), the handle that queues without
//! ever waiting, and why it refuses (`Refused`, with its `unavailable` frame).
//! The task that drains it is `writer.rs`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::health::{StorageHealth, StorageState};
use super::reads::RoomRead;
use crate::protocol::frames::encode_unavailable;
use crate::protocol::{Cursor, Frame, RoomName, Status, StoredMsg, Username};

/// What `unavailable` tells a client to wait while the queue is full.
const RETRY_BUSY_MS: u64 = 100;
/// ... and while storage is full or failing: the state changes no faster than
/// free space is checked.
const RETRY_DEGRADED_MS: u64 = 1000;

/// What goes on the write-ahead queue.
pub enum StorageCmd {
    /// A message the hub accepted and is broadcasting, and when it did
    /// (for the send→durable latency metric).
    Append(Arc<StoredMsg>, Instant),
    /// Receipts from one recipient. Sent by the session straight to this queue:
    /// the message's own `Append` was queued before it was broadcast, so FIFO
    /// order guarantees it is applied before any ack for it.
    Ack(AckCmd),
    /// Cluster mode only: a `read` frame's move of a read position, applied
    /// forward only on every node (single-node sessions call
    /// `Store::mark_read` directly).
    Read(ReadCmd),
    /// Cluster mode only: a user's first join of a room, recorded on every
    /// node (single-node sessions call `Store::remember_member` directly).
    Member { room: RoomName, user: Username },
}

pub struct ReadCmd {
    pub user: Username,
    pub room: RoomName,
    pub cursor: Cursor,
}

pub struct AckCmd {
    pub by: Username,
    pub ids: Vec<Uuid>,
    pub status: Status,
}

/// A message the writer reports on: now on disk (`Durable`), or not written (`Failed`).
/// A message of a committed log entry (cluster mode).
#[derive(Clone, Debug)]
pub struct CommittedMsg {
    pub msg: Arc<StoredMsg>,
    /// Stored now; `false` for a resend of an id already stored (its sender
    /// gets `saved` again, nobody sees it twice).
    pub fresh: bool,
}

#[derive(Clone, Debug)]
pub struct DurableMsg {
    pub id: Uuid,
    pub room: RoomName,
    pub sender: Username,
}

/// What the writer tells the hub after each batch.
#[derive(Debug)]
pub enum StorageEvent {
    Durable(Vec<DurableMsg>),
    /// Cluster mode: messages of committed log entries, applied to this
    /// node's store in log order with the cursors the log gave them. Shown
    /// to sessions now, never before.
    Committed(Vec<CommittedMsg>),
    /// Cluster mode: an account change applied from the log closes sessions
    /// on this node too: the user's (`family: None`, disabled) or those of
    /// one token family (logout, a reused refresh token).
    Revoked {
        user: Username,
        family: Option<Uuid>,
    },
    /// Cluster mode: a snapshot from the leader replaced this node's
    /// replicated state; `head` is its newest cursor. Sessions' views may
    /// miss what it brought: the hub closes them (1001).
    Installed {
        head: Cursor,
    },
    /// These messages were broadcast but are not on disk, and will not be:
    /// their senders get `unavailable` and may resend the same ids.
    Failed(Vec<DurableMsg>),
    /// A recipient's status moved forward: route a `receipt` to the sender.
    Receipt {
        id: Uuid,
        room: RoomName,
        sender: Username,
        by: Username,
        status: Status,
    },
    /// Cluster mode: a read position moved (an applied `Read`); the counts
    /// are the room's after the move. Shown to the user's connections on
    /// this node as a `read` frame.
    ReadMoved {
        user: Username,
        read: RoomRead,
    },
}

/// Why a command was not queued: the caller refuses the message with
/// `unavailable` + `retry_after_ms` and does not broadcast it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The write-ahead queue is full.
    Busy,
    /// Free space is under the watermark (messages only; receipts still go).
    Full,
    /// Storage failed; the server is stopping.
    Failed,
}

impl Refused {
    /// The `message` of the `unavailable` error.
    pub fn message(self) -> &'static str {
        match self {
            Refused::Busy => "storage is busy; resend later",
            Refused::Full => "storage is full; resend later",
            Refused::Failed => "storage failed; resend later",
        }
    }

    pub fn retry_after_ms(self) -> u64 {
        match self {
            Refused::Busy => RETRY_BUSY_MS,
            Refused::Full | Refused::Failed => RETRY_DEGRADED_MS,
        }
    }

    /// The `unavailable` error frame for the refused message (its `id`, if
    /// any), with this refusal's message and `retry_after_ms`.
    pub fn frame(self, id: Option<&str>) -> Frame {
        encode_unavailable(self.message(), id, self.retry_after_ms())
    }
}

/// Handle on the writer task. Cloning shares the queue.
#[derive(Clone)]
pub struct StorageHandle {
    /// Full → the caller refuses the message with `unavailable` + `retry_after_ms`
    /// and does not broadcast it: what is broadcast is always on its way to disk.
    pub(super) tx: mpsc::Sender<StorageCmd>,
    pub(super) health: Arc<StorageHealth>,
}

impl StorageHandle {
    /// Queues a command unless storage refuses it. A full or failed storage
    /// refuses messages; a failed one refuses receipts too.
    pub fn try_send(&self, cmd: StorageCmd) -> std::result::Result<(), Refused> {
        match (self.health.state(), &cmd) {
            (StorageState::Failed, _) => return Err(Refused::Failed),
            (StorageState::Full, StorageCmd::Append(..)) => return Err(Refused::Full),
            _ => {}
        }
        self.tx.try_send(cmd).map_err(|_| Refused::Busy)
    }

    /// Queues one recipient's receipts (`ack`), unless storage refuses them.
    pub fn ack(
        &self,
        by: Username,
        ids: Vec<Uuid>,
        status: Status,
    ) -> std::result::Result<(), Refused> {
        self.try_send(StorageCmd::Ack(AckCmd { by, ids, status }))
    }

    /// Cluster mode (the handle `replicated` returns): proposes moving
    /// `user`'s read position in `room` to `cursor` (applied forward only on
    /// every node), unless refused.
    pub fn propose_read(
        &self,
        user: Username,
        room: RoomName,
        cursor: Cursor,
    ) -> std::result::Result<(), Refused> {
        self.try_send(StorageCmd::Read(ReadCmd { user, room, cursor }))
    }

    /// Cluster mode (the same handle): proposes recording that `user` joined
    /// `room` on every node.
    pub fn propose_member(
        &self,
        room: RoomName,
        user: Username,
    ) -> std::result::Result<(), Refused> {
        self.try_send(StorageCmd::Member { room, user })
    }

    /// Reserves a slot for one message append, with the checks of `try_send`:
    /// refused while storage is full or failed, or when the queue is full.
    /// The hub asks before it decides on a message, so that its pure core can
    /// refuse without effects; a permit it does not use frees the slot.
    pub fn try_reserve_append(&self) -> std::result::Result<AppendPermit<'_>, Refused> {
        match self.health.state() {
            StorageState::Failed => return Err(Refused::Failed),
            StorageState::Full => return Err(Refused::Full),
            StorageState::Ok => {}
        }
        self.tx
            .try_reserve()
            .map(AppendPermit)
            .map_err(|_| Refused::Busy)
    }

    /// Cluster mode: a handle with this one's health checks whose commands
    /// (appends, acks) go to the returned queue — the replicated log's
    /// proposer — instead of the writer. `queue` is its capacity; full →
    /// `Refused::Busy`, as for the write-ahead queue.
    pub fn replicated(&self, queue: usize) -> (StorageHandle, mpsc::Receiver<StorageCmd>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = StorageHandle {
            tx,
            health: self.health.clone(),
        };
        (handle, rx)
    }

    /// Queued commands not yet taken by the writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn health(&self) -> &Arc<StorageHealth> {
        &self.health
    }
}

/// One reserved slot on the write-ahead queue (see `try_reserve_append`).
pub struct AppendPermit<'a>(mpsc::Permit<'a, StorageCmd>);

impl AppendPermit<'_> {
    /// Queues the message, timed from now for the send→durable latency.
    pub fn append(self, msg: Arc<StoredMsg>) {
        self.0.send(StorageCmd::Append(msg, Instant::now()));
    }
}
