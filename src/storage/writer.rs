//! The storage writer: one task, fed by a bounded write-ahead queue, that applies
//! messages and receipts to sled in batches and flushes once per batch (group
//! commit). Only after that flush does it report the batch's ids as durable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MsgRef, Result, Store, encode, log_key, receipt_key};
use crate::metrics::Metrics;
use crate::protocol::{MsgKind, RoomName, Status, StoredMsg, Username};

/// Most commands taken per batch: bounds one batch's latency and memory.
const MAX_BATCH: usize = 1024;

pub enum StorageCmd {
    /// A message the hub accepted and is broadcasting.
    /// A message the hub accepted and is broadcasting, and when it did
    /// (for the send→durable latency metric).
    Append(Arc<StoredMsg>, Instant),
    /// Receipts from one recipient. Sent by the session straight to this queue:
    /// the message's own `Append` was queued before it was broadcast, so FIFO
    /// order guarantees it is applied before any ack for it.
    Ack(AckCmd),
}

pub struct AckCmd {
    pub by: Username,
    pub ids: Vec<Uuid>,
    pub status: Status,
}

/// A message that is now on disk.
#[derive(Clone, Debug)]
pub struct DurableMsg {
    pub id: Uuid,
    pub room: RoomName,
    pub sender: Username,
}

/// What the writer tells the hub after each flushed batch.
#[derive(Debug)]
pub enum StorageEvent {
    Durable(Vec<DurableMsg>),
    /// A recipient's status moved forward: route a `receipt` to the sender.
    Receipt {
        id: Uuid,
        room: RoomName,
        sender: Username,
        by: Username,
        status: Status,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct StorageWriterConfig {
    /// Write-ahead queue capacity (messages and ack batches).
    pub queue: usize,
}

/// The queue was full: the caller refuses the message with `unavailable`.
#[derive(Debug)]
pub struct StorageFull;

/// Handle on the writer task. Cloning shares the queue.
#[derive(Clone)]
pub struct StorageHandle {
    /// Full → the caller refuses the message with `unavailable` + `retry_after_ms`
    /// and does not broadcast it: what is broadcast is always on its way to disk.
    tx: mpsc::Sender<StorageCmd>,
}

pub struct StorageTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl StorageHandle {
    /// Starts the writer. Events go to `events_tx` (the hub); the writer awaits
    /// there, which is safe because the hub never waits on storage.
    pub fn spawn(
        store: Store,
        cfg: StorageWriterConfig,
        events_tx: mpsc::Sender<StorageEvent>,
        metrics: Arc<Metrics>,
    ) -> (Self, StorageTask) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(store, rx, events_tx, cancel.clone(), metrics));
        (StorageHandle { tx }, StorageTask { cancel, task })
    }

    pub fn try_send(&self, cmd: StorageCmd) -> std::result::Result<(), StorageFull> {
        self.tx.try_send(cmd).map_err(|_| StorageFull)
    }

    /// Queued commands not yet taken by the writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl StorageTask {
    /// Stops taking new commands, applies and flushes everything already queued, returns.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "storage writer task failed");
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<StorageCmd>,
    events_tx: mpsc::Sender<StorageEvent>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    loop {
        let n = tokio::select! {
            biased;
            _ = cancel.cancelled(), if !closing => {
                // Refuse new sends; what is already queued still comes out of recv_many.
                rx.close();
                closing = true;
                continue;
            }
            n = rx.recv_many(&mut buf, MAX_BATCH) => n,
        };
        if n == 0 {
            break;
        }
        metrics.storage_batch_size.observe(n as f64);
        let events = match store.apply_batch(&buf, &metrics) {
            Ok(ev) => ev,
            Err(e) => {
                metrics.storage_errors.inc();
                tracing::error!(error = %e, batch = n, "storage batch failed; its messages get no saved receipt");
                buf.clear();
                continue;
            }
        };
        let started = Instant::now();
        if !flush_with_retry(&store).await {
            metrics.storage_errors.inc();
            buf.clear();
            continue;
        }
        let flushed = Instant::now();
        metrics
            .storage_flush_seconds
            .observe((flushed - started).as_secs_f64());
        for cmd in buf.drain(..) {
            if let StorageCmd::Append(_, queued_at) = cmd {
                metrics
                    .durable_latency_seconds
                    .observe((flushed - queued_at).as_secs_f64());
            }
        }
        for ev in events {
            // The hub is gone only during shutdown, when receipts no longer matter.
            let _ = events_tx.send(ev).await;
        }
    }
    // Flush once more: membership and account writes made outside the queue.
    let _ = flush_with_retry(&store).await;
    tracing::debug!("storage writer drained and flushed");
}

