//! The storage writer: one task, fed by a bounded write-ahead queue, that applies
//! messages and receipts to sled in batches and flushes once per batch (group
//! commit). Only after that flush does it report the batch's ids as durable.
//!
//! Before each batch, and every `SPACE_CHECK_EVERY`, it checks free space on
//! the data directory's filesystem (`health.rs`). A batch that sled fails is
//! reported to the hub as `Failed`, storage turns `Failed` for good, and the
//! server stops: sled keeps such an error, so only a restart recovers.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::health::{SpaceGuard, StorageHealth, StorageState};
use super::ids::IdUse;
use super::queue::{DurableMsg, StorageCmd, StorageEvent, StorageHandle};
use super::{MsgRef, Result, Store, encode, log_key, receipt_key};
use crate::error::InternalError;
use crate::metrics::Metrics;
use crate::protocol::{MsgKind, RoomName, Status, StoredMsg, Username};

/// Most commands taken per batch: bounds one batch's latency and memory.
const MAX_BATCH: usize = 1024;
/// Group commits whose flush may be under way at once. With one, a message
/// that arrives during a flush waits for it to end and then for a whole next
/// one; with two, it is applied at once and its flush starts right away,
/// while the previous one finishes (the disk merges overlapping fsyncs).
/// More would only queue at the disk.
const MAX_IN_FLIGHT: usize = 2;
/// How often free space is checked while no batch comes: a full node notices
/// freed space (and an idle one a filling disk) within this time.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct StorageWriterConfig {
    /// Write-ahead queue capacity (messages and ack batches).
    pub queue: usize,
    /// Whose filesystem the free-space guard watches.
    pub data_dir: PathBuf,
    /// Under this many free bytes storage is `Full`; 0 turns the guard off.
    pub min_free_bytes: u64,
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
        Self::spawn_with(store, cfg, events_tx, metrics, None)
    }

    /// `spawn`, with every flush first taking a permit from `gate`: a test
    /// holds flushes back to see what the writer does meanwhile.
    #[cfg(test)]
    pub(super) fn spawn_gated(
        store: Store,
        cfg: StorageWriterConfig,
        events_tx: mpsc::Sender<StorageEvent>,
        metrics: Arc<Metrics>,
        gate: Arc<Semaphore>,
    ) -> (Self, StorageTask) {
        Self::spawn_with(store, cfg, events_tx, metrics, Some(gate))
    }

    fn spawn_with(
        store: Store,
        cfg: StorageWriterConfig,
        events_tx: mpsc::Sender<StorageEvent>,
        metrics: Arc<Metrics>,
        flush_gate: Option<Arc<Semaphore>>,
    ) -> (Self, StorageTask) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let cancel = CancellationToken::new();
        let health = StorageHealth::new();
        let mut writer = Writer {
            store,
            events_tx,
            metrics,
            health: health.clone(),
            guard: SpaceGuard::new(cfg.data_dir, cfg.min_free_bytes),
            flush_gate,
            spare: Vec::with_capacity(MAX_IN_FLIGHT),
        };
        // Before the first message: a node started on a full disk is not ready.
        writer.check_space();
        let task = tokio::spawn(run(writer, rx, cancel.clone()));
        (StorageHandle { tx, health }, StorageTask { cancel, task })
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

struct Writer {
    store: Store,
    events_tx: mpsc::Sender<StorageEvent>,
    metrics: Arc<Metrics>,
    health: Arc<StorageHealth>,
    guard: SpaceGuard,
    /// Tests only (`spawn_gated`): each flush waits for a permit.
    flush_gate: Option<Arc<Semaphore>>,
    /// Emptied batch buffers of finished group commits, reused so a commit
    /// does not allocate a fresh `MAX_BATCH` buffer (at most `MAX_IN_FLIGHT`).
    spare: Vec<Vec<StorageCmd>>,
}

/// What a batch wrote, counted only once its flush succeeded.
pub(super) struct Applied {
    pub(super) events: Vec<StorageEvent>,
    pub(super) stored: u64,
    pub(super) bytes: u64,
    /// Appended ids written now (not already stored).
    pub(super) fresh: HashSet<Uuid>,
}

/// A group commit applied to sled whose flush is under way (see `MAX_IN_FLIGHT`).
struct InFlight {
    cmds: Vec<StorageCmd>,
    applied: Applied,
    started: Instant,
    /// The flush, on its own task: sled's `flush_async` runs it on sled's
    /// threads, and the writer meanwhile applies the next batch.
    flush: JoinHandle<Result<()>>,
}

/// The oldest flush under way, or never when none is.
async fn oldest(in_flight: &mut VecDeque<InFlight>) -> Result<()> {
    match in_flight.front_mut() {
        Some(g) => (&mut g.flush).await.unwrap_or_else(|e| Err(e.into())),
        None => std::future::pending().await,
    }
}

