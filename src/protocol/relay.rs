//! Cluster mode: what one node's hub tells the others' (over the node
//! links), both ways. Out: the hub core emits it for the server to carry to
//! the other nodes; in: another node's, back into the core. One type for the
//! hub and the cluster, which do not know each other.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ClientId, RoomName, Username};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relay {
    /// A session for (user, client) registered: older sessions with the same
    /// (user, client) on the other nodes close with 4001 (anti-zombie).
    /// Older = a smaller (`at_ms`, `session`), so that of two sessions
    /// registered at once on two nodes exactly one survives, and the new one
    /// is never closed by its own kick.
    Joined {
        user: Username,
        client: ClientId,
        session: Uuid,
        at_ms: u64,
    },
    /// A typing state that passed the 2/s throttle on the typist's node.
    Typing {
        room: RoomName,
        user: Username,
        active: bool,
    },
}

impl Relay {
    /// The names decode without their checks (serde): a relay that arrived
    /// from another node is checked again before it is used.
    pub fn valid(&self) -> bool {
        match self {
            Relay::Joined { user, client, .. } => {
                Username::parse(user.as_str()).is_some()
                    && ClientId::parse(client.as_str()).is_some()
            }
            Relay::Typing { room, user, .. } => {
                RoomName::parse(room.as_str()).is_some() && Username::parse(user.as_str()).is_some()
            }
        }
    }
}

/// Cluster mode: another node's users in a room, as its gossiped presence
/// digest says (resolved by the cluster), for the hub's presence union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPresence {
    /// `node`'s users in `room` now (empty: none any more).
    Users {
        node: String,
        room: RoomName,
        users: Vec<Username>,
    },
    /// `node` died, stopped serving or restarted as a new generation: none
    /// of its users count any more (it is read afresh once it serves again).
    Gone { node: String },
}
