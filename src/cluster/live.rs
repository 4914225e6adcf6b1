//! What sessions on one node tell the others, one-way over the node links
//! (authenticated by the cluster secret; never over anything else): a
//! session registered (older sessions with the same user and client id
//! elsewhere close with 4001) and typing states. Nothing here is stored.
//!
//! The typing states heard from each node are remembered while active, so
//! that when that node dies (or restarts as a new generation) this node
//! tells its own sessions the typist stopped: nobody keeps showing a dead
//! node's typist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::gossip::View;
use super::link::Links;
use super::raft::types::{decode, encode};
use crate::metrics::ClusterMetrics;
use crate::protocol::{Relay, RoomName, Username};

/// An active typing state heard from another node is forgotten after this
/// long without news (its node then told nobody it stopped: the session
/// left). Clients expire an indicator after a few seconds by themselves.
const TYPING_FORGET: Duration = Duration::from_secs(30);

/// Who is typing, by the node that said so: (room, user) → when, and the
/// node's generation then.
type Typists = HashMap<String, (u64, HashMap<(RoomName, Username), Instant>)>;

/// The receiving side, shared by the link handler and the watcher of deaths.
pub struct Inbox {
    /// To the server, which hands each note to the hub. Bounded; full → the
    /// note is dropped (logged): the link reader never waits on the hub.
    tx: mpsc::Sender<Relay>,
    view: watch::Receiver<Arc<View>>,
    typists: Mutex<Typists>,
    metrics: Arc<ClusterMetrics>,
}

impl Inbox {
    pub fn new(
        tx: mpsc::Sender<Relay>,
        view: watch::Receiver<Arc<View>>,
        metrics: Arc<ClusterMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tx,
            view,
            typists: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// A one-way message from `from` (called on the link's reader: never waits).
    pub fn received(&self, from: &str, body: &[u8]) {
        let note = match decode::<Relay>(body) {
            Ok(n) if n.valid() => n,
            Ok(_) | Err(_) => {
                tracing::warn!(peer = from, "a link message that does not decode");
                return;
            }
        };
        match &note {
            Relay::Joined { .. } => self.metrics.kicks_received.inc(),
            Relay::Typing { room, user, active } => {
                self.metrics.typing_received.inc();
                self.remember(from, room, user, *active);
            }
        }
        self.pass(note);
    }

    fn pass(&self, note: Relay) {
        if let Err(e) = self.tx.try_send(note) {
            tracing::warn!(error = %e, "the hub's cluster inbox is full; dropped a note");
        }
    }

    fn remember(&self, from: &str, room: &RoomName, user: &Username, active: bool) {
        let generation = self
            .view
            .borrow()
            .members
            .get(from)
            .map_or(0, |m| m.generation);
        let Ok(mut t) = self.typists.lock() else {
            return;
        };
        let now = Instant::now();
        let (g, of_node) = t.entry(from.to_owned()).or_default();
        if *g != generation {
            // A new incarnation: what the old one said is void (cleared in `bury`).
            of_node.clear();
            *g = generation;
        }
        of_node.retain(|_, at| now.duration_since(*at) < TYPING_FORGET);
        let key = (room.clone(), user.clone());
        if active {
            of_node.insert(key, now);
        } else {
            of_node.remove(&key);
        }
    }

    /// Typing states of nodes that are dead, gone or restarted: each is
    /// told to this node's sessions as stopped.
    fn bury(&self, view: &View) {
        let stopped: Vec<Relay> = {
            let Ok(mut t) = self.typists.lock() else {
                return;
            };
            let gone: Vec<String> = t
                .iter()
                .filter(|(node, (g, _))| {
                    view.members
                        .get(*node)
                        .is_none_or(|m| !m.live || m.generation != *g)
                })
                .map(|(node, _)| node.clone())
                .collect();
            gone.iter()
                .filter_map(|node| t.remove(node))
                .flat_map(|(_, typing)| typing.into_keys())
                .map(|(room, user)| Relay::Typing {
                    room,
                    user,
                    active: false,
                })
                .collect()
        };
        for n in stopped {
            tracing::debug!(?n, "a typist's node is gone: typing stopped");
            self.pass(n);
        }
    }
}

/// Watches membership: a dead node's typists stop (see [`Inbox::bury`]).
pub async fn watch_deaths(inbox: Arc<Inbox>, stop: CancellationToken) {
    let mut view = inbox.view.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
        let v = view.borrow_and_update().clone();
        inbox.bury(&v);
    }
}

/// Sends `note` to every peer with a link up. A peer whose link is down
/// misses it (a kick then waits for the client's next reconnect; typing is
/// refreshed by the next state).
pub fn broadcast(links: &Links, metrics: &ClusterMetrics, note: &Relay) {
    let body = match encode(note) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::error!(error = %e, "a note that does not encode");
            return;
        }
    };
    for peer in links.up_peers() {
        match links.send(&peer, body.clone()) {
            Ok(()) => match note {
                Relay::Joined { .. } => metrics.kicks_sent.inc(),
                Relay::Typing { .. } => metrics.typing_sent.inc(),
            },
            Err(e) => tracing::debug!(peer = %peer, error = %e, "a note not sent"),
        }
    }
}
