//! Presence across nodes, the publishing half: each node gossips one key per
//! room that has local users, `p:<room>`, whose value is a digest of them.
//!
//! - A small room's names inline, comma-separated, when they fit in
//!   [`INLINE_MAX`] bytes (`alice,bob`).
//! - A bigger room's count and a hash, `#<count>:<hex>` (the first 8 bytes
//!   of a SHA-256 over the sorted names): peers fetch the list itself over
//!   the node link when the hash changes (`Call::Presence`), answered from
//!   [`Table`] only while it is that room's current list.
//!
//! So a node's gossip state stays small (1000 rooms of one or two users are
//! about 25 bytes each: far under 32 KiB), and a big room's churn costs one
//! short value per [`PUBLISH_EVERY`], not its whole list.
//!
//! The hub reports a room's local users whenever that set changes
//! ([`Table::set`]: a short lock, never a wait); the publisher wakes, waits
//! out the rest of [`PUBLISH_EVERY`] and writes the latest state of every
//! room changed since: a room that changed 1000 times in between is written
//! once, and none is lost (the table, not a queue, holds what is due). A
//! room whose last local user left has its key deleted (a tombstone, kept
//! `gossip::TOMBSTONE_GRACE`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::digest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::gossip::Publisher;
use crate::metrics::ClusterMetrics;
use crate::protocol::{RoomName, Username};

/// The prefix of presence keys in a node's gossip state.
pub const KEY_PREFIX: &str = "p:";
/// A room's names are gossiped inline up to this many bytes (joined).
pub const INLINE_MAX: usize = 32;
/// Presence writes to gossip are coalesced to one per this interval.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(150);
/// Bytes of the SHA-256 kept in a hashed digest (16 hex digits).
const HASH_BYTES: usize = 8;

/// A room's gossiped digest, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digest {
    Inline(Vec<Username>),
    Hashed { count: usize, hash: String },
}

impl Digest {
    /// The digest of `users` (sorted, distinct), as gossiped.
    pub fn encode(users: &[Username]) -> String {
        let inline = join(users);
        if inline.len() <= INLINE_MAX {
            inline
        } else {
            format!("#{}:{}", users.len(), hash_of(users))
        }
    }

    /// A gossiped value; `None` when it is not one we write (a peer's bug
    /// or another version: that room is then skipped).
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(rest) = value.strip_prefix('#') {
            let (count, hash) = rest.split_once(':')?;
            let ok = hash.len() == 2 * HASH_BYTES && hash.bytes().all(|b| b.is_ascii_hexdigit());
            let count = count.parse().ok()?;
            return ok.then(|| Digest::Hashed {
                count,
                hash: hash.to_owned(),
            });
        }
        if value.is_empty() {
            return None;
        }
        value
            .split(',')
            .map(Username::parse)
            .collect::<Option<Vec<_>>>()
            .map(Digest::Inline)
    }
}

fn join(users: &[Username]) -> String {
    let names: Vec<&str> = users.iter().map(Username::as_str).collect();
    names.join(",")
}

