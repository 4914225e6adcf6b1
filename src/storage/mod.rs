//! Durable state in embedded sled. The only module that imports sled.
//!
//! Tables (sled trees), named key_value:
//! - `roomname_cursor_msg`: room `\0` cursor (16 bytes, big-endian) → `StoredMsg` (bincode): the
//!   append-only logs of all rooms in one tree, each room a contiguous range. Also, apart from
//!   every room's range, the view index: `0x01` room `\0` viewer `\0` cursor → (): who may see
//!   which message (see `views.rs`), so a history page costs O(limit) however much it may not see.
//! - `roomname_unit`: room → () for every room that has messages.
//! - `msgid_msgref`: message id → `MsgRef` (room, cursor, sender, kind, target): idempotency and receipts.
//! - `msgid_status`: message id → highest status any recipient reached (u8).
//! - `msgid_username_status`: message id ++ username → that recipient's status (u8).
//! - `roomname_username_unit`: room `\0` username → () for every user who ever joined the room.
//! - `username_roomname_cursor`: username `\0` room → the user's read position (16 bytes, or
//!   empty: nothing read) for every room they joined: the room list of `GET /api/rooms` (see
//!   `reads.rs`). In cluster mode written from the log, like the member records.
//! - In `roomname_cursor_msg`, apart from the log and view ranges, the mention index: `0x02`
//!   room `\0` username `\0` cursor → () per user a chat message mentions (see `views.rs`).
//! - `username_user`, `tokenhash_refresh`, `familyid_revoked` (value: revocation time, ms,
//!   big-endian u64): accounts (see `accounts.rs`).
//! - `raftindex_entry`, `raftmeta_value`: the replicated log's entries and vote, cluster mode
//!   only (see `raft_log.rs`).
//! - `refreshhash_spendop`: which use spent a refresh token (cluster mode only, `account_ops.rs`).
//!
//! Cluster mode: every tree above but the log's two travels in the log's
//! snapshots (`snapshot.rs`).

mod account_ops;
mod accounts;
mod health;
mod history;
mod ids;
mod queue;
mod raft_log;
mod reads;
#[cfg(test)]
mod reads_tests;
mod replicated;
mod snapshot;
#[cfg(test)]
mod tests;
mod views;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

pub use account_ops::{AccountLog, AccountOp, AccountOutcome, AccountProposal, Spent};
pub use accounts::{PurgeStats, RefreshRecord, SpendOutcome, UserRecord};
pub use health::{StorageHealth, StorageState, free_bytes};
pub use history::{Fetched, HistoryQuery, Page, Want};
pub use ids::IdUse;
pub use queue::{
    AckCmd, AppendPermit, CommittedMsg, DurableMsg, ReadCmd, Refused, StorageCmd, StorageEvent,
    StorageHandle,
};
pub use raft_log::{RaftLog, RaftMeta};
pub use reads::{COUNT_CAP, RoomRead};
pub use snapshot::Exported;
pub use writer::{StorageTask, StorageWriterConfig};

use crate::error::{InternalError, StorageFault, StorageFaultKind};
use crate::protocol::message::StoredMsgV1;
use crate::protocol::{Cursor, MsgKind, RoomName, Status, StoredMsg, Username};

pub type Result<T> = std::result::Result<T, InternalError>;

/// sled's errors become `InternalError::Storage`, classified here: the rest of
/// the server sees a `StorageFaultKind`, never sled.
impl From<sled::Error> for InternalError {
    fn from(e: sled::Error) -> Self {
        InternalError::Storage(StorageFault::new(fault_kind(&e), e))
    }
}

fn fault_kind(e: &sled::Error) -> StorageFaultKind {
    match e {
        // sled wraps the lock failure in an `Io` error; its text is the only mark.
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StorageFaultKind::LockHeld
        }
        _ => StorageFaultKind::Other,
    }
}

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// The compact index record of a message: enough to route receipts and to
/// answer idempotent resends without reading the room log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MsgRef {
    pub room: RoomName,
    pub cursor: Cursor,
    pub sender: Username,
    pub kind: MsgKind,
    pub target: Option<Username>,
}

/// A cheap, cloneable handle on the database. Reads may happen from any task;
/// message and receipt writes go through the single storage writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    rooms: sled::Tree,
    /// Every room's messages: room ++ 0x00 ++ cursor → `StoredMsg`; and the
    /// view index: 0x01 ++ room ++ 0x00 ++ viewer ++ 0x00 ++ cursor → ().
    log: sled::Tree,
    msgid_msgref: sled::Tree,
    msgid_status: sled::Tree,
    msgid_username_status: sled::Tree,
    room_members: sled::Tree,
    /// user `\0` room → read position (see `reads.rs`).
    user_rooms: sled::Tree,
    users: sled::Tree,
    refresh: sled::Tree,
    families: sled::Tree,
    /// The rooms in `roomname_unit`, in memory. A std mutex: held for a set
    /// lookup only, never across `.await`.
    known_rooms: Mutex<HashSet<RoomName>>,
    /// `hubbub_storage_decode_errors_total{what}`: records skipped because they
    /// do not decode. Created here (errors can happen while opening); the
    /// server registers it with its metrics.
    decode_errors: prometheus::IntCounterVec,
}

