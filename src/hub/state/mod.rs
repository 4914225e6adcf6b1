//! The hub's pure core: every decision about rooms, sessions and messages.
//!
//! `HubState::apply(event, now) -> Effects` is a plain function of its state
//! and its input. It holds no channels, no storage handle and no metrics, and
//! it never reads a clock: the shell in `hub/mod.rs` feeds it events, carries
//! the returned `Effects` out (queues, closes, appends, counters) and feeds
//! back what happened out there (a session's queue was full or closed).
//!
//! By concern: `membership` (join, leave, kick, caps, eviction, shutdown),
//! `messages` (posts, durable/failed reports, receipts, the id cache),
//! `presence` (presence and typing, the timers).
//!
//! New kinds of input (the cluster's replicated log, gossip) are new `Event`
//! variants and a line in `apply`'s dispatch; their outputs fit `Effects`.

mod membership;
mod messages;
mod presence;
mod users;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use crate::metrics::{Eviction, Out};
use crate::protocol::ErrorCode;
use crate::protocol::frames::encode;
use crate::protocol::time::now_ms;
use crate::protocol::{
    ClientId, CloseCode, Cursor, Frame, MsgKind, RoomName, ServerMsg, StoredMsg, Username,
};
use crate::storage::{Refused, RoomRead, StorageEvent};

/// The time of an event: monotonic for timers, wall-clock ms for message
/// timestamps and cursors. Taken once per batch by the shell, made up by tests.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub ms: u64,
}

impl Now {
    pub fn read() -> Self {
        Now {
            at: Instant::now(),
            ms: now_ms(),
        }
    }
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
    /// Room members the content mentions (chat only; the session checked them).
    pub mentions: Vec<Username>,
}

/// What a joining session needs to build its `welcome` and `history`.
#[derive(Debug)]
pub struct Joined {
    /// The newest cursor at the moment of joining: history goes up to it, the
    /// live stream starts after it.
    pub head: Cursor,
    /// This room's messages not yet on disk.
    pub pending: Vec<Arc<StoredMsg>>,
}

/// Everything the core reacts to.
#[derive(Debug)]
pub enum Event {
    /// A session enters its room (the shell already holds its queue).
    Join {
        session: Uuid,
        /// Its connection (see `SessionLink::conn`).
        conn: Uuid,
        user: Username,
        client: ClientId,
        room: RoomName,
        /// The refresh-token family of the access token it connected with.
        family: Option<Uuid>,
        /// Served away from its home node (see `SessionLink::away`).
        away: bool,
    },
    /// The session ended by itself: removed without a close code.
    Leave {
        session: Uuid,
    },
    /// A `chat`/`private`. `storage` is the write-ahead queue's answer, asked
    /// by the shell before this event (it holds a reserved slot if `Ok`).
    Post {
        session: Uuid,
        msg: NewMsg,
        storage: Result<(), Refused>,
    },
    Typing {
        session: Uuid,
        active: bool,
    },
    /// Cluster mode: what another node's hub relayed (a session registered
    /// there, a typing state); see [`Relay`].
    Remote(Relay),
    /// Cluster mode: another node's users in a room, or that node gone; the
    /// room's presence is the union of the local users and these.
    Peers(PeerPresence),
    /// `/who`: the room's presence, to this session only.
    Who {
        session: Uuid,
    },
    /// Closes a user's sessions with 1008: all of them (account disabled), or
    /// those opened with one refresh-token family (logout, token reuse).
    Kick {
        user: Username,
        family: Option<Uuid>,
    },
    /// Cluster mode: these users' home moved to another node: their
    /// sessions here close with 1001 and reconnect there.
    Move {
        users: Vec<Username>,
    },
    /// What the storage writer reports: messages durable or failed, receipts
    /// that moved forward.
    Storage(StorageEvent),
    /// One frame to every connection of `user` here, once per connection
    /// (a multi-room connection gets it once, not once per subscription).
    ToUser {
        user: Username,
        frame: Frame,
        kind: Out,
    },
    /// Timers: due presence frames and held-back typing states.
    Tick,
    /// Closes every session with this code.
    Shutdown(CloseCode),
    /// The session's queue was full: closed with 4002.
    Evicted {
        session: Uuid,
    },
    /// The session's queue was closed (its writer is gone): removed silently.
    Gone {
        session: Uuid,
    },
}

pub use crate::protocol::{PeerPresence, Relay};

/// One frame for several sessions: encoded once, the bytes shared.
#[derive(Debug)]
pub struct Delivery {
    pub frame: Frame,
    pub to: Vec<Uuid>,
    pub kind: Out,
}

