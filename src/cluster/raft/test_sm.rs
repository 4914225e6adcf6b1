//! A test-only state machine for the log store's tests: a map in memory,
//! with snapshots as bytes. openraft's storage suite needs one beside the
//! log store; hubbub's real state machine is its storage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| AnyError::new(&e))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| AnyError::new(&e))
}

type Err = StorageError<u64>;

openraft::declare_raft_types!(
    /// Application data and responses are strings (the defaults): enough
    /// to store, read back and corrupt.
    pub TestConfig: D = String, R = String
);

// ------------------------------------------------------------ state machine

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    pub kv: BTreeMap<u64, String>,
}

#[derive(Default)]
struct SmInner {
    data: SmData,
    current: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

/// A test-only state machine: a map in memory behind a std mutex (never
/// held across `.await`).
#[derive(Clone, Default)]
pub struct MemStateMachine {
    inner: Arc<Mutex<SmInner>>,
}

pub struct MemSnapshotBuilder {
    data: SmData,
    inner: Arc<Mutex<SmInner>>,
}

impl RaftSnapshotBuilder<TestConfig> for MemSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, Err> {
        let bytes = encode(&self.data).map_err(|e| StorageIOError::write_snapshot(None, e))?;
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id: format!("{:?}", self.data.last_applied),
        };
        self.inner.lock().unwrap().current = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Err> {
        let inner = self.inner.lock().unwrap();
        Ok((inner.data.last_applied, inner.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, Err>
    where
        I: IntoIterator<Item = Entry<TestConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().unwrap();
        let mut out = Vec::new();
        for e in entries {
            inner.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(String::new()),
                EntryPayload::Normal(s) => {
                    inner.data.kv.insert(e.log_id.index, s.clone());
                    out.push(s);
                }
                EntryPayload::Membership(m) => {
                    inner.data.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(String::new());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> MemSnapshotBuilder {
        MemSnapshotBuilder {
            data: self.inner.lock().unwrap().data.clone(),
            inner: self.inner.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let bytes = snapshot.into_inner();
        let data: SmData =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        let mut inner = self.inner.lock().unwrap();
        inner.data = data;
        inner.current = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TestConfig>>, Err> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.current.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

impl MemStateMachine {
    /// A copy of the state (what was applied so far).
    pub fn data(&self) -> SmData {
        self.inner.lock().unwrap().data.clone()
    }
}
