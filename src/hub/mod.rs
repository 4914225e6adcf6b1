//! The hub: one task that owns all room state. Sessions talk to it through
//! `HubHandle`; storage reports durable ids and receipts back to it.
//!
//! The loop takes commands in batches and applies them with the synchronous
//! `HubState`; the only timer is the next presence flush.

mod state;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use state::{HubCmd, HubState, Joined, NewMsg, RETRY_AFTER_MS, SessionLink};

use crate::error::InternalError;
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Cursor, RoomName, StoredMsg, time::now_ms};
use crate::storage::{StorageEvent, StorageHandle};

/// Commands taken per loop turn: bounds how long presence or shutdown can wait.
const MAX_BATCH: usize = 256;

#[derive(Clone)]
pub struct HubHandle {
    /// Bounded. Full → the sending session's reader waits, which pushes back on
    /// that client's socket; the hub itself never waits on anyone.
    tx: mpsc::Sender<HubCmd>,
}

pub struct HubTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

pub struct HubConfig {
    pub max_sessions_per_user: usize,
    pub queue: usize,
    pub metrics: Arc<Metrics>,
}

impl HubHandle {
    /// Starts the hub. `head` is the newest cursor on disk; new cursors follow it.
    pub fn spawn(
        cfg: HubConfig,
        head: Cursor,
        storage: StorageHandle,
        events_rx: mpsc::Receiver<StorageEvent>,
    ) -> (Self, HubTask) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let metrics = cfg.metrics.clone();
        let state = HubState::new(cfg.max_sessions_per_user, head, storage, cfg.metrics);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(state, rx, events_rx, cancel.clone(), metrics));
        (HubHandle { tx }, HubTask { cancel, task })
    }

    pub async fn send(&self, cmd: HubCmd) -> Result<(), InternalError> {
        self.tx.send(cmd).await.map_err(|_| InternalError::Stopped)
    }

    pub async fn join(&self, link: SessionLink) -> Result<Joined, InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Join { link, reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    pub async fn pending(&self, room: RoomName) -> Result<Vec<Arc<StoredMsg>>, InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Pending { room, reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    /// Commands waiting for the hub.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub async fn ping(&self) -> Result<(), InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Ping { reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    /// Removes a session; never waits (a session ending must not block on a busy hub
    /// during shutdown), so the Leave goes through a spawned send when the queue is full.
    pub fn leave(&self, session: Uuid) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            self.tx.try_send(HubCmd::Leave { session })
        {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }
}

impl HubTask {
    /// Closes every remaining session with 1001 and stops the loop. The hub's
    /// storage handle is dropped with it, so storage can then drain.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "hub task failed");
        }
    }
}

async fn run(
    mut state: HubState,
    mut rx: mpsc::Receiver<HubCmd>,
    mut events_rx: mpsc::Receiver<StorageEvent>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut cmds = Vec::with_capacity(MAX_BATCH);
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut next_presence: Option<Instant> = None;
    let mut storage_open = true;
    loop {
        let presence_at = next_presence.map(tokio::time::Instant::from_std);
        let turn = tokio::select! {
            // Storage first: `saved` receipts and freed pending slots are never starved.
            biased;
            n = events_rx.recv_many(&mut events, MAX_BATCH), if storage_open => {
                // 0: the writer stopped (shutdown); keep serving sessions until cancelled.
                storage_open = n > 0;
                let turn = Instant::now();
                for ev in events.drain(..) {
                    state.apply_storage(ev);
                }
                Some(turn)
            }
            n = rx.recv_many(&mut cmds, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                let (now, ms) = (Instant::now(), now_ms());
                for cmd in cmds.drain(..) {
                    state.apply(cmd, now, ms);
                }
                Some(now)
            }
            _ = sleep_until_opt(presence_at) => None,
            _ = cancel.cancelled() => break,
        };
        next_presence = state.flush_timers(Instant::now());
        state.flush_outbox();
        if let Some(started) = turn {
            metrics
                .hub_turn_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        metrics.rooms_active.set(state.room_count() as i64);
    }
    state.close_all(CloseCode::GoingAway);
    state.flush_outbox();
    tracing::debug!("hub stopped");
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