/// A session the core dropped; the shell closes it with `close`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub session: Uuid,
    pub close: Option<CloseCode>,
}

/// What the shell counts besides `frames_out` (which it counts per delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Eviction(Eviction),
    /// `n` error frames with this code.
    ErrorSent(ErrorCode, u64),
    /// Chat and private messages queued to recipients (fan-out).
    Deliveries(u64),
}

/// What one event asks the shell to do, in this order: append, remove,
/// deliver. The order does not matter for correctness: a removed session's
/// frames are dropped, and no delivery names a session already removed.
#[derive(Debug, Default)]
pub struct Effects {
    pub deliveries: Vec<Delivery>,
    /// The message to put on the write-ahead queue (through the slot the
    /// shell reserved for this `Post`). `None`: the reservation is dropped.
    pub append: Option<Arc<StoredMsg>>,
    pub removed: Vec<Removed>,
    pub counts: Vec<Count>,
    /// From `Tick`: when the next timer falls due, if any is waiting.
    pub next_timer: Option<Instant>,
    /// From `Join`: the reply to the joining session.
    pub joined: Option<Joined>,
    /// Cluster mode: for the other nodes.
    pub relay: Vec<Relay>,
    /// Cluster mode: rooms whose set of local USERS (not sessions) changed;
    /// the shell publishes each one's [`HubState::local_users`].
    pub local_users: Vec<RoomName>,
}

impl Effects {
    /// Adds one shared frame for `to` (nothing when `to` is empty).
    fn deliver(&mut self, to: Vec<Uuid>, frame: Frame, kind: Out) {
        if !to.is_empty() {
            self.deliveries.push(Delivery { frame, to, kind });
        }
    }
}

struct Session {
    /// Its connection: several sessions (subscriptions) may share one.
    conn: Uuid,
    user: Username,
    client: ClientId,
    room: RoomName,
    family: Option<Uuid>,
    /// Served away from its home node: not moved when homes move.
    away: bool,
    /// Wall-clock ms of the join: orders it against another node's session
    /// with the same (user, client) (see [`Relay::Joined`]).
    joined_ms: u64,
}

#[derive(Default)]
struct Room {
    /// Online users (sorted: presence lists them in order) → their sessions here.
    members: BTreeMap<Username, Vec<Uuid>>,
    presence_dirty: bool,
    presence_sent: Option<Instant>,
    /// Sessions that joined since the last tick: they get the list at the
    /// next one (the others get it only if it changed, and when the
    /// room's window allows: `presence::presence_window`).
    presence_joiners: Vec<Uuid>,
    /// Joiners that got the current list on their own since the last frame
    /// for everyone: that frame skips them (it would repeat it), unless the
    /// list changed again since (`Room::list_changed`).
    presence_served: Vec<Uuid>,
    typing_sent: HashMap<Username, Instant>,
    /// The latest state of a user whose typing frame was held back by the
    /// 2/s limit: sent when the interval ends, so a quick stop is not lost.
    typing_held: HashMap<Username, bool>,
}

pub struct HubState {
    max_sessions_per_user: usize,
    sessions: HashMap<Uuid, Session>,
    /// Each user's connections here and their sessions, oldest first.
    by_user: HashMap<Username, users::UserConns>,
    rooms: HashMap<RoomName, Room>,
    /// Broadcast but not yet durable, per room, in cursor order.
    pending: HashMap<RoomName, VecDeque<Arc<StoredMsg>>>,
    /// A CACHE of storage's message-id index, not the authority: ids in flight
    /// (not on disk yet, so storage cannot know them) or made durable lately.
    /// Sessions classify an id against storage first; this catches what
    /// storage cannot see yet and the moment between their check and ours.
    known: HashMap<Uuid, messages::Known>,
    /// Durable ids in `known`, oldest first, for the cap.
    known_durable: VecDeque<Uuid>,
    head: Cursor,
    /// Cluster mode: messages go through the replicated log; see `accept`.
    replicated: bool,
    /// Cluster mode: other nodes' users per room, by node (kept while no
    /// local session is in the room: a joiner sees them at once).
    peers: HashMap<RoomName, BTreeMap<String, Vec<Username>>>,
}

impl HubState {
    pub fn new(max_sessions_per_user: usize, head: Cursor) -> Self {
        HubState {
            max_sessions_per_user: max_sessions_per_user.max(1),
            sessions: HashMap::new(),
            by_user: HashMap::new(),
            rooms: HashMap::new(),
            pending: HashMap::new(),
            known: HashMap::new(),
            known_durable: VecDeque::new(),
            head,
            replicated: false,
            peers: HashMap::new(),
        }
    }

