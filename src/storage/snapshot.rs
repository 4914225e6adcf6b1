//! Cluster mode: the replicated state as one file, for the log's snapshots.
//!
//! What is in it: every tree the log's entries write (see [`TREES`]) and the
//! state machine's own record (`raftmeta_value`'s `state_machine` value):
//! never the log itself (`raftindex_entry`, the vote, the committed and
//! purged ids), which stays each node's own.
//!
//! Format, streamed in both directions with bounded memory:
//! - `HUBSNAP1` (8 bytes);
//! - the caller's header: length (u32, big-endian) and bytes (≤ 1 MiB);
//! - records: tree id (u8, ≥ 1), key length (u32) and key, value length
//!   (u32) and value (each ≤ [`MAX_FIELD`]);
//! - the end: 0 (u8), the record count (u64), then the SHA-256 of every
//!   byte before it (32 bytes). Nothing may follow.
//!
//! [`Store::import_replicated`] reads the file twice: once to check it
//! whole (a truncated or corrupt file changes nothing), once to replace the
//! trees. The replacement is not atomic; the caller makes it crash-safe by
//! keeping the checked file under a durable name until the import is
//! flushed, and importing it again at start if it is still there.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use ring::digest::{Context, SHA256};

use super::raft_log::RaftMeta;
use super::{Result, Store};
use crate::error::{InternalError, StorageFault, StorageFaultKind};
use crate::protocol::RoomName;

const MAGIC: &[u8; 8] = b"HUBSNAP1";
const MAX_HEADER: u32 = 1 << 20;
/// The largest key or value a record may have: stored values are far
/// smaller (a message is at most ~16 KB); a larger length is corruption, and
/// is refused before anything is allocated for it.
const MAX_FIELD: u32 = 4 << 20;
/// Records and bytes per sled batch while importing: bound the memory of
/// an import (whichever comes first).
const IMPORT_BATCH: usize = 10_000;
const IMPORT_BATCH_BYTES: usize = 8 << 20;
const END: u8 = 0;

/// The replicated trees, by their id in a snapshot file (never reused: a
/// file names trees by these numbers).
const TREES: [(u8, &str); 11] = [
    (1, super::ROOMS),
    (2, super::ROOM_LOG),
    (3, super::MSGID_MSGREF),
    (4, super::MSGID_STATUS),
    (5, super::MSGID_USERNAME_STATUS),
    (6, super::ROOM_MEMBERS),
    (7, super::USERS),
    (8, super::REFRESH),
    (9, super::FAMILIES),
    (10, super::account_ops::SPEND_OPS),
    // 11 is `STATE`. Read positions come from the log too (`ReadCmd`).
    (12, super::USER_ROOMS),
];
/// The state machine's record in `raftmeta_value` (one key, `RaftMeta::StateMachine`).
const STATE: u8 = 11;

fn invalid(why: impl Into<String>) -> InternalError {
    InternalError::Storage(StorageFault::new(
        StorageFaultKind::Other,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot: {}", why.into()),
        ),
    ))
}

fn io(e: std::io::Error) -> InternalError {
    InternalError::Storage(StorageFault::new(StorageFaultKind::Other, e))
}

/// Writes everything through a SHA-256, counting bytes.
struct Hashing<W> {
    inner: W,
    hash: Context,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.inner.write_all(b).map_err(io)
    }

    fn field(&mut self, b: &[u8]) -> Result<()> {
        let len = u32::try_from(b.len())
            .ok()
            .filter(|l| *l <= MAX_FIELD)
            .ok_or_else(|| invalid(format!("a stored field of {} bytes", b.len())))?;
        self.put(&len.to_be_bytes())?;
        self.put(b)
    }
}

/// One record: tree id, key, value.
type Rec = (u8, Vec<u8>, Vec<u8>);

/// Reads through a SHA-256.
struct Checked {
    inner: BufReader<File>,
    hash: Context,
}