async fn run(mut w: Writer, mut rx: mpsc::Receiver<StorageCmd>, cancel: CancellationToken) {
    let mut buf = Vec::with_capacity(MAX_BATCH);
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(MAX_IN_FLIGHT);
    let (mut closing, mut drained) = (false, false);
    let mut space_tick = tokio::time::interval(SPACE_CHECK_EVERY);
    space_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !(drained && in_flight.is_empty()) {
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if !closing => {
                // Refuse new sends; what is already queued still comes out of recv_many.
                rx.close();
                closing = true;
            }
            // Reported in the order they were applied (FIFO): a batch is
            // reported only after its own flush, which began after it was applied.
            r = oldest(&mut in_flight), if !in_flight.is_empty() => {
                if let Some(g) = in_flight.pop_front() {
                    w.finish(g, r).await;
                }
            }
            // With every flush slot taken, commands gather on the queue and
            // make the next group commit bigger.
            n = rx.recv_many(&mut buf, MAX_BATCH), if !drained && in_flight.len() < MAX_IN_FLIGHT => {
                if n == 0 {
                    drained = true;
                    continue;
                }
                // Only changes what is accepted next: this batch was accepted, so it is
                // written (the watermark leaves room for it).
                w.check_space();
                if let Some(g) = w.start(&mut buf).await {
                    in_flight.push_back(g);
                }
            }
            _ = space_tick.tick() => w.check_space(),
        }
    }
    if w.health.state() != StorageState::Failed {
        // Flush once more: membership and account writes made outside the queue.
        if let Err(e) = flush_with_retry(&w.store).await {
            w.metrics.storage_errors.inc();
            tracing::error!(error = %e, "final flush failed");
        }
    }
    tracing::debug!("storage writer drained and flushed");
}

impl Writer {
    /// Updates `Ok` ↔ `Full` from the free space on the data directory's filesystem.
    fn check_space(&mut self) {
        let full_now = self.health.state() == StorageState::Full;
        let Some((full, free)) = self.guard.check(full_now) else {
            return;
        };
        self.metrics.storage_free_bytes.set(free as i64);
        if full == full_now || !self.health.set_full(full) {
            return;
        }
        let min_free = self.guard.min_free();
        if full {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = min_free,
                "storage full: free space under --min-free-mb; refusing new messages until space is freed"
            );
        } else {
            tracing::info!(
                free_bytes = free,
                min_free_bytes = min_free,
                "storage has free space again; accepting messages"
            );
        }
        self.metrics.storage_state.set(self.health.state() as i64);
    }

    /// Applies one batch and starts its flush; `None` when it was not
    /// applied (storage failed: the batch is reported failed now).
    async fn start(&mut self, buf: &mut Vec<StorageCmd>) -> Option<InFlight> {
        if self.health.state() == StorageState::Failed {
            // sled keeps a failed state: nothing more is written before a restart.
            let failed = failed_msgs(buf.drain(..));
            self.report(StorageEvent::Failed(failed)).await;
            return None;
        }
        self.metrics.storage_batch_size.observe(buf.len() as f64);
        let started = Instant::now();
        match self.store.apply_batch(buf) {
            Ok(applied) => {
                let store = self.store.clone();
                // Started after the apply: sled's flush covers every write made before it.
                let gate = self.flush_gate.clone();
                let flush = tokio::spawn(async move {
                    if let Some(g) = gate
                        && let Ok(p) = g.acquire().await
                    {
                        p.forget();
                    }
                    flush_with_retry(&store).await
                });
                let next = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(MAX_BATCH));
                let cmds = std::mem::replace(buf, next);
                Some(InFlight {
                    cmds,
                    applied,
                    started,
                    flush,
                })
            }
            Err(e) => {
                self.fail(e, buf).await;
                None
            }
        }
    }

    /// Reports a group commit once its flush ended: durable, or failed.
    async fn finish(&mut self, mut g: InFlight, flushed: Result<()>) {
        if let Err(e) = flushed {
            return self.fail(e, &mut g.cmds).await;
        }
        let flushed = Instant::now();
        let m = &self.metrics;
        m.storage_flush_seconds
            .observe((flushed - g.started).as_secs_f64());
        // Counted now, not when applied: these count what is on disk.
        m.messages_stored.inc_by(g.applied.stored);
        m.stored_bytes.inc_by(g.applied.bytes);
        for cmd in g.cmds.drain(..) {
            if let StorageCmd::Append(_, queued_at) = cmd {
                m.durable_latency_seconds
                    .observe((flushed - queued_at).as_secs_f64());
            }
        }
        if self.spare.len() < MAX_IN_FLIGHT {
            self.spare.push(std::mem::take(&mut g.cmds));
        }
        for ev in g.applied.events {
            self.report(ev).await;
        }
    }

    /// A batch sled refused: storage is `Failed` (the server stops on it), and
    /// the batch's messages go back to the hub as not stored. Its receipts are
    /// dropped: recipients ack again when they see the messages after a restart.
    async fn fail(&mut self, e: InternalError, buf: &mut Vec<StorageCmd>) {
        self.metrics.storage_errors.inc();
        self.health.fail(e.to_string());
        self.metrics.storage_state.set(StorageState::Failed as i64);
        let failed = failed_msgs(buf.drain(..));
        tracing::debug!(error = %e, messages = failed.len(), "storage batch failed");
        // The hub hears of the batch before the server starts to stop, so its
        // senders can still get `unavailable` before their sessions close.
        self.report(StorageEvent::Failed(failed)).await;
        self.health.announce();
    }

    async fn report(&self, ev: StorageEvent) {
        if matches!(&ev, StorageEvent::Durable(v) | StorageEvent::Failed(v) if v.is_empty()) {
            return;
        }
        // The hub is gone only during shutdown, when receipts no longer matter
        // (and a failed message's sender, having seen no `saved`, resends it).
        let _ = self.events_tx.send(ev).await;
    }
}

