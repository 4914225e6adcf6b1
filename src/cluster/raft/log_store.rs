//! The replicated log's entries and vote on disk: openraft's log storage
//! (storage-v2) over the byte-level log of `storage` (two trees of the
//! store's own database). Entries, the vote and log ids are bincode 2
//! (standard config) of their serde forms.
//!
//! What openraft requires, and where it is kept:
//! - `append`: the callback only after the flush (the entries are readable
//!   before: openraft's replication may read them right away);
//! - `save_vote`: on disk before returning;
//! - `truncate(id)`: from `id.index` on, inclusive; `purge(id)`: up to
//!   `id.index`, inclusive, with "last purged" recorded first, and
//!   `last_log_id` = last purged while the log is empty;
//! - a stored entry that does not decode is a `StorageError` (openraft then
//!   stops this node's Raft), never a panic.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::{Serialize, de::DeserializeOwned};

use super::types::{self, DECODE_LIMIT};
use crate::error::InternalError;
use crate::storage::{RaftLog, RaftMeta, Store};

/// The largest encoded entry `append` writes, well under `DECODE_LIMIT`
/// (a decoded value may claim more bytes than it took on disk, e.g. varint
/// integers), so whatever was written can be read back.
const MAX_ENTRY_BYTES: usize = 64 << 20;
const _: () = assert!(MAX_ENTRY_BYTES < DECODE_LIMIT);

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    types::encode(v).map_err(|e| AnyError::new(&e))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    types::decode(b).map_err(|e| AnyError::new(&e))
}

fn storage(e: InternalError) -> AnyError {
    AnyError::new(&e)
}

/// openraft's log storage for type config `C` on one store's database.
/// Cheap to clone: every clone (e.g. the log reader openraft's replication
/// tasks get) shares the same trees.
pub struct LogStore<C> {
    log: RaftLog,
    /// `fn() -> C`: the store holds no `C`, so it is Send and Sync whatever `C` is.
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            log: self.log.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the log's trees in `store`'s database (creating them on first use).
    pub fn open(store: &Store) -> Result<Self, InternalError> {
        Ok(LogStore {
            log: store.raft_log()?,
            _config: PhantomData,
        })
    }

    /// Decodes the entry stored at `index`, checking it claims that index.
    // openraft's error type, large or not: every trait method returns it.
    #[allow(clippy::result_large_err)]
    fn decode_entry(index: u64, bytes: &[u8]) -> Result<C::Entry, StorageError<C::NodeId>> {
        let entry: C::Entry =
            decode(bytes).map_err(|e| StorageIOError::read_log_at_index(index, e))?;
        let claimed = entry.get_log_id().index;
        if claimed != index {
            let e = AnyError::error(format!("entry stored at {index} says it is {claimed}"));
            return Err(StorageIOError::read_log_at_index(index, e).into());
        }
        Ok(entry)
    }

    fn read_meta<T: DeserializeOwned>(&self, name: RaftMeta) -> Result<Option<T>, AnyError> {
        match self.log.meta(name).map_err(storage)? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some),
        }
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    #[allow(clippy::result_large_err)] // openraft's error type (see `decode_entry`)
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let rows = self
            .log
            .range(range)
            .map_err(|e| StorageIOError::read_logs(storage(e)))?;
        rows.into_iter()
            .map(|(index, bytes)| Self::decode_entry(index, &bytes))
            .collect()
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged: Option<LogId<C::NodeId>> = self
            .read_meta(RaftMeta::LastPurged)
            .map_err(StorageIOError::read_logs)?;
        let last_entry = match self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(storage(e)))?
        {
            None => None,
            Some((index, bytes)) => Some(Self::decode_entry(index, &bytes)?.get_log_id().clone()),
        };
        // A purge's removal may be lost in a crash (it is flushed with the
        // next append, after "last purged"): an entry at or below the last
        // purged id is a leftover, not the end of the log.
        let last_log_id = match (&last_entry, &last_purged) {
            (Some(e), Some(p)) if e.index <= p.index => last_purged.clone(),
            (None, _) => last_purged.clone(),
            _ => last_entry,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(vote).map_err(StorageIOError::write_vote)?;
        // Flushed before returning: a vote answered must survive a crash.
        self.log
            .put_meta(RaftMeta::Vote, &bytes)
            .await
            .map_err(|e| StorageIOError::write_vote(storage(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self
            .read_meta(RaftMeta::Vote)
            .map_err(StorageIOError::read_vote)?)
    }

    /// Not flushed here: openraft 0.9.25 saves the committed id only after
    /// the entries it covers were appended and flushed, and the next flush
    /// carries it. A committed id lost in a crash only means the restarted
    /// node re-applies less at start and learns the rest from the leader.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(&committed).map_err(StorageIOError::write)?;
        self.log
            .stage_meta(RaftMeta::Committed, &bytes)
            .map_err(|e| StorageIOError::write(storage(e)))?;
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        // Stored as an `Option` (openraft may save `None`); absent is `None` too.
        let stored: Option<Option<LogId<C::NodeId>>> = self
            .read_meta(RaftMeta::Committed)
            .map_err(StorageIOError::read)?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for entry in entries {
            let log_id = entry.get_log_id().clone();
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(log_id.clone(), e))?;
            if bytes.len() > MAX_ENTRY_BYTES {
                let e = AnyError::error(format!("entry of {} bytes", bytes.len()));
                return Err(StorageIOError::write_log_entry(log_id, e).into());
            }
            batch.push((log_id.index, bytes));
        }
        // One atomic batch, then one flush of the whole database; only then
        // does openraft learn the entries are on disk.
        self.log
            .append(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(storage(e)))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(from = log_id.index, "truncating the replicated log");
        self.log
            .truncate_from(log_id.index)
            .await
            .map_err(|e| delete_logs::<C>(storage(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(through = log_id.index, "purging the replicated log");
        let bytes = encode(&log_id).map_err(delete_logs::<C>)?;
        self.log
            .purge_through(log_id.index, &bytes)
            .await
            .map_err(|e| delete_logs::<C>(storage(e)))?;
        Ok(())
    }
}

fn delete_logs<C: RaftTypeConfig>(e: AnyError) -> StorageIOError<C::NodeId> {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, e)
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
