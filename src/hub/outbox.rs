//! The shell's side of sessions: where each session's frames go and how to
//! close it, and the per-turn outbox. The core decides who gets what; this
//! carries it out without ever waiting.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::state::Event;
use crate::protocol::{ClientId, CloseCode, Frame, RoomName, Username};

/// A session as the hub sees it: who it is, where its frames go, how to close it.
pub struct SessionLink {
    pub id: Uuid,
    /// The WebSocket connection: the session's own id on a single-room
    /// connection; shared by every subscription of a multi-room one, which
    /// the hub then counts and replaces as one (`max_sessions_per_user`,
    /// same client id, slow-reader eviction).
    pub conn: Uuid,
    pub user: Username,
    pub client: ClientId,
    pub room: RoomName,
    /// The refresh-token family of the access token it connected with.
    pub family: Option<Uuid>,
    /// Cluster mode: served here although this node is not its home (the
    /// loop shield, or placed with `from=`): never moved when homes move.
    pub away: bool,
    /// Bounded (the session queue), one item per hub turn per connection:
    /// every frame the connection gets in one turn, in any of its rooms,
    /// travels together, so a burst counts once. Full → the connection is
    /// evicted with 4002. A subscription's copy is the connection's queue.
    pub out_tx: mpsc::Sender<Vec<Frame>>,
    /// Set once to close the session with a code; the writer sends the Close frame.
    pub close_tx: watch::Sender<Option<CloseCode>>,
    /// A subscription of a multi-room connection: its frames are held back
    /// until [`Outbox::release`] puts its `subscribed` and `history` in front
    /// of them (the single-room writer gets its preamble first instead).
    pub held: bool,
}

/// Frames a held subscription may gather before its release (one history
/// read): beyond, it counts as a full queue (4002). A bound, never reached
/// by a reader that keeps up.
const HELD_MAX: usize = 4096;

/// One subscription (or the one session of a single-room connection).
struct Link {
    conn: Uuid,
    /// `Some` while held: its frames since its join, waiting for `release`.
    held: Option<Vec<Frame>>,
}

/// One WebSocket connection: its queue and its frames for this turn.
struct Conn {
    /// Bounded (the session queue), one item per hub turn per connection.
    out_tx: mpsc::Sender<Vec<Frame>>,
    close_tx: watch::Sender<Option<CloseCode>>,
    /// This turn's frames of every released session of the connection, in
    /// push order (so each session's own order is kept).
    frames: Vec<Frame>,
    /// Its sessions (subscriptions). A few per connection (at most
    /// `--max-rooms-per-connection`), so a list beats a set.
    sessions: Vec<Uuid>,
}

/// What became of a session's queue when the turn's frames went out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Refusal {
    /// Full: the session is too slow and gets evicted (4002).
    Full,
    /// Closed: its writer is gone; it is removed silently.
    Closed,
}

#[derive(Default)]
pub(super) struct Outbox {
    links: HashMap<Uuid, Link>,
    conns: HashMap<Uuid, Conn>,
    /// Connections with frames this turn, each once.
    dirty: Vec<Uuid>,
    /// Held sessions past `HELD_MAX`, each once.
    overfull: Vec<Uuid>,
}

impl Outbox {
    /// Keeps the session's channels (once per connection: its subscriptions
    /// share them); the rest of the link is the core's `Join`.
    pub(super) fn attach(&mut self, link: SessionLink) -> Event {
        let SessionLink {
            id,
            conn,
            user,
            client,
            room,
            family,
            away,
            out_tx,
            close_tx,
            held,
        } = link;
        let c = self.conns.entry(conn).or_insert_with(|| Conn {
            out_tx,
            close_tx,
            frames: Vec::new(),
            sessions: Vec::new(),
        });
        c.sessions.push(id);
        let held = held.then(Vec::new);
        self.links.insert(id, Link { conn, held });
        Event::Join {
            session: id,
            conn,
            user,
            client,
            room,
            family,
            away,
        }
    }

    /// Adds one shared frame to each session's frames for this turn.
    pub(super) fn push(&mut self, to: &[Uuid], frame: &Frame) {
        for id in to {
            let Some(link) = self.links.get_mut(id) else {
                continue;
            };
            match &mut link.held {
                Some(gathered) => {
                    gathered.push(frame.clone());
                    if gathered.len() == HELD_MAX + 1 {
                        self.overfull.push(*id);
                    }
                }
                None => {
                    let conn = link.conn;
                    self.add_to_conn(conn, [frame.clone()]);
                }
            }
        }
    }

    /// Appends frames to a connection's item of this turn.
    fn add_to_conn(&mut self, conn: Uuid, frames: impl IntoIterator<Item = Frame>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.frames.is_empty() {
                self.dirty.push(conn);
            }
            c.frames.extend(frames);
        }
    }

    /// Ends a subscription's hold: `first` (its `subscribed` and `history`)
    /// goes out ahead of what gathered meanwhile, at the end of this turn.
    pub(super) fn release(&mut self, id: Uuid, first: Vec<Frame>) {
        if let Some(link) = self.links.get_mut(&id) {
            let gathered = link.held.take().unwrap_or_default();
            let conn = link.conn;
            self.add_to_conn(conn, first.into_iter().chain(gathered));
        }
    }

    /// A session's last frame (`unsubscribed`), queued on its connection
    /// with this turn's other frames. Call it before the session's removal:
    /// nothing of its room can follow it then.
    pub(super) fn last(&mut self, id: Uuid, frame: Frame) {
        if let Some(link) = self.links.get(&id) {
            let conn = link.conn;
            self.add_to_conn(conn, [frame]);
        }
    }

    /// Forgets a session (its held frames with it), closing its connection
    /// with `close`. A closed connection's unsent frames go too; otherwise
    /// they still go out this turn (an `unsubscribed` after the last room).
    pub(super) fn remove(&mut self, id: Uuid, close: Option<CloseCode>) {
        let Some(link) = self.links.remove(&id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&link.conn) else {
            return;
        };
        c.sessions.retain(|s| *s != id);
        if let Some(code) = close {
            c.close_tx.send_replace(Some(code));
            c.frames.clear();
        }
        if c.sessions.is_empty() && c.frames.is_empty() {
            self.conns.remove(&link.conn);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.overfull.is_empty()
    }

    /// Ends a turn: each connection's frames go to its queue as ONE item,
    /// however many of its rooms were busy, never waiting. Returns the
    /// sessions whose queue refused them (one per connection when full: its
    /// eviction takes the whole connection; all of them when closed); the
    /// caller feeds those back to the core and flushes again.
    pub(super) fn flush(&mut self) -> Vec<(Uuid, Refusal)> {
        let mut refused: Vec<(Uuid, Refusal)> = self
            .overfull
            .drain(..)
            .filter(|id| self.links.contains_key(id))
            .map(|id| (id, Refusal::Full))
            .collect();
        for conn in self.dirty.drain(..) {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if c.frames.is_empty() {
                continue;
            }
            let sent = c.out_tx.try_send(std::mem::take(&mut c.frames));
            if c.sessions.is_empty() {
                // Its last session left this turn; nobody is left to refuse.
                self.conns.remove(&conn);
                continue;
            }
            match sent {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    refused.push((c.sessions[0], Refusal::Full));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    refused.extend(c.sessions.iter().map(|s| (*s, Refusal::Closed)));
                }
            }
        }
        refused
    }
}
