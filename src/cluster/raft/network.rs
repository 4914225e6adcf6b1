//! Raft's RPCs and forwarded writes over the node links.
//!
//! Every call is one link request: an encoded [`Call`] answered by an
//! encoded [`Answer`]. A link that is down, full or dropped is "unreachable"
//! to openraft (it backs off and retries); an error the peer's Raft returned
//! travels back as that error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use openraft::Raft;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::types::{NodeId, NodeInfo, Request, TypeConfig, decode, encode};
use crate::cluster::link::{LinkError, LinkHandler, Links};
use crate::cluster::presence::Table;
use crate::protocol::{RoomName, Username};
use crate::storage::AccountOutcome;

/// What one node asks another.
#[derive(Serialize, Deserialize)]
pub enum Call {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A batch of writes for the leader to propose.
    Forward(Request),
    /// The leader's read index: the log index a node must have applied to
    /// have everything committed when the call was answered.
    ReadIndex,
    /// Removes a node from the log's membership (an operator's decision).
    Remove(String),
    /// The leader, shutting down, asks this node to stand for election now
    /// (see `handover`). Honoured only when the caller is the leader.
    Elect,
    /// A room's local users on the callee, if `hash` is still that of its
    /// current list (see `cluster::presence`).
    Presence {
        room: RoomName,
        hash: String,
    },
}

/// The answer to a [`Call`] of the same kind.
#[derive(Serialize, Deserialize)]
pub enum Answer {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Forward(Result<(), ForwardError>),
    /// `None`: the callee is not the leader (or could not confirm it).
    ReadIndex(Option<u64>),
    Remove(Result<(), ForwardError>),
    /// Whether an election was started.
    Elect(bool),
    /// `None`: no such room here, or its list has another hash now.
    Presence(Option<Vec<Username>>),
    /// This node's Raft is not running yet (or any more).
    NotRunning,
    /// The call did not decode.
    BadCall,
}

/// Why a forwarded batch was not committed by the node it was sent to.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// That node is not the leader (any more); it names the one it knows.
    #[error("not the leader; the leader is {0:?}")]
    NotLeader(Option<String>),
    #[error("{0}")]
    Failed(String),
}

/// What the link handler and the writer share: the Raft (set once it runs)
/// and the leader's clock stamp.
pub struct Shared {
    pub raft: OnceLock<Raft<TypeConfig>>,
    /// The last stamp this node gave an entry as leader (ms).
    pub stamp: std::sync::atomic::AtomicU64,
    /// Account changes proposed here, by op id: the caller waiting for the
    /// outcome (answered when this node applies the entry).
    waiters: Mutex<HashMap<Uuid, oneshot::Sender<AccountOutcome>>>,
    /// Writes proposed here hold it shared while they are proposed; a
    /// leader that hands over (see `handover`) holds it exclusively, so it
    /// first waits for the writes in flight, then none start until it is
    /// done: the log stops growing and the successor can have all of it.
    pub gate: tokio::sync::RwLock<()>,
    /// The term this node leads and since when (see `handover::track`).
    pub led_since: Mutex<Option<(u64, std::time::Instant)>>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            raft: OnceLock::new(),
            stamp: std::sync::atomic::AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
            led_since: Mutex::new(None),
        })
    }

    /// This node's read index, if it is the leader (confirmed by a quorum).
    pub async fn read_index(&self) -> Option<u64> {
        let raft = self.raft.get()?;
        let (read, _applied) = raft.get_read_log_id().await.ok()?;
        Some(read.map_or(0, |l| l.index))
    }

    /// Removes `name` from the membership; only the leader can.
    pub async fn remove_local(&self, name: &str) -> Result<(), ForwardError> {
        use openraft::ChangeMembers;
        let Some(raft) = self.raft.get() else {
            return Err(ForwardError::Failed("the log is not running".into()));
        };
        let id = super::types::node_id(name);
        let m = raft.metrics().borrow().clone();
        let voters: std::collections::BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
        let known = m.membership_config.nodes().any(|(i, _)| *i == id);
        if !known {
            return Err(ForwardError::Failed(format!("{name} is not a member")));
        }
        let change = if voters.contains(&id) {
            if voters.len() <= 1 {
                return Err(ForwardError::Failed(
                    "the last voter cannot be removed".into(),
                ));
            }
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        match raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ForwardError::NotLeader(
                    f.leader_node.as_ref().map(|n| n.name.clone()),
                )),
                None => Err(ForwardError::Failed(e.to_string())),
            },
        }
    }

    pub fn add_waiter(&self, op: Uuid, reply: oneshot::Sender<AccountOutcome>) {
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(op, reply);
        }
    }

    pub fn take_waiter(&self, op: &Uuid) -> Option<oneshot::Sender<AccountOutcome>> {
        self.waiters.lock().ok()?.remove(op)
    }

    /// Proposes `req` through this node's Raft, stamped with this node's
    /// clock (never below its last stamp). Only a leader succeeds.
    pub async fn write_local(&self, mut req: Request) -> Result<(), ForwardError> {
        use std::sync::atomic::Ordering;
        let Some(raft) = self.raft.get() else {
            return Err(ForwardError::Failed("the log is not running".into()));
        };
        // Waits while a hand-over runs (bounded by the hand-over's limit);
        // then, most likely, this node is not the leader any more.
        let _proposing = self.gate.read().await;
        let now = crate::cluster::gossip::transport::wall_ms();
        let prev = self.stamp.fetch_max(now, Ordering::SeqCst);
        req.ts_ms = prev.max(now);
        match raft.client_write(req).await {
            Ok(_) => Ok(()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ForwardError::NotLeader(
                    f.leader_node.as_ref().map(|n| n.name.clone()),
                )),
                None => Err(ForwardError::Failed(e.to_string())),
            },
        }
    }
}

