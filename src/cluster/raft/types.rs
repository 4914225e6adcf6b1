//! What the replicated log carries, and how its nodes are named.
//!
//! One entry is a batch of writes from one proposer (a node's hub and
//! sessions): chat and private messages, ack batches, read positions,
//! room memberships. The leader stamps it
//! with its clock when it takes it (`ts_ms`), never less than the stamp
//! before it, so cursors assigned when the entry is applied depend on the
//! log alone and are the same on every node.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{Cursor, MsgKind, RoomName, Status, StoredMsg, Username};
use crate::storage::AccountOp;

openraft::declare_raft_types!(
    /// hubbub's log: entries are [`Request`]s, nodes [`NodeInfo`]s.
    pub TypeConfig:
        D = Request,
        R = (),
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

/// openraft's numeric node id for a node name: the first 8 bytes of its
/// SHA-256, the same on every node.
pub type NodeId = u64;

pub fn node_id(name: &str) -> NodeId {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// A node as the log's membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `--node-id`.
    pub name: String,
    /// Where its node links listen (`--cluster-advertise`).
    pub addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// One log entry's payload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    /// The leader's clock when it took the entry (ms since the epoch).
    pub ts_ms: u64,
    pub writes: Vec<Write>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Write {
    Post(Post),
    Ack {
        by: Username,
        ids: Vec<Uuid>,
        status: Status,
    },
    /// An account change; `op_id` finds the caller waiting on the node that
    /// proposed it.
    Account {
        op_id: Uuid,
        op: AccountOp,
    },
    /// A chat message with mentions. A variant of its own, added last, so
    /// that entries written before it (variants are numbered in order) and
    /// a `Post` without mentions stay as they were.
    Mentioned {
        post: Post,
        mentions: Vec<Username>,
    },
    /// A `read` frame: `user`'s read position in `room` moves to `cursor`
    /// if that is forward. Added after `Mentioned`, for the same reason.
    Read {
        user: Username,
        room: RoomName,
        cursor: Cursor,
    },
    /// `user` joined `room` for the first time (as the proposing node's
    /// own records saw it); applied idempotently on every node.
    Member {
        room: RoomName,
        user: Username,
    },
}

impl Write {
    /// The write that proposes `m` (its cursor and time come from the log).
    pub fn of_msg(m: &StoredMsg) -> Write {
        let post = Post {
            id: m.id,
            kind: m.kind,
            room: m.room.clone(),
            sender: m.sender.clone(),
            target: m.target.clone(),
            content: m.content.clone(),
            action: m.action,
        };
        if m.mentions.is_empty() {
            Write::Post(post)
        } else {
            Write::Mentioned {
                post,
                mentions: m.mentions.clone(),
            }
        }
    }
}

impl Post {
    /// The message as stored, at the cursor the log gave it.
    pub fn stored(self, mentions: Vec<Username>, cursor: Cursor) -> StoredMsg {
        StoredMsg {
            id: self.id,
            kind: self.kind,
            room: self.room,
            sender: self.sender,
            target: self.target,
            content: self.content,
            action: self.action,
            ts_ms: cursor.ms,
            cursor,
            mentions,
        }
    }
}

/// A chat or private message as proposed: the cursor and time come from the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Post {
    pub id: Uuid,
    pub kind: MsgKind,
    pub room: RoomName,
    pub sender: Username,
    pub target: Option<Username>,
    pub content: String,
    pub action: bool,
}

/// bincode 2 with the standard configuration: the log's and the links' encoding.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
}

/// The largest value a record may claim when decoded (a stored entry or a
/// link message): a corrupt length prefix then fails to decode instead of
/// asking for an absurd allocation, which would abort the process.
pub const DECODE_LIMIT: usize = 256 << 20;

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    bincode::serde::decode_from_slice(b, config).map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_travel_in_the_log_and_old_entries_still_decode() {
        let (bob, room) = (
            Username::parse("bob").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let c = Cursor { ms: 9, seq: 1 };
        let mut m = Write::Post(Post {
            id: Uuid::nil(),
            kind: MsgKind::Chat,
            room,
            sender: Username::parse("ann").unwrap(),
            target: None,
            content: "hi @bob".into(),
            action: false,
        });
        // An entry as the versions before mentions wrote it: variant 0, a Post.
        let old = encode(&m).unwrap();
        assert_eq!(old[0], 0);
        let Ok(Write::Post(p)) = decode::<Write>(&old) else {
            panic!("an old entry no longer decodes")
        };
        let mut stored = p.stored(vec![bob.clone()], c);
        m = Write::of_msg(&stored);
        let Ok(Write::Mentioned { post, mentions }) = decode::<Write>(&encode(&m).unwrap()) else {
            panic!("mentions lost on the way")
        };
        assert_eq!(post.stored(mentions, c), stored);
        stored.mentions.clear();
        assert!(matches!(Write::of_msg(&stored), Write::Post(_)));
    }

    #[test]
    fn reads_and_members_travel_in_the_log_and_old_entries_still_decode() {
        let (bob, room) = (
            Username::parse("bob").unwrap(),
            RoomName::parse("lobby").unwrap(),
        );
        let ack = Write::Ack {
            by: bob.clone(),
            ids: vec![Uuid::nil()],
            status: Status::Seen,
        };
        // Variants keep their numbers: an entry written before these decodes as it was.
        let old = encode(&ack).unwrap();
        assert_eq!(old[0], 1);
        assert!(matches!(decode::<Write>(&old), Ok(Write::Ack { by, .. }) if by == bob));
        let cursor = Cursor { ms: 9, seq: 2 };
        let read = encode(&Write::Read {
            user: bob.clone(),
            room: room.clone(),
            cursor,
        })
        .unwrap();
        assert_eq!(read[0], 4, "appended after Mentioned");
        let Ok(Write::Read {
            user,
            room: r,
            cursor: c,
        }) = decode::<Write>(&read)
        else {
            panic!("a read lost on the way")
        };
        assert_eq!((user, &r, c), (bob.clone(), &room, cursor));
        let member = encode(&Write::Member {
            room: room.clone(),
            user: bob.clone(),
        })
        .unwrap();
        assert_eq!(member[0], 5);
        assert!(
            matches!(decode::<Write>(&member), Ok(Write::Member { room: r, user }) if r == room && user == bob)
        );
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("n1"), node_id("n1"));
        assert_ne!(node_id("n1"), node_id("n2"));
        // Pinned: every node must compute the same id for a name, in every version.
        assert_eq!(node_id("n1"), 0x676b8bb84ce7267d_u64);
    }
}
