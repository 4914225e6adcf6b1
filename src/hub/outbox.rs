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
    /// Bounded (the session queue), one item per hub turn: every frame the
    /// session gets in one turn travels together, so a burst counts once.
    /// Full → the session is evicted with 4002.
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

struct Link {
    out_tx: mpsc::Sender<Vec<Frame>>,
    close_tx: watch::Sender<Option<CloseCode>>,
    /// Frames for this session in this turn (or, while held, since its join).
    frames: Vec<Frame>,
    held: bool,
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
    /// Sessions with frames this turn, each once.
    dirty: Vec<Uuid>,
}

impl Outbox {
    /// Keeps the session's channels; the rest of the link is the core's `Join`.
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
        self.links.insert(
            id,
            Link {
                out_tx,
                close_tx,
                frames: Vec::new(),
                held,
            },
        );
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
            if let Some(link) = self.links.get_mut(id) {
                if link.frames.is_empty() {
                    self.dirty.push(*id);
                }
                link.frames.push(frame.clone());
            }
        }
    }

    /// Ends a subscription's hold: `first` (its `subscribed` and `history`)
    /// goes out ahead of what gathered meanwhile, at the end of this turn.
    pub(super) fn release(&mut self, id: Uuid, mut first: Vec<Frame>) {
        if let Some(link) = self.links.get_mut(&id) {
            link.held = false;
            first.append(&mut link.frames);
            link.frames = first;
            self.dirty.push(id);
        }
    }

    /// The session's queue, for a last frame after it is removed (`unsubscribed`).
    pub(super) fn queue_of(&self, id: Uuid) -> Option<mpsc::Sender<Vec<Frame>>> {
        self.links.get(&id).map(|l| l.out_tx.clone())
    }

    /// Forgets a session (its unsent frames with it), closing it with `close`.
    pub(super) fn remove(&mut self, id: Uuid, close: Option<CloseCode>) {
        if let Some(link) = self.links.remove(&id)
            && let Some(code) = close
        {
            link.close_tx.send_replace(Some(code));
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Ends a turn: each session's frames go to its queue as one item, never
    /// waiting. Returns the sessions whose queue refused them; the caller
    /// feeds those back to the core and flushes again.
    pub(super) fn flush(&mut self) -> Vec<(Uuid, Refusal)> {
        let mut refused = Vec::new();
        for id in self.dirty.drain(..) {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            if link.frames.is_empty() {
                continue;
            }
            if link.held {
                // Kept for `release`, which marks it dirty again.
                if link.frames.len() > HELD_MAX {
                    refused.push((id, Refusal::Full));
                }
                continue;
            }
            match link.out_tx.try_send(std::mem::take(&mut link.frames)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => refused.push((id, Refusal::Full)),
                Err(mpsc::error::TrySendError::Closed(_)) => refused.push((id, Refusal::Closed)),
            }
        }
        refused
    }
}