/// Serves calls arriving over the links (presence fetches from this node's
/// presence table); one-way messages go to the inbox.
pub struct Handler(
    pub Arc<Shared>,
    pub Arc<crate::cluster::live::Inbox>,
    pub Arc<Table>,
);

#[async_trait::async_trait]
impl LinkHandler for Handler {
    async fn request(&self, from: &str, body: Bytes) -> Bytes {
        let answer = match decode::<Call>(&body) {
            Err(e) => {
                tracing::warn!(peer = from, error = %e, "a link call that does not decode");
                Answer::BadCall
            }
            Ok(call) => match (call, self.0.raft.get()) {
                (Call::Forward(req), _) => Answer::Forward(self.0.write_local(req).await),
                (Call::ReadIndex, _) => Answer::ReadIndex(self.0.read_index().await),
                (Call::Remove(name), _) => Answer::Remove(self.0.remove_local(&name).await),
                (Call::Presence { room, hash }, _) => Answer::Presence(self.2.fetch(&room, &hash)),
                (_, None) => Answer::NotRunning,
                (Call::Elect, Some(raft)) => Answer::Elect(stand(raft, from).await),
                (Call::Append(r), Some(raft)) => Answer::Append(raft.append_entries(r).await),
                (Call::Vote(r), Some(raft)) => Answer::Vote(raft.vote(r).await),
                (Call::Snapshot(r), Some(raft)) => Answer::Snapshot(raft.install_snapshot(r).await),
            },
        };
        match encode(&answer) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "an answer that does not encode");
                Bytes::new()
            }
        }
    }

    fn message(&self, from: &str, body: Bytes) {
        self.1.received(from, &body);
    }
}

/// Starts an election on this node if `from` is the leader it follows.
async fn stand(raft: &Raft<TypeConfig>, from: &str) -> bool {
    let leader = raft.metrics().borrow().current_leader;
    if leader
        .and_then(|l| super::node::name_of(raft, l))
        .as_deref()
        != Some(from)
    {
        tracing::warn!(
            peer = from,
            "asked to stand for election by a node that does not lead"
        );
        return false;
    }
    tracing::info!(
        leader = from,
        "standing for election: the leader hands over"
    );
    raft.trigger().elect().await.is_ok()
}

/// openraft's network: one [`Conn`] per target node.
pub struct Network {
    pub links: Links,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Conn {
        Conn {
            links: self.links.clone(),
            target,
            peer: node.name.clone(),
        }
    }
}

pub struct Conn {
    links: Links,
    target: NodeId,
    peer: String,
}

