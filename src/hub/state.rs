//! The hub's state machine: every decision about rooms, sessions and messages,
//! in synchronous code that never awaits. Work leaves through `try_send` on
//! bounded queues; the loop in `mod.rs` only feeds commands in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::metrics::{Metrics, Out};
use crate::protocol::ErrorCode;
use crate::protocol::frames::{encode, encode_message, encode_retry};
use crate::protocol::{
    ClientId, CloseCode, Cursor, Frame, MsgKind, RoomName, ServerMsg, Status, StoredMsg, Username,
};
use crate::storage::{DurableMsg, Refused, StorageCmd, StorageEvent, StorageHandle};

/// Presence frames per room are coalesced to one per this interval.
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);
/// Typing frames forwarded per user and room: at most one per this interval (2/s).
pub const TYPING_INTERVAL: Duration = Duration::from_millis(500);
/// Presence lists at most this many names; `count` has the total.
const PRESENCE_MAX_USERS: usize = 1000;
/// Durable ids remembered in memory after their flush. Covers the moment
/// between a session's check of the on-disk index and the hub's own check.
const KNOWN_DURABLE_CAP: usize = 65_536;
/// What `unavailable` tells a client to wait before resending.
pub const RETRY_AFTER_MS: u64 = 100;

/// A session as the hub sees it: where its frames go and how to close it.
pub struct SessionLink {
    pub id: Uuid,
    pub user: Username,
    pub client: ClientId,
    pub room: RoomName,
    /// The refresh-token family of the access token it connected with.
    pub family: Option<Uuid>,
    /// Bounded (the session queue), one item per hub turn: every frame the
    /// session gets in one turn travels together, so a burst counts once.
    /// Full → the session is evicted with 4002.
    pub out_tx: mpsc::Sender<Vec<Frame>>,
    /// Set once to close the session with a code; the writer sends the Close frame.
    pub close_tx: watch::Sender<Option<CloseCode>>,
}

/// A message a session wants sent; the hub adds sender, room, time and cursor.
#[derive(Debug)]
pub struct NewMsg {
    pub id: Uuid,
    pub kind: MsgKind,
    pub target: Option<Username>,
    pub content: String,
    pub action: bool,
    /// The session found the target in the room's on-disk member list.
    pub target_known: bool,
}

/// What a joining session needs to build its `welcome` and `history`.
pub struct Joined {
    /// The newest cursor at the moment of joining: history goes up to it, the
    /// live stream starts after it.
    pub head: Cursor,
    /// This room's messages not yet on disk.
    pub pending: Vec<Arc<StoredMsg>>,
}

pub enum HubCmd {
    Join {
        link: SessionLink,
        reply: oneshot::Sender<Joined>,
    },
    Leave {
        session: Uuid,
    },
    Send {
        session: Uuid,
        msg: NewMsg,
    },
    Typing {
        session: Uuid,
        active: bool,
    },
    Who {
        session: Uuid,
    },
    /// A room's not-yet-durable messages, for an HTTP history query.
    Pending {
        room: RoomName,
        reply: oneshot::Sender<Vec<Arc<StoredMsg>>>,
    },
    /// Readiness probe: answered at once.
    Ping {
        reply: oneshot::Sender<()>,
    },
    /// Closes a user's sessions with 1008: all of them (account disabled), or
    /// those opened with one refresh-token family (logout, token reuse).
    Kick {
        user: Username,
        family: Option<Uuid>,
    },
}

struct Session {
    user: Username,
    client: ClientId,
    room: RoomName,
    family: Option<Uuid>,
    out_tx: mpsc::Sender<Vec<Frame>>,
    close_tx: watch::Sender<Option<CloseCode>>,
}

#[derive(Default)]
struct Room {
    /// Online users (sorted: presence lists them in order) → their sessions here.
    members: BTreeMap<Username, Vec<Uuid>>,
    presence_dirty: bool,
    presence_sent: Option<Instant>,
    typing_sent: HashMap<Username, Instant>,
    /// The latest state of a user whose typing frame was held back by the
    /// 2/s limit: sent when the interval ends, so a quick stop is not lost.
    typing_held: HashMap<Username, bool>,
}

