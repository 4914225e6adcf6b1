//! A real single-node openraft `Raft` on the log store (real sled in a temp
//! dir): it forms, commits writes, and after a restart on the same database
//! re-applies everything committed into a state machine that starts empty
//! (`read_committed`), and goes on where it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, ServerState};

use super::LogStore;
use super::test_sm::{MemStateMachine, TestConfig};
use crate::storage::Store;

/// A single node never sends an RPC; any attempt is "unreachable".
struct NoPeers;

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "no peers in this test",
    )))
}

impl RaftNetwork<TestConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TestConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TestConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

impl RaftNetworkFactory<TestConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

async fn start(store: &Store, sm: MemStateMachine) -> Raft<TestConfig> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let ls = LogStore::<TestConfig>::open(store).unwrap();
    Raft::new(1, Arc::new(config), NoPeers, ls, sm)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restarted_node_reapplies_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let wait = Some(Duration::from_secs(10));
    let last = {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let raft = start(&store, MemStateMachine::default()).await;
        raft.initialize(BTreeMap::from([(1u64, BasicNode::default())]))
            .await
            .unwrap();
        raft.wait(wait)
            .state(ServerState::Leader, "leader")
            .await
            .unwrap();
        let mut last = 0;
        for i in 0..10 {
            let resp = raft.client_write(format!("w{i}")).await.unwrap();
            assert_eq!(resp.data, format!("w{i}"));
            last = resp.log_id.index;
        }
        raft.shutdown().await.unwrap();
        last
    };

    let store = Store::open(dir.path(), 1 << 20).unwrap();
    // A fresh state machine: everything it holds after the start came from
    // the log, up to the committed id the log store kept.
    let sm = MemStateMachine::default();
    let raft = start(&store, sm.clone()).await;
    // Re-applied while starting, before any election could commit a new
    // entry (which would apply the rest anyway): this is `read_committed`.
    let applied = sm.data().last_applied.map(|id| id.index);
    assert_eq!(
        applied,
        Some(last),
        "re-applied up to the committed id at start"
    );
    let values: Vec<String> = sm.data().kv.into_values().collect();
    assert_eq!(values, (0..10).map(|i| format!("w{i}")).collect::<Vec<_>>());
    raft.wait(wait)
        .state(ServerState::Leader, "leader again")
        .await
        .unwrap();
    let resp = raft.client_write("after".to_owned()).await.unwrap();
    assert!(resp.log_id.index > last);
    raft.shutdown().await.unwrap();
}