/// The RPC's failure as openraft sees it.
#[derive(Debug, thiserror::Error)]
enum CallFailed {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the peer's answer: {0}")]
    Answer(&'static str),
}

impl Conn {
    async fn call(&self, call: &Call, ttl: Duration) -> Result<Answer, CallFailed> {
        let body = encode(call).map_err(|_| CallFailed::Answer("the call does not encode"))?;
        let reply = self.links.call(&self.peer, Bytes::from(body), ttl).await?;
        match decode::<Answer>(&reply) {
            Ok(Answer::NotRunning) => Err(CallFailed::Answer("its log is not running")),
            Ok(Answer::BadCall) => Err(CallFailed::Answer("it could not decode the call")),
            Ok(a) => Ok(a),
            Err(_) => Err(CallFailed::Answer("it does not decode")),
        }
    }

    fn failed<E: std::error::Error>(&self, e: CallFailed) -> RPCError<NodeId, NodeInfo, E> {
        match e {
            CallFailed::Link(LinkError::TooLarge(_)) | CallFailed::Answer(_) => {
                RPCError::Network(NetworkError::new(&e))
            }
            CallFailed::Link(_) => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, NodeInfo, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

type Rpc<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, NodeInfo, E>>;

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        match self.call(&Call::Append(rpc), option.hard_ttl()).await {
            Ok(Answer::Append(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.failed(CallFailed::Answer("another kind"))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>> {
        match self.call(&Call::Vote(rpc), option.hard_ttl()).await {
            Ok(Answer::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.failed(CallFailed::Answer("another kind"))),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.call(&Call::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Answer::Snapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.failed(CallFailed::Answer("another kind"))),
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// Asks `leader` to remove `name` from the membership.
pub async fn remove(
    links: &Links,
    leader: &str,
    name: &str,
    ttl: Duration,
) -> Result<(), ForwardError> {
    let body =
        encode(&Call::Remove(name.to_owned())).map_err(|e| ForwardError::Failed(e.to_string()))?;
    let reply = links
        .call(leader, Bytes::from(body), ttl)
        .await
        .map_err(|e| ForwardError::Failed(e.to_string()))?;
    match decode::<Answer>(&reply) {
        Ok(Answer::Remove(r)) => r,
        _ => Err(ForwardError::Failed("no answer from the leader".into())),
    }
}

/// Asks `node` to stand for election (this node leads and hands over).
pub async fn elect(links: &Links, node: &str, ttl: Duration) -> bool {
    let Ok(body) = encode(&Call::Elect) else {
        return false;
    };
    let Ok(reply) = links.call(node, Bytes::from(body), ttl).await else {
        return false;
    };
    matches!(decode::<Answer>(&reply), Ok(Answer::Elect(true)))
}

/// Asks `leader` for its read index.
pub async fn read_index(links: &Links, leader: &str, ttl: Duration) -> Option<u64> {
    let body = encode(&Call::ReadIndex).ok()?;
    let reply = links.call(leader, Bytes::from(body), ttl).await.ok()?;
    match decode::<Answer>(&reply) {
        Ok(Answer::ReadIndex(i)) => i,
        _ => None,
    }
}

/// Sends `req` to `leader` to propose.
pub async fn forward(
    links: &Links,
    leader: &str,
    req: &Request,
    ttl: Duration,
) -> Result<(), ForwardError> {
    let body =
        encode(&Call::Forward(req.clone())).map_err(|e| ForwardError::Failed(e.to_string()))?;
    let reply = links
        .call(leader, Bytes::from(body), ttl)
        .await
        .map_err(|e| ForwardError::Failed(e.to_string()))?;
    match decode::<Answer>(&reply) {
        Ok(Answer::Forward(r)) => r,
        Ok(_) => Err(ForwardError::Failed("an answer of another kind".into())),
        Err(e) => Err(ForwardError::Failed(e.to_string())),
    }
}

/// Asks `node` for its local users in `room` whose list hashes to `hash`;
/// `None`: unreachable, or its list moved on (the caller reads the newer
/// digest first).
pub async fn presence(
    links: &Links,
    node: &str,
    room: &RoomName,
    hash: &str,
    ttl: Duration,
) -> Option<Vec<Username>> {
    let call = Call::Presence {
        room: room.clone(),
        hash: hash.to_owned(),
    };
    let body = encode(&call).ok()?;
    let reply = links.call(node, Bytes::from(body), ttl).await.ok()?;
    match decode::<Answer>(&reply) {
        Ok(Answer::Presence(users)) => users,
        _ => None,
    }
}