async fn flush_with_retry(store: &Store) -> bool {
    for attempt in 0..3u64 {
        match store.flush().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, attempt, "flush failed");
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    false
}

impl Store {
    /// Applies one batch (not yet flushed) and returns what to report once it is durable.
    fn apply_batch(&self, cmds: &[StorageCmd], metrics: &Metrics) -> Result<Vec<StorageEvent>> {
        let mut durable = Vec::new();
        let mut receipts = Vec::new();
        let mut log = sled::Batch::default();
        let mut rooms: HashSet<&RoomName> = HashSet::new();
        let mut index = sled::Batch::default();
        let mut seen_in_batch = HashSet::new();
        let mut i = 0;
        while i < cmds.len() {
            // Appends are applied in runs so that an ack later in the batch sees them.
            while let Some(StorageCmd::Append(m, _)) = cmds.get(i) {
                i += 1;
                durable.push(DurableMsg {
                    id: m.id,
                    room: m.room.clone(),
                    sender: m.sender.clone(),
                });
                // Keyed by id: a message already stored (a resend that raced the
                // hub's in-memory check) is reported durable and written once.
                if !seen_in_batch.insert(m.id)
                    || self.inner.msgid_msgref.contains_key(m.id.as_bytes())?
                {
                    continue;
                }
                let r = MsgRef {
                    room: m.room.clone(),
                    cursor: m.cursor,
                    sender: m.sender.clone(),
                    kind: m.kind,
                    target: m.target.clone(),
                };
                index.insert(m.id.as_bytes(), encode(&r)?);
                let bytes = encode(&**m)?;
                metrics.messages_stored.inc();
                metrics.stored_bytes.inc_by(bytes.len() as u64);
                log.insert(log_key(&m.room, m.cursor), bytes);
                for k in super::views::view_keys(m) {
                    log.insert(k, &[]);
                }
                rooms.insert(&m.room);
            }
            // One batch for all rooms: sled pays per batch, not per byte.
            self.note_rooms(rooms.drain())?;
            self.inner.log.apply_batch(std::mem::take(&mut log))?;
            self.inner
                .msgid_msgref
                .apply_batch(std::mem::take(&mut index))?;
            while let Some(StorageCmd::Ack(a)) = cmds.get(i) {
                i += 1;
                for id in &a.ids {
                    if let Some(ev) = self.apply_ack(id, &a.by, a.status)? {
                        receipts.push(ev);
                    }
                }
            }
        }
        let mut events = Vec::with_capacity(1 + receipts.len());
        if !durable.is_empty() {
            events.push(StorageEvent::Durable(durable));
        }
        events.extend(receipts);
        Ok(events)
    }

    /// One recipient's receipt. Ignored (None) when PROTOCOL.md says so: unknown
    /// id, the sender's own message, a private message for someone else, a user
    /// who never joined the room, or a status that would move backwards.
    fn apply_ack(&self, id: &Uuid, by: &Username, status: Status) -> Result<Option<StorageEvent>> {
        let Some(r) = self.msgref(id)? else {
            return Ok(None);
        };
        if &r.sender == by {
            return Ok(None);
        }
        let allowed = match r.kind {
            MsgKind::Private => r.target.as_ref() == Some(by),
            MsgKind::Chat => self.was_member(&r.room, by)?,
        };
        if !allowed {
            return Ok(None);
        }
        let key = receipt_key(id, by);
        let old = self
            .inner
            .msgid_username_status
            .get(&key)?
            .and_then(|b| b.first().copied())
            .and_then(Status::from_u8);
        if old.is_some_and(|o| o >= status) {
            return Ok(None);
        }
        self.inner
            .msgid_username_status
            .insert(key, &[status as u8])?;
        if self.status_of(id)? < status {
            self.inner
                .msgid_status
                .insert(id.as_bytes(), &[status as u8])?;
        }
        Ok(Some(StorageEvent::Receipt {
            id: *id,
            room: r.room,
            sender: r.sender,
            by: by.clone(),
            status,
        }))
    }
}

impl StorageHandle {
    /// A handle whose queue the caller drains itself: for the hub's unit tests,
    /// which check what would be written without a writer task.
    pub fn detached(queue: usize) -> (Self, mpsc::Receiver<StorageCmd>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (StorageHandle { tx }, rx)
    }
}
