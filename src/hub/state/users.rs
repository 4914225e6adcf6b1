//! Each user's connections here and each connection's sessions: the index
//! that joins, caps, replacements, kicks and evictions look things up in.
//!
//! A multi-room connection holds up to `--max-rooms-per-connection`
//! sessions (subscriptions), and a user several connections, so a user may
//! have thousands of sessions. A flat list of them made every subscribe
//! scan all of them several times (the connection's first session, the
//! same client's other connections, the connection count for the cap) and
//! every leave remove from the middle of it; grouped by connection, those
//! are a walk over the user's few connections and one connection's list.

use uuid::Uuid;

use crate::protocol::ClientId;

/// One connection of a user: what its sessions share.
pub(super) struct UserConn {
    pub(super) conn: Uuid,
    /// The client id it connected with (one per connection: every
    /// subscription of a multi-room connection comes from the same request).
    pub(super) client: ClientId,
    /// Wall-clock ms of its first session's join: its later subscriptions
    /// keep it (other nodes order connections, not subscriptions).
    pub(super) joined_ms: u64,
    /// Its sessions, in join order.
    pub(super) sessions: Vec<Uuid>,
}

/// A user's connections here, oldest first.
#[derive(Default)]
pub(super) struct UserConns {
    conns: Vec<UserConn>,
}

impl UserConns {
    /// Adds session `id` of `conn`; returns the connection's join time
    /// (`joined_ms` for a new connection, its first session's otherwise).
    pub(super) fn add(&mut self, id: Uuid, conn: Uuid, client: &ClientId, joined_ms: u64) -> u64 {
        if let Some(c) = self.conns.iter_mut().find(|c| c.conn == conn) {
            c.sessions.push(id);
            return c.joined_ms;
        }
        self.conns.push(UserConn {
            conn,
            client: client.clone(),
            joined_ms,
            sessions: vec![id],
        });
        joined_ms
    }

    /// Forgets session `id` of `conn` (and the connection with its last
    /// session); true when the user has no session left.
    pub(super) fn remove(&mut self, id: Uuid, conn: Uuid) -> bool {
        if let Some(at) = self.conns.iter().position(|c| c.conn == conn) {
            let sessions = &mut self.conns[at].sessions;
            if let Some(i) = sessions.iter().position(|s| *s == id) {
                // Keeps join order: the oldest session is the connection's first.
                sessions.remove(i);
            }
            if sessions.is_empty() {
                self.conns.remove(at);
            }
        }
        self.conns.is_empty()
    }

    /// The connections, oldest first.
    pub(super) fn conns(&self) -> &[UserConn] {
        &self.conns
    }

    /// The sessions of `conn`, in join order (empty: not one of the user's).
    pub(super) fn sessions_of(&self, conn: Uuid) -> &[Uuid] {
        self.conns
            .iter()
            .find(|c| c.conn == conn)
            .map_or(&[], |c| &c.sessions)
    }

    /// Every session, connection by connection (oldest first), each
    /// connection's in join order.
    pub(super) fn sessions(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.conns.iter().flat_map(|c| c.sessions.iter().copied())
    }
}