/// The short hex hash of a sorted list of names (what a hashed digest holds).
pub fn hash_of(users: &[Username]) -> String {
    let d = digest::digest(&digest::SHA256, join(users).as_bytes());
    d.as_ref()[..HASH_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of `room`'s digest.
pub fn key_of(room: &RoomName) -> String {
    format!("{KEY_PREFIX}{}", room.as_str())
}

/// This node's users per room, as the hub last reported them, and the rooms
/// not yet written to gossip.
#[derive(Default)]
pub struct Table {
    inner: Mutex<Inner>,
    wake: Notify,
    /// The size of this node's gossip state after the last write.
    state_bytes: AtomicU64,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<RoomName, Vec<Username>>,
    due: BTreeSet<RoomName>,
}

impl Table {
    /// `room`'s local users now (sorted; empty: none left). Called on the
    /// hub's task: a short lock and a wake-up, never a wait.
    pub fn set(&self, room: RoomName, users: Vec<Username>) {
        let Ok(mut t) = self.inner.lock() else {
            return;
        };
        if users.is_empty() {
            t.rooms.remove(&room);
        } else {
            t.rooms.insert(room.clone(), users);
        }
        t.due.insert(room);
        drop(t);
        self.wake.notify_one();
    }

    /// The writes due: each changed room's digest, `None` to delete its key.
    fn take_due(&self) -> Vec<(String, Option<String>)> {
        let Ok(mut t) = self.inner.lock() else {
            return Vec::new();
        };
        let due = std::mem::take(&mut t.due);
        due.into_iter()
            .map(|room| {
                let value = t.rooms.get(&room).map(|u| Digest::encode(u));
                (key_of(&room), value)
            })
            .collect()
    }

    /// A peer's fetch of a hashed room: its list, only if `hash` is that of
    /// the list held now (an old hash is refused: the peer reads the newer
    /// digest and asks again).
    pub fn fetch(&self, room: &RoomName, hash: &str) -> Option<Vec<Username>> {
        let t = self.inner.lock().ok()?;
        let users = t.rooms.get(room)?;
        (hash_of(users) == hash).then(|| users.clone())
    }

    /// The size of this node's own gossip state, keys and values (see
    /// `gossip::state_bytes`), as of the last presence write.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes.load(Ordering::Relaxed)
    }
}

/// Writes the table's due rooms to gossip, at most once per
/// [`PUBLISH_EVERY`], until `stop`.
pub async fn publish(
    table: Arc<Table>,
    gossip: Publisher,
    metrics: Arc<ClusterMetrics>,
    stop: CancellationToken,
) {
    let record = |bytes: u64| {
        table.state_bytes.store(bytes, Ordering::Relaxed);
        metrics.gossip_state_bytes.set(bytes as i64);
    };
    record(gossip.write(Vec::new()).await);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = table.wake.notified() => {}
        }
        let writes = table.take_due();
        if !writes.is_empty() {
            tracing::debug!(rooms = writes.len(), "presence published");
            record(gossip.write(writes).await);
        }
        // Coalescing: what changes meanwhile waits for the next write.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PUBLISH_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn users(names: &[&str]) -> Vec<Username> {
        names.iter().map(|n| Username::parse(n).unwrap()).collect()
    }

    #[test]
    fn small_rooms_are_inline_and_big_ones_count_and_hash() {
        let small = users(&["alice", "bob"]);
        assert_eq!(Digest::encode(&small), "alice,bob");
        assert_eq!(Digest::parse("alice,bob"), Some(Digest::Inline(small)));
        let big = users(&["alice", "bob", "carol", "dave", "erin", "frank", "grace"]);
        let v = Digest::encode(&big);
        assert_eq!(
            Digest::parse(&v),
            Some(Digest::Hashed {
                count: 7,
                hash: hash_of(&big)
            }),
            "{v}"
        );
        assert!(v.len() <= INLINE_MAX, "{v}");
        for bad in ["", "#", "#3:zz", "#x:0011223344556677", "Alice", "a,,b"] {
            assert_eq!(Digest::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_fetch_is_answered_only_for_the_current_list() {
        let t = Table::default();
        let room = RoomName::parse("lobby").unwrap();
        let old = users(&["alice", "bob"]);
        t.set(room.clone(), old.clone());
        let new = users(&["alice", "bob", "carol"]);
        t.set(room.clone(), new.clone());
        assert_eq!(t.fetch(&room, &hash_of(&old)), None);
        assert_eq!(t.fetch(&room, &hash_of(&new)), Some(new));
        t.set(room.clone(), Vec::new());
        assert_eq!(t.fetch(&room, &hash_of(&old)), None);
    }

    #[test]
    fn writes_are_coalesced_to_the_latest_state_and_an_empty_room_deletes() {
        let t = Table::default();
        let (a, b) = (RoomName::parse("a").unwrap(), RoomName::parse("b").unwrap());
        for i in 0..1000 {
            let names = if i % 2 == 0 { &["alice"][..] } else { &["bob"] };
            t.set(a.clone(), users(names));
        }
        t.set(b.clone(), users(&["carol"]));
        t.set(b.clone(), Vec::new());
        assert_eq!(
            t.take_due(),
            [
                ("p:a".to_owned(), Some("bob".to_owned())),
                ("p:b".to_owned(), None)
            ]
        );
        assert!(t.take_due().is_empty());
    }
}
