//! The hub: one task that owns all room state. Sessions and HTTP handlers
//! talk to it through `HubHandle`'s typed methods; storage reports durable
//! ids and receipts back to it.
//!
//! Two halves. `state` is the pure core: `HubState::apply(event, now)`
//! returns `Effects` (frames for sessions, the message to append, sessions to
//! close, what to count, the next timer) and performs none of them. This file
//! is the shell: the task loop, the session links and per-turn outbox
//! (`outbox`), the write-ahead queue reservation and the metrics. Whatever
//! happens out there (a session queue full or closed) goes back into `apply`
//! as an event, so every decision stays in the core and its tests.

mod outbox;
mod state;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use outbox::SessionLink;
pub use state::{Joined, NewMsg, PeerPresence, Relay};

use crate::error::InternalError;
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Cursor, Frame, RoomName, StoredMsg, Username};
use crate::storage::{StorageEvent, StorageHandle};
use outbox::{Outbox, Refusal};
use state::{Count, Effects, Event, HubState, Now};

/// Commands taken per loop turn: bounds how long presence or shutdown can wait.
const MAX_BATCH: usize = 256;

/// What the handle sends the task. Private: callers use `HubHandle`'s methods.
enum HubCmd {
    Join {
        link: SessionLink,
        reply: oneshot::Sender<Joined>,
    },
    /// A held subscription's `subscribed` and `history`: sent ahead of what
    /// it gathered since its join, and from then on it gets its frames.
    Release { session: Uuid, first: Vec<Frame> },
    /// A subscription leaves; `last` (`unsubscribed`) is its final frame.
    Unsubscribe { session: Uuid, last: Frame },
    /// Everything else that is a core event as it is (`Leave`, `Typing`, …).
    Event(Event),
    /// A `Post` before admission: the shell reserves a storage slot first.
    Post { session: Uuid, msg: NewMsg },
    /// A room's not-yet-durable messages, for an HTTP history query.
    Pending {
        room: RoomName,
        reply: oneshot::Sender<Vec<Arc<StoredMsg>>>,
    },
    /// The users with a session served here as at home (cluster mode: who
    /// might have to move).
    Users {
        reply: oneshot::Sender<Vec<Username>>,
    },
    /// Readiness probe: answered at once.
    Ping { reply: oneshot::Sender<()> },
}

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
    /// Cluster mode: posts go to the replicated log (the storage handle given
    /// to `spawn` leads there) and are shown when committed.
    pub replicated: bool,
    /// Cluster mode: what the other nodes must hear (kicks, typing). Bounded;
    /// full → that relay is dropped (logged): the hub never waits, and a lost
    /// typing state is refreshed by the next, a lost kick by the client's
    /// next reconnect.
    pub relay: Option<mpsc::Sender<Relay>>,
    /// Cluster mode: told a room's local users whenever that set changes
    /// (the cluster gossips them). Called on the hub's task: it must not
    /// block (the cluster's takes a short lock and wakes its publisher).
    pub presence: Option<PresenceSink>,
}

/// Where the hub reports a room's local users (sorted; empty: none left).
pub type PresenceSink = Arc<dyn Fn(RoomName, Vec<Username>) + Send + Sync>;