impl Checked {
    fn take(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| invalid(format!("truncated ({e})")))?;
        self.hash.update(buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn field(&mut self, max: u32) -> Result<Vec<u8>> {
        let len = self.u32()?;
        if len > max {
            return Err(invalid(format!("a field of {len} bytes")));
        }
        let mut v = vec![0u8; len as usize];
        self.take(&mut v)?;
        Ok(v)
    }

    fn open(path: &Path) -> Result<(Self, Vec<u8>)> {
        let f = File::open(path).map_err(io)?;
        let mut r = Checked {
            inner: BufReader::with_capacity(1 << 16, f),
            hash: Context::new(&SHA256),
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not a snapshot file"));
        }
        let header = r.field(MAX_HEADER)?;
        Ok((r, header))
    }

    /// The next record, or `None` at the end (whose count and checksum are checked).
    fn next(&mut self, count: &mut u64) -> Result<Option<Rec>> {
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        if tag[0] == END {
            let mut n = [0u8; 8];
            self.take(&mut n)?;
            if u64::from_be_bytes(n) != *count {
                return Err(invalid("the record count does not match"));
            }
            let expect = self.hash.clone().finish();
            let mut sum = [0u8; 32];
            self.inner
                .read_exact(&mut sum)
                .map_err(|e| invalid(format!("truncated ({e})")))?;
            if sum != expect.as_ref() {
                return Err(invalid("the checksum does not match"));
            }
            let mut rest = [0u8; 1];
            return match self.inner.read(&mut rest).map_err(io)? {
                0 => Ok(None),
                _ => Err(invalid("bytes after the end")),
            };
        }
        if tag[0] != STATE && !TREES.iter().any(|(id, _)| *id == tag[0]) {
            return Err(invalid(format!("unknown tree {}", tag[0])));
        }
        let k = self.field(MAX_FIELD)?;
        let v = self.field(MAX_FIELD)?;
        *count += 1;
        Ok(Some((tag[0], k, v)))
    }
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exported {
    pub records: u64,
    pub bytes: u64,
}

impl Store {
    /// Writes the replicated state and `header` (the caller's own: what the
    /// snapshot is of) to `w`. The caller keeps the state still meanwhile
    /// (no writes): sled has no point-in-time view across trees.
    pub fn export_replicated(&self, w: impl Write, header: &[u8]) -> Result<Exported> {
        let mut out = Hashing {
            inner: BufWriter::with_capacity(1 << 16, w),
            hash: Context::new(&SHA256),
            bytes: 0,
        };
        out.put(MAGIC)?;
        if header.len() > MAX_HEADER as usize {
            return Err(invalid("header too large"));
        }
        out.field(header)?;
        let mut records = 0u64;
        for (id, name) in TREES {
            for kv in self.inner.db.open_tree(name)?.iter() {
                let (k, v) = kv?;
                out.put(&[id])?;
                out.field(&k)?;
                out.field(&v)?;
                records += 1;
            }
        }
        if let Some(state) = self.raft_log()?.meta(RaftMeta::StateMachine)? {
            out.put(&[STATE])?;
            out.field(RaftMeta::StateMachine.key())?;
            out.field(&state)?;
            records += 1;
        }
        out.put(&[END])?;
        out.put(&records.to_be_bytes())?;
        let sum = out.hash.clone().finish();
        out.inner.write_all(sum.as_ref()).map_err(io)?;
        out.inner.flush().map_err(io)?;
        Ok(Exported {
            records,
            bytes: out.bytes + 32,
        })
    }

    /// Reads a whole snapshot file and checks it (format, lengths, count,
    /// checksum) without changing anything; returns its header.
    pub fn check_snapshot(path: &Path) -> Result<Vec<u8>> {
        let (mut r, header) = Checked::open(path)?;
        let mut count = 0;
        while r.next(&mut count)?.is_some() {}
        Ok(header)
    }

    /// The header of a snapshot file (its first bytes only; not checked whole).
    pub fn snapshot_header(path: &Path) -> Result<Vec<u8>> {
        Ok(Checked::open(path)?.1)
    }

    /// Replaces the replicated trees with the content of the snapshot file
    /// at `path`, checked whole first (a bad file changes nothing), and
    /// flushes; returns its header. Not atomic: see the module doc.
    pub fn import_replicated(&self, path: &Path) -> Result<Vec<u8>> {
        Self::check_snapshot(path)?;
        let meta = self.raft_log()?;
        let trees = TREES
            .iter()
            .map(|(id, name)| Ok((*id, self.inner.db.open_tree(name)?)))
            .collect::<Result<Vec<_>>>()?;
        for (_, t) in &trees {
            t.clear()?;
        }
        meta.remove_meta(RaftMeta::StateMachine)?;
        let (mut r, header) = Checked::open(path)?;
        let mut count = 0;
        let mut batch = (0u8, sled::Batch::default(), 0usize);
        let mut bytes = 0usize;
        let tree_of = |id: u8| trees.iter().find(|(i, _)| *i == id).map(|(_, t)| t);
        while let Some((id, k, v)) = r.next(&mut count)? {
            if id == STATE {
                if k != RaftMeta::StateMachine.key() {
                    return Err(invalid("an unknown state record"));
                }
                meta.stage_meta(RaftMeta::StateMachine, &v)?;
                continue;
            }
            if batch.0 != id || batch.2 >= IMPORT_BATCH || bytes >= IMPORT_BATCH_BYTES {
                bytes = 0;
                if let Some(t) = tree_of(batch.0) {
                    t.apply_batch(std::mem::take(&mut batch.1))?;
                }
                batch = (id, sled::Batch::default(), 0);
            }
            bytes += k.len() + v.len();
            batch.1.insert(k, v);
            batch.2 += 1;
        }
        if let Some(t) = tree_of(batch.0) {
            t.apply_batch(batch.1)?;
        }
        self.reload_rooms()?;
        // A snapshot from a version whose read positions were node-local has
        // none: the room lists are rebuilt from its member records (what
        // opening such a data directory does).
        self.catch_up_room_lists()?;
        self.inner.db.flush()?;
        Ok(header)
    }

    /// Reads `roomname_unit` into the in-memory set of rooms again.
    fn reload_rooms(&self) -> Result<()> {
        let mut known = std::collections::HashSet::new();
        for k in self.inner.rooms.iter().keys() {
            if let Some(room) = std::str::from_utf8(&k?).ok().and_then(RoomName::parse) {
                known.insert(room);
            }
        }
        *self.lock_rooms() = known;
        Ok(())
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
