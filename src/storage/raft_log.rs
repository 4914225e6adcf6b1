//! The replicated log's entries and vote, as bytes, in two trees of the
//! store's own database (cluster mode only): one flush makes a batch of log
//! entries durable together with whatever else was written before it.
//!
//! - `raftindex_entry`: log index (big-endian u64, so key order is index
//!   order) → one encoded log entry.
//! - `raftmeta_value`: a [`RaftMeta`] name → a small encoded value.
//!
//! This layer knows indexes and bytes only; `cluster` encodes the entries
//! and the vote (and decides what a value means). The trees are opened by
//! [`Store::raft_log`], so a single node never creates them.

use std::ops::RangeBounds;

use super::{Result, Store};
use crate::error::{InternalError, StorageFault, StorageFaultKind};

/// The named values of `raftmeta_value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftMeta {
    /// The last vote this node cast or saw (term and candidate).
    Vote,
    /// The highest log id this node knows to be committed.
    Committed,
    /// The log id of the last entry removed by [`RaftLog::purge_through`].
    LastPurged,
    /// The state machine's own record: last applied log id, membership,
    /// the cursor head (written after the entry's data, never before).
    StateMachine,
}

impl RaftMeta {
    pub(super) fn key(self) -> &'static [u8] {
        match self {
            RaftMeta::Vote => b"vote",
            RaftMeta::Committed => b"committed",
            RaftMeta::LastPurged => b"last_purged",
            RaftMeta::StateMachine => b"state_machine",
        }
    }
}

/// A cheap, cloneable handle on the two trees of the replicated log.
#[derive(Clone)]
pub struct RaftLog {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
}

impl Store {
    /// Opens (or creates) the replicated log's trees. Only cluster mode calls
    /// this: a single node's database never gets them.
    pub fn raft_log(&self) -> Result<RaftLog> {
        Ok(RaftLog {
            db: self.inner.db.clone(),
            entries: self.inner.db.open_tree("raftindex_entry")?,
            meta: self.inner.db.open_tree("raftmeta_value")?,
        })
    }
}

/// A stored key that is not 8 bytes: the tree was written by something else.
fn corrupt_key(key: &[u8]) -> InternalError {
    InternalError::Storage(StorageFault::new(
        StorageFaultKind::Other,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("raft log key of {} bytes, not 8", key.len()),
        ),
    ))
}

fn index_of(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| corrupt_key(key))?;
    Ok(u64::from_be_bytes(bytes))
}

impl RaftLog {
    /// Writes a batch of `(index, entry)` (one atomic sled batch: all or
    /// none) and flushes the whole database before returning. The entries
    /// are readable as soon as the batch is applied, durable when this returns.
    pub async fn append(&self, batch: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let mut b = sled::Batch::default();
        for (index, bytes) in batch {
            b.insert(&index.to_be_bytes(), bytes);
        }
        self.entries.apply_batch(b)?;
        self.flush().await
    }

    /// One fsync for every tree of the database (sled has no per-tree flush).
    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The entries whose index is in `range`, in index order. Reads memory or
    /// disk (sled's page cache); nothing is flushed.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let start = range.start_bound().map(|i| i.to_be_bytes());
        let end = range.end_bound().map(|i| i.to_be_bytes());
        self.entries
            .range::<[u8; 8], _>((start, end))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((index_of(&k)?, v.to_vec()))
            })
            .collect()
    }

    /// The entry with the highest index, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>> {
        match self.entries.last()? {
            None => Ok(None),
            Some((k, v)) => Ok(Some((index_of(&k)?, v.to_vec()))),
        }
    }

    /// Removes every entry from `index` (inclusive) onwards, durably: a
    /// leader's conflicting tail must not come back after a crash.
    pub async fn truncate_from(&self, index: u64) -> Result<()> {
        self.remove_keys(self.entries.range(index.to_be_bytes()..))?;
        self.flush().await
    }

    /// Removes every entry up to `index` (inclusive). `last_purged` (the
    /// encoded id of entry `index`) is made durable first, so a crash in
    /// between leaves entries that are already marked purged, never a log
    /// whose start is unknown. The removal itself is not flushed here (the
    /// next append's flush carries it): after a crash, entries up to
    /// `last_purged` may still be there, so a reader takes `last_purged`
    /// over a lower last entry (the next purge removes them).
    pub async fn purge_through(&self, index: u64, last_purged: &[u8]) -> Result<()> {
        self.put_meta(RaftMeta::LastPurged, last_purged).await?;
        self.remove_keys(self.entries.range(..=index.to_be_bytes()))
    }

    /// Removes the listed keys in one atomic batch (all or none: no hole).
    fn remove_keys(&self, keys: sled::Iter) -> Result<()> {
        let mut b = sled::Batch::default();
        for kv in keys.keys() {
            b.remove(kv?);
        }
        self.entries.apply_batch(b)?;
        Ok(())
    }

    pub fn meta(&self, name: RaftMeta) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(name.key())?.map(|v| v.to_vec()))
    }

    /// Stores a named value and flushes before returning (a vote must be on
    /// disk before the node answers the request that changed it).
    pub async fn put_meta(&self, name: RaftMeta, value: &[u8]) -> Result<()> {
        self.stage_meta(name, value)?;
        self.flush().await
    }

    /// Removes a named value without flushing.
    pub(super) fn remove_meta(&self, name: RaftMeta) -> Result<()> {
        self.meta.remove(name.key())?;
        Ok(())
    }

    /// Stores a named value without flushing: the next flush (the next
    /// append's) carries it. For values that may lag on disk, like the
    /// committed log id: if it lags after a crash, a restarted node
    /// re-applies a little less at start and learns the rest from the leader.
    pub fn stage_meta(&self, name: RaftMeta, value: &[u8]) -> Result<()> {
        self.meta.insert(name.key(), value)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "raft_log_tests.rs"]
mod tests;