/// The kinds of record whose decode failures are skipped rather than failing
/// the whole read (a room's history, the user list).
#[derive(Clone, Copy, Debug)]
enum Record {
    Message,
    User,
}

impl Record {
    fn label(self) -> &'static str {
        match self {
            Record::Message => "message",
            Record::User => "user",
        }
    }

    /// Logged once per process and kind: a corrupt range would otherwise log
    /// once per record on every page read; the counter keeps the total.
    fn first_failure(self) -> bool {
        static MESSAGE: AtomicBool = AtomicBool::new(false);
        static USER: AtomicBool = AtomicBool::new(false);
        let flag = match self {
            Record::Message => &MESSAGE,
            Record::User => &USER,
        };
        !flag.swap(true, Ordering::Relaxed)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(bincode::serde::encode_to_vec(v, BINCODE)?)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(bincode::serde::decode_from_slice(b, BINCODE.with_limit::<{ 1 << 20 }>())?.0)
}

/// A log record: the current layout, or one written before `mentions`
/// (bincode stores no field names: such a record simply ends after `cursor`,
/// so the current layout runs out of bytes on it and the old one fits).
fn decode_msg(b: &[u8]) -> Result<StoredMsg> {
    decode::<StoredMsg>(b).or_else(|e| decode::<StoredMsgV1>(b).map(StoredMsg::from).map_err(|_| e))
}

/// The counter fails to build only for an invalid name or label, and these
/// are constants, and every `Store::open` (the storage unit tests open several) builds it.
#[allow(clippy::panic)]
fn decode_errors_counter() -> prometheus::IntCounterVec {
    let c = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "hubbub_storage_decode_errors_total",
            "Stored records skipped because they failed to decode, by kind",
        ),
        &["what"],
    )
    .unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
    // Both kinds show from the start (at 0), so a dashboard can alert on a rise.
    for what in [Record::Message, Record::User] {
        c.with_label_values(&[what.label()]);
    }
    c
}

fn member_key(room: &RoomName, user: &Username) -> Vec<u8> {
    let mut k = Vec::with_capacity(room.as_str().len() + 1 + user.as_str().len());
    k.extend_from_slice(room.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

/// The log's key: the room, a 0 byte (never in a room name), the cursor
/// (big-endian). One room's messages are one contiguous, time-ordered range.
fn log_key(room: &RoomName, cursor: Cursor) -> Vec<u8> {
    let mut k = Vec::with_capacity(room.as_str().len() + 17);
    k.extend_from_slice(room.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&cursor.to_key());
    k
}

/// The store's trees by name (also what a cluster snapshot carries: see
/// `snapshot::TREES`).
const ROOMS: &str = "roomname_unit";
const MSGID_MSGREF: &str = "msgid_msgref";
const MSGID_STATUS: &str = "msgid_status";
const MSGID_USERNAME_STATUS: &str = "msgid_username_status";
const ROOM_MEMBERS: &str = "roomname_username_unit";
const USER_ROOMS: &str = "username_roomname_cursor";
const USERS: &str = "username_user";
const REFRESH: &str = "tokenhash_refresh";
const FAMILIES: &str = "familyid_revoked";
const ROOM_LOG: &str = "roomname_cursor_msg";

fn receipt_key(id: &Uuid, user: &Username) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + user.as_str().len());
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(user.as_str().as_bytes());
    k
}