fn failed_msgs(cmds: impl Iterator<Item = StorageCmd>) -> Vec<DurableMsg> {
    cmds.filter_map(|c| match c {
        StorageCmd::Append(m, _) => Some(DurableMsg {
            id: m.id,
            room: m.room.clone(),
            sender: m.sender.clone(),
        }),
        StorageCmd::Ack(_) | StorageCmd::Read(_) | StorageCmd::Member { .. } => None,
    })
    .collect()
}

/// Flushes, retrying twice: a flush error that is not sticky may pass.
async fn flush_with_retry(store: &Store) -> Result<()> {
    let mut last = None;
    for attempt in 0..3u64 {
        match store.flush().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "flush failed");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
    Err(last.unwrap_or(InternalError::Stopped))
}

impl Store {
    /// Applies one batch (not yet flushed) and returns what to report once it is durable.
    pub(super) fn apply_batch(&self, cmds: &[StorageCmd]) -> Result<Applied> {
        let (mut stored, mut bytes_total) = (0u64, 0u64);
        let mut durable = Vec::new();
        let mut receipts = Vec::new();
        let mut log = sled::Batch::default();
        let mut rooms: HashSet<&RoomName> = HashSet::new();
        let mut index = sled::Batch::default();
        let mut seen_in_batch = HashSet::new();
        let mut fresh = HashSet::new();
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
                if !seen_in_batch.insert(m.id) || !self.id_is_fresh(m)? {
                    continue;
                }
                fresh.insert(m.id);
                let r = MsgRef {
                    room: m.room.clone(),
                    cursor: m.cursor,
                    sender: m.sender.clone(),
                    kind: m.kind,
                    target: m.target.clone(),
                };
                index.insert(m.id.as_bytes(), encode(&r)?);
                let bytes = encode(&**m)?;
                stored += 1;
                bytes_total += bytes.len() as u64;
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
            // What follows until the next append, in order: a member record
            // before an ack or a read in the same batch is seen by them.
            while let Some(c) = cmds.get(i) {
                match c {
                    StorageCmd::Append(..) => break,
                    StorageCmd::Ack(a) => {
                        for id in &a.ids {
                            if let Some(ev) = self.apply_ack(id, &a.by, a.status)? {
                                receipts.push(ev);
                            }
                        }
                    }
                    StorageCmd::Read(r) => receipts.extend(self.apply_read(r)?),
                    StorageCmd::Member { room, user } => self.remember_member(room, user)?,
                }
                i += 1;
            }
        }
        let mut events = Vec::with_capacity(1 + receipts.len());
        if !durable.is_empty() {
            events.push(StorageEvent::Durable(durable));
        }
        events.extend(receipts);
        Ok(Applied {
            events,
            stored,
            bytes: bytes_total,
            fresh,
        })
    }

    /// Whether an appended message's id is new on disk (ids.rs has the rule).
    /// The hub let only fresh ids through, from its cache of the index; a
    /// resend that raced it is not written again. An index record that does
    /// not decode names a message too: it is not overwritten.
    fn id_is_fresh(&self, m: &StoredMsg) -> Result<bool> {
        match self.classify_id(&m.id, &m.sender, &m.room) {
            Ok(class) => Ok(class == IdUse::Fresh),
            Err(InternalError::Decode(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One recipient's receipt. Ignored (None) when PROTOCOL.md says so: unknown
    /// id, the sender's own message, a private message for someone else, a user
    /// who never joined the room, or a status that would move backwards.
    fn apply_ack(&self, id: &Uuid, by: &Username, status: Status) -> Result<Option<StorageEvent>> {
        let r = match self.msgref(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            // One unreadable index record must not fail the batch, and with it
            // the node: only this receipt is lost.
            Err(InternalError::Decode(e)) => {
                tracing::warn!(error = %e, %id, "unreadable message index record; receipt ignored");
                return Ok(None);
            }
            Err(e) => return Err(e),
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

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