    /// Cluster mode: a post is proposed to the replicated log (the shell's
    /// append goes there) and shown only when its entry is committed.
    pub fn with_replicated_log(mut self) -> Self {
        self.replicated = true;
        self
    }

    /// Applies one event and says what to do about it.
    pub fn apply(&mut self, event: Event, now: Now) -> Effects {
        let mut fx = Effects::default();
        match event {
            Event::Join {
                session,
                conn,
                user,
                client,
                room,
                family,
                away,
            } => {
                let s = Session {
                    conn,
                    user,
                    client,
                    room,
                    family,
                    away,
                    joined_ms: now.ms,
                };
                self.join(session, s, &mut fx);
            }
            Event::Leave { session } | Event::Gone { session } => {
                self.remove_session(session, None, &mut fx)
            }
            Event::Evicted { session } => self.evict(session, &mut fx),
            Event::Post {
                session,
                msg,
                storage,
            } => self.post(session, msg, storage, now.ms, &mut fx),
            Event::Typing { session, active } => self.typing(session, active, now.at, &mut fx),
            Event::Remote(Relay::Joined {
                user,
                client,
                session,
                at_ms,
            }) => self.remote_kick(&user, &client, (at_ms, session), &mut fx),
            Event::Remote(Relay::Typing { room, user, active }) => {
                self.typing_here(&room, &user, active, &mut fx)
            }
            Event::Peers(p) => self.peer_presence(p),
            Event::Who { session } => self.who(session, &mut fx),
            Event::Kick { user, family } => self.kick(&user, family, &mut fx),
            Event::Move { users } => users.iter().for_each(|u| self.move_away(u, &mut fx)),
            Event::Storage(StorageEvent::Durable(msgs)) => {
                msgs.into_iter().for_each(|m| self.durable(m, &mut fx))
            }
            Event::Storage(StorageEvent::Committed(msgs)) => {
                msgs.into_iter().for_each(|m| self.committed(m, &mut fx))
            }
            Event::Storage(StorageEvent::Revoked { user, family }) => {
                self.kick(&user, family, &mut fx)
            }
            Event::Storage(StorageEvent::Installed { head }) => {
                // History changed under every session: they resume with `since`.
                self.head = self.head.max(head);
                self.close_all(CloseCode::GoingAway, &mut fx)
            }
            Event::Storage(StorageEvent::Failed(msgs)) => {
                msgs.into_iter().for_each(|m| self.failed(m, &mut fx))
            }
            Event::Storage(StorageEvent::Receipt {
                id,
                room,
                sender,
                by,
                status,
            }) => self.receipt(id, &room, &sender, &by, status, &mut fx),
            Event::ToUser { user, frame, kind } => {
                let to = self.one_per_connection(&user);
                fx.deliver(to, frame, kind)
            }
            Event::Storage(StorageEvent::ReadMoved { user, read }) => {
                self.read_moved(&user, &read, &mut fx)
            }
            Event::Tick => fx.next_timer = self.flush_timers(now.at, &mut fx),
            Event::Shutdown(code) => self.close_all(code, &mut fx),
        }
        fx
    }

    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A room's not-yet-durable messages, for history merges (a query, not an event).
    pub fn pending(&self, room: &RoomName) -> Vec<Arc<StoredMsg>> {
        self.pending
            .get(room)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every session of `user` in `room`.
    fn sessions_of(&self, room: &RoomName, user: &Username) -> Vec<Uuid> {
        self.rooms
            .get(room)
            .and_then(|r| r.members.get(user))
            .cloned()
            .unwrap_or_default()
    }

    /// Cluster mode: a read position moved in the log. Every node applies
    /// it; the one holding the user's connections (their home) shows it.
    fn read_moved(&self, user: &Username, read: &RoomRead, fx: &mut Effects) {
        let to = self.one_per_connection(user);
        let Some(cursor) = read.read_cursor.filter(|_| !to.is_empty()) else {
            return;
        };
        let frame = encode(&ServerMsg::Read {
            room: read.room.as_str(),
            cursor: cursor.to_string(),
            unread: read.unread,
            mentions: read.mentions,
        });
        fx.deliver(to, frame, Out::Read)
    }

    /// One session of each of `user`'s connections here, oldest first.
    fn one_per_connection(&self, user: &Username) -> Vec<Uuid> {
        self.by_user
            .get(user)
            .map(|u| {
                u.conns()
                    .iter()
                    .filter_map(|c| c.sessions.first().copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every session in `room`.
    fn everyone_in(&self, room: &RoomName) -> Vec<Uuid> {
        self.rooms
            .get(room)
            .map(|r| r.members.values().flatten().copied().collect())
            .unwrap_or_default()
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
}