impl HubHandle {
    /// Starts the hub. `head` is the newest cursor on disk; new cursors follow it.
    pub fn spawn(
        cfg: HubConfig,
        head: Cursor,
        storage: StorageHandle,
        events_rx: mpsc::Receiver<StorageEvent>,
    ) -> (Self, HubTask) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let shell = Shell {
            state: if cfg.replicated {
                HubState::new(cfg.max_sessions_per_user, head).with_replicated_log()
            } else {
                HubState::new(cfg.max_sessions_per_user, head)
            },
            outbox: Outbox::default(),
            storage,
            metrics: cfg.metrics,
            relay: cfg.relay,
            presence: cfg.presence,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(shell, rx, events_rx, cancel.clone()));
        (HubHandle { tx }, HubTask { cancel, task })
    }

    async fn send(&self, cmd: HubCmd) -> Result<(), InternalError> {
        self.tx.send(cmd).await.map_err(|_| InternalError::Stopped)
    }

    pub async fn join(&self, link: SessionLink) -> Result<Joined, InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Join { link, reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    /// Ends the hold of a subscription joined with `SessionLink::held`.
    pub async fn release(&self, session: Uuid, first: Vec<Frame>) -> Result<(), InternalError> {
        self.send(HubCmd::Release { session, first }).await
    }

    /// A subscription leaves its room like a closing session; `last` is
    /// queued after its final frame, so nothing of the room follows it.
    pub async fn unsubscribe(&self, session: Uuid, last: Frame) -> Result<(), InternalError> {
        self.send(HubCmd::Unsubscribe { session, last }).await
    }

    /// Sends a `chat` or `private`: broadcast once storage took it, or
    /// refused with `unavailable` to this session only.
    pub async fn post(&self, session: Uuid, msg: NewMsg) -> Result<(), InternalError> {
        self.send(HubCmd::Post { session, msg }).await
    }

    pub async fn typing(&self, session: Uuid, active: bool) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Typing { session, active }))
            .await
    }

    /// Cluster mode: what another node relayed (a session registered there
    /// closes older ones with the same (user, client) here; a typing state).
    pub async fn remote(&self, relay: Relay) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Remote(relay))).await
    }

    /// Cluster mode: another node's users in a room (or that node gone).
    pub async fn peers(&self, p: PeerPresence) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Peers(p))).await
    }

    /// One frame to every connection of `user` on this node, once per
    /// connection (a user's sessions are all on their home node).
    pub async fn to_user(
        &self,
        user: Username,
        frame: Frame,
        kind: crate::metrics::Out,
    ) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::ToUser { user, frame, kind }))
            .await
    }

    /// The room's presence, to this session only.
    pub async fn who(&self, session: Uuid) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Who { session })).await
    }

    /// Closes `user`'s sessions with 1008: all of them (`family: None`, the
    /// account was disabled) or those of one refresh-token family.
    pub async fn kick(&self, user: Username, family: Option<Uuid>) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Kick { user, family })).await
    }

    /// The users with a session on this node served as at home (not
    /// `SessionLink::away`).
    pub async fn homed_users(&self) -> Result<Vec<Username>, InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Users { reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    /// Cluster mode: `users`' home moved to another node; their sessions
    /// here served as at home close with 1001 (their clients reconnect
    /// there with `since`).
    pub async fn move_users(&self, users: Vec<Username>) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Move { users })).await
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

    /// Closes every session with 1001 (cluster mode: this node lost its
    /// majority, and its clients should reconnect to another node).
    pub async fn close_all(&self) -> Result<(), InternalError> {
        self.send(HubCmd::Event(Event::Shutdown(CloseCode::GoingAway)))
            .await
    }

    pub async fn ping(&self) -> Result<(), InternalError> {
        let (reply, rx) = oneshot::channel();
        self.send(HubCmd::Ping { reply }).await?;
        rx.await.map_err(|_| InternalError::Stopped)
    }

    /// Removes a session; never waits (a session ending must not block on a busy hub
    /// during shutdown), so the Leave goes through a spawned send when the queue is full.
    pub fn leave(&self, session: Uuid) {
        let cmd = HubCmd::Event(Event::Leave { session });
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
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

/// The effects side: owns what the core must not (channels, storage, metrics).
struct Shell {
    state: HubState,
    outbox: Outbox,
    storage: StorageHandle,
    metrics: Arc<Metrics>,
    relay: Option<mpsc::Sender<Relay>>,
    presence: Option<PresenceSink>,
}

impl Shell {
    fn command(&mut self, cmd: HubCmd, now: Now) {
        match cmd {
            HubCmd::Join { link, reply } => {
                let join = self.outbox.attach(link);
                let mut fx = self.state.apply(join, now);
                // A joiner that gave up waiting just leaves; its Leave follows.
                if let Some(joined) = fx.joined.take() {
                    let _ = reply.send(joined);
                }
                self.carry_out(fx);
            }
            HubCmd::Release { session, first } => self.outbox.release(session, first),
            HubCmd::Unsubscribe { session, last } => {
                // Before the removal, with the connection's other frames of
                // this turn: nothing of the room can follow it then.
                self.outbox.last(session, last);
                self.event(Event::Leave { session }, now);
            }
            HubCmd::Post { session, msg } => self.post(session, msg, now),
            HubCmd::Event(ev) => self.event(ev, now),
            HubCmd::Pending { room, reply } => {
                let _ = reply.send(self.state.pending(&room));
            }
            HubCmd::Users { reply } => {
                let _ = reply.send(self.state.homed_users());
            }
            HubCmd::Ping { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Reserves the message's slot on the write-ahead queue BEFORE the core
    /// decides, so that the core can refuse without effects; the slot is used
    /// only if the core appends, and is freed otherwise.
    fn post(&mut self, session: Uuid, msg: NewMsg, now: Now) {
        let permit = self.storage.try_reserve_append();
        let storage = permit.as_ref().map(|_| ()).map_err(|r| *r);
        let mut fx = self.state.apply(
            Event::Post {
                session,
                msg,
                storage,
            },
            now,
        );
        // The core appends only when admitted, so the permit is there.
        if let (Some(m), Ok(p)) = (fx.append.take(), permit) {
            p.append(m);
        }
        self.carry_out(fx);
    }

    fn event(&mut self, ev: Event, now: Now) {
        let fx = self.state.apply(ev, now);
        self.carry_out(fx);
    }

    /// Counts, removals and deliveries of one event; appends are the caller's.
    fn carry_out(&mut self, fx: Effects) {
        for c in fx.counts {
            match c {
                Count::Eviction(why) => self.metrics.eviction(why).inc(),
                Count::ErrorSent(code, n) => self.metrics.error_sent(code).inc_by(n),
                Count::Deliveries(n) => self.metrics.deliveries.inc_by(n),
            }
        }
        for r in fx.removed {
            self.outbox.remove(r.session, r.close);
        }
        for d in fx.deliveries {
            self.metrics.out(d.kind).inc_by(d.to.len() as u64);
            self.outbox.push(&d.to, &d.frame);
        }
        if let Some(tx) = &self.relay {
            for r in fx.relay {
                if let Err(e) = tx.try_send(r) {
                    tracing::warn!(error = %e, "the cluster relay queue is full; dropped one");
                }
            }
        }
        if let Some(sink) = &self.presence {
            for room in fx.local_users {
                let users = self.state.local_users(&room);
                sink(room, users);
            }
        }
    }

    /// Ends a turn: a full queue evicts that session (4002) and nobody else
    /// waits; the `left` line that causes goes out in the same call.
    fn flush(&mut self, now: Now) {
        while !self.outbox.is_empty() {
            for (session, refusal) in self.outbox.flush() {
                let ev = match refusal {
                    Refusal::Full => {
                        tracing::info!(session = %session, "evicting a session whose queue is full");
                        Event::Evicted { session }
                    }
                    Refusal::Closed => Event::Gone { session },
                };
                self.event(ev, now);
                // Gone from the core either way; its channels go too.
                self.outbox.remove(session, None);
            }
        }
    }
}

async fn run(
    mut shell: Shell,
    mut rx: mpsc::Receiver<HubCmd>,
    mut events_rx: mpsc::Receiver<StorageEvent>,
    cancel: CancellationToken,
) {
    let mut cmds = Vec::with_capacity(MAX_BATCH);
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut next_timer: Option<Instant> = None;
    let mut storage_open = true;
    loop {
        let timer_at = next_timer.map(tokio::time::Instant::from_std);
        let turn = tokio::select! {
            // Storage first: `saved` receipts and freed pending slots are never starved.
            biased;
            n = events_rx.recv_many(&mut events, MAX_BATCH), if storage_open => {
                // 0: the writer stopped (shutdown); keep serving sessions until cancelled.
                storage_open = n > 0;
                let now = Now::read();
                for ev in events.drain(..) {
                    shell.event(Event::Storage(ev), now);
                }
                Some(now.at)
            }
            n = rx.recv_many(&mut cmds, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                let now = Now::read();
                for cmd in cmds.drain(..) {
                    shell.command(cmd, now);
                }
                Some(now.at)
            }
            _ = sleep_until_opt(timer_at) => None,
            _ = cancel.cancelled() => break,
        };
        let now = Now::read();
        let mut fx = shell.state.apply(Event::Tick, now);
        next_timer = fx.next_timer.take();
        shell.carry_out(fx);
        shell.flush(now);
        if let Some(started) = turn {
            shell
                .metrics
                .hub_turn_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        shell
            .metrics
            .rooms_active
            .set(shell.state.room_count() as i64);
    }
    let now = Now::read();
    shell.event(Event::Shutdown(CloseCode::GoingAway), now);
    shell.flush(now);
    tracing::debug!("hub stopped");
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
