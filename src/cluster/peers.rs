//! Presence across nodes, the reading half: other nodes' `p:<room>` digests
//! (see `presence`) become, for the hub, each node's users per room, and
//! "node X is gone".
//!
//! Only serving nodes (live, ready, our protocol) count, and of each only
//! its newest generation: a node that dies, stops serving or restarts is
//! `Gone` at once (its users leave every presence list), and is read afresh
//! once it serves again, so a restarted node shows only the users really
//! on it. A node's keys are re-read only when its state's max version moved.
//! Hashed digests are resolved by fetching the list over the node link,
//! cached per (node, room) by hash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::gossip::{Member, POLL, StateReader, View};
use super::link::Links;
use super::presence::{Digest, KEY_PREFIX, hash_of};
use super::raft::network;
use crate::protocol::{PeerPresence, RoomName, Username};

/// How long a fetch of a big room's list may take (then it is retried on
/// the next poll: the node may have died, and that is seen meanwhile).
const FETCH_TTL: Duration = Duration::from_secs(1);

/// What this node knows of one peer's presence.
struct Known {
    generation: u64,
    /// Its state's max version when fully read; `None`: read it again.
    version: Option<u64>,
    /// Each room's digest as resolved and handed to the hub.
    rooms: HashMap<RoomName, String>,
    /// Hashed rooms' lists by hash (only the current one per room).
    lists: HashMap<RoomName, (String, Vec<Username>)>,
}

/// The reader's inputs.
pub struct Reader {
    pub view: watch::Receiver<Arc<View>>,
    pub state: StateReader,
    pub links: Links,
    /// To the hub. Bounded; full → this task waits (the hub never waits on
    /// it, and nothing is dropped: a later note must not overtake).
    pub tx: mpsc::Sender<PeerPresence>,
}

/// Runs until `stop` (or the hub is gone).
pub async fn read(r: Reader, stop: CancellationToken) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let serving: Vec<Member> = r
            .view
            .borrow()
            .members
            .values()
            .filter(|m| m.serving() && !m.this_node)
            .cloned()
            .collect();
        if bury(&r, &mut known, &serving).await.is_err() {
            return;
        }
        for m in &serving {
            if read_node(&r, &mut known, m).await.is_err() {
                return;
            }
        }
    }
}

/// The hub stopped.
struct HubGone;

async fn tell(r: &Reader, p: PeerPresence) -> Result<(), HubGone> {
    tracing::debug!(?p, "presence: a peer's room changed");
    r.tx.send(p).await.map_err(|_| HubGone)
}

/// Peers known that are not serving (or not as that generation) any more:
/// `Gone`, and forgotten.
async fn bury(
    r: &Reader,
    known: &mut HashMap<String, Known>,
    serving: &[Member],
) -> Result<(), HubGone> {
    let gone: Vec<String> = known
        .iter()
        .filter(|(node, k)| {
            !serving
                .iter()
                .any(|m| &m.node == *node && m.generation == k.generation)
        })
        .map(|(node, _)| node.clone())
        .collect();
    for node in gone {
        known.remove(&node);
        tracing::debug!(peer = %node, "presence: a node gone");
        tell(r, PeerPresence::Gone { node }).await?;
    }
    Ok(())
}

/// Reads `m`'s digests if its state moved, and tells the hub what changed.
async fn read_node(
    r: &Reader,
    known: &mut HashMap<String, Known>,
    m: &Member,
) -> Result<(), HubGone> {
    let k = known.entry(m.node.clone()).or_insert_with(|| Known {
        generation: m.generation,
        version: None,
        rooms: HashMap::new(),
        lists: HashMap::new(),
    });
    let Some((version, keys)) = r.state.keys_if_moved(m, k.version, KEY_PREFIX).await else {
        return Ok(());
    };
    let now: HashMap<RoomName, String> = keys
        .into_iter()
        .filter_map(|(key, value)| {
            let room = RoomName::parse(key.strip_prefix(KEY_PREFIX)?)?;
            Some((room, value))
        })
        .collect();
    let mut complete = true;
    for (room, value) in &now {
        if k.rooms.get(room) == Some(value) {
            continue;
        }
        // After one failed fetch the node's other big rooms wait for the
        // next poll: a peer that does not answer must not hold up the
        // reading of the others (nor news of its own death) a second each.
        let fetch = complete;
        let Some(users) = resolve(r, &m.node, k, room, value, fetch).await else {
            complete = false;
            continue;
        };
        k.rooms.insert(room.clone(), value.clone());
        tell(r, users_of(&m.node, room, users)).await?;
    }
    let left: Vec<RoomName> = k
        .rooms
        .keys()
        .filter(|room| !now.contains_key(*room))
        .cloned()
        .collect();
    for room in left {
        k.rooms.remove(&room);
        k.lists.remove(&room);
        tell(r, users_of(&m.node, &room, Vec::new())).await?;
    }
    k.version = complete.then_some(version);
    Ok(())
}

fn users_of(node: &str, room: &RoomName, users: Vec<Username>) -> PeerPresence {
    PeerPresence::Users {
        node: node.to_owned(),
        room: room.clone(),
        users,
    }
}

/// A digest's users: inline ones as they are, a hashed one's from the cache
/// or (if `fetch`) fetched from `node`. `None`: not resolved now (retried
/// later); a value that does not parse resolves to nobody.
async fn resolve(
    r: &Reader,
    node: &str,
    k: &mut Known,
    room: &RoomName,
    value: &str,
    fetch: bool,
) -> Option<Vec<Username>> {
    match Digest::parse(value) {
        None => {
            tracing::warn!(peer = node, %room, "a presence digest that does not parse");
            Some(Vec::new())
        }
        Some(Digest::Inline(users)) => {
            k.lists.remove(room);
            Some(users)
        }
        Some(Digest::Hashed { hash, count }) => {
            if let Some((h, users)) = k.lists.get(room)
                && *h == hash
            {
                return Some(users.clone());
            }
            if !fetch {
                return None;
            }
            let users = network::presence(&r.links, node, room, &hash, FETCH_TTL).await?;
            // The list is checked as gossiped: a peer cannot make us show
            // names its digest did not promise.
            let valid = users.iter().all(|u| Username::parse(u.as_str()).is_some())
                && users.len() == count
                && hash_of(&users) == hash;
            if !valid {
                tracing::warn!(peer = node, %room, "a presence list that does not match its digest");
                return None;
            }
            k.lists.insert(room.clone(), (hash, users.clone()));
            Some(users)
        }
    }
}