impl Store {
    /// Opens (or creates) the database under `dir`. Only one process may hold it.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // We group-commit ourselves: nothing is acknowledged before our own flush.
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace)
            .open()?;
        let inner = Inner {
            rooms: db.open_tree(ROOMS)?,
            msgid_msgref: db.open_tree(MSGID_MSGREF)?,
            msgid_status: db.open_tree(MSGID_STATUS)?,
            msgid_username_status: db.open_tree(MSGID_USERNAME_STATUS)?,
            room_members: db.open_tree(ROOM_MEMBERS)?,
            user_rooms: db.open_tree(USER_ROOMS)?,
            users: db.open_tree(USERS)?,
            refresh: db.open_tree(REFRESH)?,
            families: db.open_tree(FAMILIES)?,
            log: db.open_tree(ROOM_LOG)?,
            known_rooms: Mutex::new(HashSet::new()),
            decode_errors: decode_errors_counter(),
            db,
        };
        let known: HashSet<RoomName> = inner
            .rooms
            .iter()
            .keys()
            .filter_map(|k| {
                k.ok()
                    .and_then(|k| std::str::from_utf8(&k).ok().and_then(RoomName::parse))
            })
            .collect();
        *inner.known_rooms.lock().unwrap_or_else(|p| p.into_inner()) = known;
        let store = Store {
            inner: Arc::new(inner),
        };
        store.catch_up_views()?;
        store.catch_up_room_lists()?;
        Ok(store)
    }

    /// The decode-error counter, for the server's metrics registry.
    pub fn decode_errors(&self) -> prometheus::IntCounterVec {
        self.inner.decode_errors.clone()
    }

    /// Decodes one record, or counts and skips it: one bad record must not
    /// fail every read of its room (or of the user list).
    fn decode_or_skip<T: DeserializeOwned>(&self, what: Record, key: &[u8], b: &[u8]) -> Option<T> {
        self.or_skip(what, key, decode(b))
    }

    /// [`decode_or_skip`](Self::decode_or_skip) for a log record, old layout or new.
    fn decode_msg_or_skip(&self, key: &[u8], b: &[u8]) -> Option<StoredMsg> {
        self.or_skip(Record::Message, key, decode_msg(b))
    }

    fn or_skip<T>(&self, what: Record, key: &[u8], decoded: Result<T>) -> Option<T> {
        match decoded {
            Ok(v) => Some(v),
            Err(e) => {
                self.inner
                    .decode_errors
                    .with_label_values(&[what.label()])
                    .inc();
                if what.first_failure() {
                    tracing::warn!(what = what.label(), key = %String::from_utf8_lossy(key), error = %e,
                        "skipping a stored record that does not decode (logged once; see hubbub_storage_decode_errors_total)");
                }
                None
            }
        }
    }

    /// Runs a storage read on tokio's blocking pool, off the async workers: a
    /// read may touch the disk. The pool has at most 512 threads (tokio's
    /// default) and queues beyond that; each session and HTTP request waits
    /// for its own read, so what is queued is bounded by the connection caps.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }

    /// Flushes everything written so far to disk (one fsync for all trees).
    pub async fn flush(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Whether any message was ever written to `room`.
    fn room_known(&self, room: &RoomName) -> bool {
        self.lock_rooms().contains(room)
    }

    /// Records rooms that get their first messages (one insert per new room,
    /// not per message).
    fn note_rooms<'a>(&self, rooms: impl Iterator<Item = &'a RoomName>) -> Result<()> {
        let mut known = self.lock_rooms();
        for room in rooms {
            if known.insert(room.clone()) {
                self.inner.rooms.insert(room.as_str(), &[])?;
            }
        }
        Ok(())
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashSet<RoomName>> {
        // A poisoned lock only means another thread panicked mid-insert into a
        // set of names; the set itself is still valid.
        self.inner
            .known_rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The highest cursor in any room log: the hub continues after it on restart.
    pub fn last_cursor(&self) -> Result<Cursor> {
        let mut last = Cursor::ZERO;
        for name in self.inner.rooms.iter().keys() {
            let name = name?;
            let Some(room) = std::str::from_utf8(&name).ok().and_then(RoomName::parse) else {
                continue;
            };
            if let Some((k, _)) = self
                .inner
                .log
                .range(log_key(&room, Cursor::ZERO)..=log_key(&room, Cursor::MAX))
                .next_back()
                .transpose()?
                && let Some(c) = Cursor::from_key(&k[k.len() - 16..])
            {
                last = last.max(c);
            }
        }
        Ok(last)
    }

    /// The index entry of a stored message. Outside storage, ids are judged
    /// by `classify_id` (ids.rs).
    fn msgref(&self, id: &Uuid) -> Result<Option<MsgRef>> {
        self.inner
            .msgid_msgref
            .get(id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Records that `user` joined `room` (a private message may then reach
    /// them, a mention counts, the room is in their room list).
    /// Not flushed here: the next group commit carries it.
    pub fn remember_member(&self, room: &RoomName, user: &Username) -> Result<()> {
        self.inner
            .room_members
            .insert(member_key(room, user), &[])?;
        self.list_room(user, room)
    }

    pub fn was_member(&self, room: &RoomName, user: &Username) -> Result<bool> {
        Ok(self
            .inner
            .room_members
            .contains_key(member_key(room, user))?)
    }

    /// The highest status any recipient reached; stored messages start at `saved`.
    fn status_of(&self, id: &Uuid) -> Result<Status> {
        Ok(self
            .inner
            .msgid_status
            .get(id.as_bytes())?
            .and_then(|b| b.first().copied())
            .and_then(Status::from_u8)
            .unwrap_or(Status::Saved))
    }
}