struct Known {
    room: RoomName,
    sender: Username,
    durable: bool,
}

pub struct HubState {
    max_sessions_per_user: usize,
    sessions: HashMap<Uuid, Session>,
    /// Each user's sessions, oldest first.
    by_user: HashMap<Username, Vec<Uuid>>,
    rooms: HashMap<RoomName, Room>,
    /// Broadcast but not yet durable, per room, in cursor order.
    pending: HashMap<RoomName, VecDeque<Arc<StoredMsg>>>,
    /// Frames for each session in this turn, sent by `flush_outbox`.
    outbox: HashMap<Uuid, Vec<Frame>>,
    /// Ids in flight or recently made durable: idempotency without disk reads.
    known: HashMap<Uuid, Known>,
    known_durable: VecDeque<Uuid>,
    head: Cursor,
    storage: StorageHandle,
    metrics: Arc<Metrics>,
}

impl HubState {
    pub fn new(
        max_sessions_per_user: usize,
        head: Cursor,
        storage: StorageHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        HubState {
            max_sessions_per_user: max_sessions_per_user.max(1),
            sessions: HashMap::new(),
            by_user: HashMap::new(),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            outbox: HashMap::new(),
            known: HashMap::new(),
            known_durable: VecDeque::new(),
            head,
            storage,
            metrics,
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Applies one command. `now_ms` is wall-clock time for message timestamps.
    pub fn apply(&mut self, cmd: HubCmd, now: Instant, now_ms: u64) {
        match cmd {
            HubCmd::Join { link, reply } => {
                let room = link.room.clone();
                self.join(link);
                let pending = self
                    .pending
                    .get(&room)
                    .map(|q| q.iter().cloned().collect())
                    .unwrap_or_default();
                // A joiner that gave up waiting just leaves; its Leave follows.
                let _ = reply.send(Joined {
                    head: self.head,
                    pending,
                });
            }
            HubCmd::Leave { session } => self.remove_session(session, None),
            HubCmd::Send { session, msg } => self.send(session, msg, now_ms),
            HubCmd::Typing { session, active } => self.typing(session, active, now),
            HubCmd::Who { session } => {
                if let Some(room) = self.sessions.get(&session).map(|s| s.room.clone()) {
                    let frame = self.presence_frame(&room);
                    self.deliver(&[session], &frame, Out::Presence);
                }
            }
            HubCmd::Pending { room, reply } => {
                let _ = reply.send(
                    self.pending
                        .get(&room)
                        .map(|q| q.iter().cloned().collect())
                        .unwrap_or_default(),
                );
            }
            HubCmd::Ping { reply } => {
                let _ = reply.send(());
            }
            HubCmd::Kick { user, family } => {
                let ids: Vec<Uuid> = self.by_user.get(&user).cloned().unwrap_or_default();
                for id in ids {
                    if family.is_none()
                        || self.sessions.get(&id).is_some_and(|s| s.family == family)
                    {
                        self.metrics.evictions.with_label_values(&["revoked"]).inc();
                        self.remove_session(id, Some(CloseCode::Policy));
                    }
                }
            }
        }
    }

    pub fn apply_storage(&mut self, ev: StorageEvent) {
        match ev {
            StorageEvent::Durable(msgs) => {
                for m in msgs {
                    self.durable(m);
                }
            }
            StorageEvent::Failed(msgs) => {
                for m in msgs {
                    self.failed(m);
                }
            }
            StorageEvent::Receipt {
                id,
                room,
                sender,
                by,
                status,
            } => {
                let frame = encode(&ServerMsg::Receipt {
                    id: &id,
                    status: status.as_str(),
                    by: Some(by.as_str()),
                });
                let to = self.sessions_of(&room, &sender);
                self.deliver(&to, &frame, Out::Receipt);
            }
        }
    }

    fn join(&mut self, link: SessionLink) {
        let SessionLink {
            id,
            user,
            client,
            room,
            family,
            out_tx,
            close_tx,
        } = link;
        // Anti-zombie: the same (user, client id) replaces the live session.
        let replaced: Vec<Uuid> = self
            .by_user
            .get(&user)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|s| self.sessions.get(s).is_some_and(|s| s.client == client))
                    .collect()
            })
            .unwrap_or_default();
        let r = self.rooms.entry(room.clone()).or_default();
        let was_present = r.members.contains_key(&user);
        r.members.entry(user.clone()).or_default().push(id);
        r.presence_dirty = true;
        self.sessions.insert(
            id,
            Session {
                user: user.clone(),
                client,
                room: room.clone(),
                family,
                out_tx,
                close_tx,
            },
        );
        self.by_user.entry(user.clone()).or_default().push(id);
        for old in replaced {
            self.metrics
                .evictions
                .with_label_values(&["replaced"])
                .inc();
            self.remove_session(old, Some(CloseCode::Replaced));
        }
        // Over the per-user cap: the oldest sessions go.
        while let Some(ids) = self.by_user.get(&user) {
            if ids.len() <= self.max_sessions_per_user {
                break;
            }
            let oldest = ids[0];
            self.metrics
                .evictions
                .with_label_values(&["too_many_sessions"])
                .inc();
            self.remove_session(oldest, Some(CloseCode::Replaced));
        }
        if !was_present && self.sessions.contains_key(&id) {
            self.system_to_others(&room, &user, &format!("{user} joined"));
        }
    }

    /// Removes a session, closing it with `close` if given. A user's last
    /// session in a room leaving makes a `left` line and a presence update.
    fn remove_session(&mut self, id: Uuid, close: Option<CloseCode>) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if let Some(code) = close {
            s.close_tx.send_replace(Some(code));
        }
        if let Some(ids) = self.by_user.get_mut(&s.user) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_user.remove(&s.user);
            }
        }
        let Some(room) = self.rooms.get_mut(&s.room) else {
            return;
        };
        let mut user_left = false;
        if let Some(ids) = room.members.get_mut(&s.user) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                room.members.remove(&s.user);
                room.typing_sent.remove(&s.user);
                room.typing_held.remove(&s.user);
                user_left = true;
            }
        }
        if room.members.is_empty() {
            // Room state is freed with its last member; its log stays on disk.
            self.rooms.remove(&s.room);
            return;
        }
        if user_left {
            room.presence_dirty = true;
            self.system_to_others(&s.room, &s.user, &format!("{} left", s.user));
        }
    }

    fn send(&mut self, session: Uuid, msg: NewMsg, now_ms: u64) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (user, room) = (s.user.clone(), s.room.clone());
        let id_text = msg.id.to_string();
        if let Some(k) = self.known.get(&msg.id) {
            if k.sender == user && k.room == room {
                // An idempotent resend: nothing new is stored or delivered.
                if k.durable {
                    let f = encode(&ServerMsg::Receipt {
                        id: &msg.id,
                        status: Status::Saved.as_str(),
                        by: None,
                    });
                    self.deliver(&[session], &f, Out::Receipt);
                }
            } else {
                self.error_to(
                    session,
                    ErrorCode::Conflict,
                    "this id names another message",
                    Some(&id_text),
                );
            }
            return;
        }
        let target_online = msg.target.as_ref().is_some_and(|t| {
            self.rooms
                .get(&room)
                .is_some_and(|r| r.members.contains_key(t))
        });
        if msg.kind == MsgKind::Private && !(msg.target_known || target_online) {
            self.error_to(
                session,
                ErrorCode::NotFound,
                "that user has never joined this room",
                Some(&id_text),
            );
            return;
        }
        let cursor = self.head.next(now_ms);
        let stored = Arc::new(StoredMsg {
            id: msg.id,
            kind: msg.kind,
            room: room.clone(),
            sender: user.clone(),
            target: msg.target,
            content: msg.content,
            action: msg.action,
            ts_ms: cursor.ms,
            cursor,
        });
        // Queue full, disk nearly full, or storage failed: refused and not
        // broadcast, so that everything shown live is on its way to disk.
        if let Err(refused) = self
            .storage
            .try_send(StorageCmd::Append(stored.clone(), Instant::now()))
        {
            self.unavailable_to(&[session], refused, &id_text);
            return;
        }
        self.head = cursor;
        self.pending
            .entry(room.clone())
            .or_default()
            .push_back(stored.clone());
        self.known.insert(
            msg.id,
            Known {
                room: room.clone(),
                sender: user.clone(),
                durable: false,
            },
        );
        let frame = encode_message(&stored);
        let to = match (&stored.kind, &stored.target) {
            (MsgKind::Private, Some(t)) => {
                let mut to = self.sessions_of(&room, &user);
                if *t != user {
                    to.extend(self.sessions_of(&room, t));
                }
                to
            }
            _ => self
                .rooms
                .get(&room)
                .map(|r| r.members.values().flatten().copied().collect())
                .unwrap_or_default(),
        };
        self.deliver(
            &to,
            &frame,
            if stored.kind == MsgKind::Private {
                Out::Private
            } else {
                Out::Chat
            },
        );
        self.metrics.deliveries.inc_by(to.len() as u64);
    }

    /// A broadcast message that storage could not write: it is forgotten (no
    /// longer in history merges or the idempotency map, so the same id can be
    /// sent again) and its sender's sessions get `unavailable` with its id.
    fn failed(&mut self, m: DurableMsg) {
        if self.known.get(&m.id).is_some_and(|k| !k.durable) {
            self.known.remove(&m.id);
        }
        if let Some(q) = self.pending.get_mut(&m.room) {
            q.retain(|p| p.id != m.id);
            if q.is_empty() {
                self.pending.remove(&m.room);
            }
        }
        let to = self.sessions_of(&m.room, &m.sender);
        self.unavailable_to(&to, Refused::Failed, &m.id.to_string());
    }

    fn unavailable_to(&mut self, to: &[Uuid], why: Refused, id: &str) {
        let f = encode_retry(
            ErrorCode::Unavailable,
            why.message(),
            Some(id),
            why.retry_after_ms(),
        );
        self.metrics
            .errors_sent
            .with_label_values(&["unavailable"])
            .inc_by(to.len() as u64);
        self.deliver(to, &f, Out::Error);
    }

    fn durable(&mut self, m: DurableMsg) {
        if let Some(k) = self.known.get_mut(&m.id)
            && !k.durable
        {
            k.durable = true;
            self.known_durable.push_back(m.id);
            while self.known_durable.len() > KNOWN_DURABLE_CAP {
                if let Some(old) = self.known_durable.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
        if let Some(q) = self.pending.get_mut(&m.room) {
            // The writer reports in queue order, so this is almost always the front.
            if let Some(pos) = q.iter().position(|p| p.id == m.id) {
                q.remove(pos);
            }
            if q.is_empty() {
                self.pending.remove(&m.room);
            }
        }
        let f = encode(&ServerMsg::Receipt {
            id: &m.id,
            status: Status::Saved.as_str(),
            by: None,
        });
        let to = self.sessions_of(&m.room, &m.sender);
        self.deliver(&to, &f, Out::Receipt);
    }

    fn typing(&mut self, session: Uuid, active: bool, now: Instant) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (user, room_name) = (s.user.clone(), s.room.clone());
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        if room
            .typing_sent
            .get(&user)
            .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL)
        {
            room.typing_held.insert(user, active);
            return;
        }
        room.typing_sent.insert(user.clone(), now);
        room.typing_held.remove(&user);
        self.typing_to_others(&room_name, &user, active);
    }

    /// Every session in `room` that is not `user`'s.
    fn others_in(&self, room: &RoomName, user: &Username) -> Vec<Uuid> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter(|(u, _)| *u != user)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect()
    }

    fn typing_to_others(&mut self, room: &RoomName, user: &Username, active: bool) {
        let to = self.others_in(room, user);
        let f = encode(&ServerMsg::Typing {
            room: room.as_str(),
            sender: user.as_str(),
            active,
        });
        self.deliver(&to, &f, Out::Typing);
    }

    /// Sends due presence frames and held-back typing states; returns when the
    /// next one falls due, if any is waiting.
    pub fn flush_timers(&mut self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let mut typing_due = Vec::new();
        let mut next: Option<Instant> = None;
        for (name, room) in &mut self.rooms {
            for (user, active) in &room.typing_held {
                let at = room
                    .typing_sent
                    .get(user)
                    .map_or(now, |t| *t + TYPING_INTERVAL);
                if at <= now {
                    typing_due.push((name.clone(), user.clone(), *active));
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            for (_, user, _) in typing_due.iter().filter(|(r, _, _)| r == name) {
                room.typing_held.remove(user);
                room.typing_sent.insert(user.clone(), now);
            }
            if !room.presence_dirty {
                continue;
            }
            let at = room.presence_sent.map_or(now, |t| t + PRESENCE_INTERVAL);
            if at <= now {
                room.presence_dirty = false;
                room.presence_sent = Some(now);
                due.push(name.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for name in due {
            let frame = self.presence_frame(&name);
            let to: Vec<Uuid> = self
                .rooms
                .get(&name)
                .map(|r| r.members.values().flatten().copied().collect())
                .unwrap_or_default();
            self.deliver(&to, &frame, Out::Presence);
        }
        for (room, user, active) in typing_due {
            self.typing_to_others(&room, &user, active);
        }
        next
    }

    fn presence_frame(&self, room: &RoomName) -> Frame {
        let members = self.rooms.get(room).map(|r| &r.members);
        let users: Vec<&str> = members
            .map(|m| {
                m.keys()
                    .take(PRESENCE_MAX_USERS)
                    .map(Username::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let count = members.map_or(0, BTreeMap::len);
        encode(&ServerMsg::Presence {
            room: room.as_str(),
            users,
            count,
        })
    }

    fn system_to_others(&mut self, room: &RoomName, user: &Username, content: &str) {
        let to = self.others_in(room, user);
        let f = encode(&ServerMsg::System {
            room: room.as_str(),
            content,
        });
        self.deliver(&to, &f, Out::System);
    }

    fn error_to(&mut self, session: Uuid, code: ErrorCode, message: &str, id: Option<&str>) {
        self.metrics
            .errors_sent
            .with_label_values(&[code.as_str()])
            .inc();
        let f = encode(&ServerMsg::Error {
            code,
            message,
            id,
            retry_after_ms: None,
        });
        self.deliver(&[session], &f, Out::Error);
    }

    fn sessions_of(&self, room: &RoomName, user: &Username) -> Vec<Uuid> {
        self.rooms
            .get(room)
            .and_then(|r| r.members.get(user))
            .cloned()
            .unwrap_or_default()
    }

    /// Adds one shared frame to each session's outbox for this turn.
    fn deliver(&mut self, to: &[Uuid], frame: &Frame, kind: Out) {
        self.metrics.out(kind).inc_by(to.len() as u64);
        for id in to {
            if self.sessions.contains_key(id) {
                self.outbox.entry(*id).or_default().push(frame.clone());
            }
        }
    }

    /// Ends a turn: each session's frames go to its queue as one item. A full
    /// queue evicts that session (4002) and nobody else waits; the leave line
    /// that eviction causes goes out in the same call.
    pub fn flush_outbox(&mut self) {
        while !self.outbox.is_empty() {
            let mut gone = Vec::new();
            for (id, frames) in self.outbox.drain() {
                let Some(s) = self.sessions.get(&id) else {
                    continue;
                };
                match s.out_tx.try_send(frames) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.metrics.evictions.with_label_values(&["slow"]).inc();
                        gone.push((id, Some(CloseCode::Evicted)))
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push((id, None)),
                }
            }
            for (id, close) in gone {
                if close.is_some() {
                    tracing::info!(session = %id, "evicting a session whose queue is full");
                }
                self.remove_session(id, close);
            }
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&mut self, code: CloseCode) {
        let ids: Vec<Uuid> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove_session(id, Some(code));
        }
    }
}
