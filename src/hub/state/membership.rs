//! Who is in which room: join (anti-zombie replace, the per-user cap), leave,
//! kick, eviction of a slow session, shutdown.

use uuid::Uuid;

use super::{Count, Effects, HubState, Relay, Removed, Session};
use crate::metrics::{Eviction, Out};
use crate::protocol::frames::encode;
use crate::protocol::{ClientId, CloseCode, RoomName, ServerMsg, Username};

impl HubState {
    pub(super) fn join(&mut self, id: Uuid, mut s: Session, fx: &mut Effects) {
        let (user, room) = (s.user.clone(), s.room.clone());
        let conns = self.by_user.entry(user.clone()).or_default();
        // Anti-zombie: the same (user, client id) on another connection replaces it whole.
        let replaced: Vec<Uuid> = conns
            .conns()
            .iter()
            .filter(|c| c.client == s.client && c.conn != s.conn)
            .flat_map(|c| c.sessions.iter().copied())
            .collect();
        // A connection's later subscriptions keep its first one's join time:
        // other nodes order connections, not subscriptions (`remote_kick`).
        s.joined_ms = conns.add(id, s.conn, &s.client, s.joined_ms);
        if self.replicated {
            // The same (user, client) on other nodes is replaced too.
            fx.relay.push(Relay::Joined {
                user: user.clone(),
                client: s.client.clone(),
                session: s.conn,
                at_ms: s.joined_ms,
            });
        }
        // Online anywhere before (here or, in a cluster, on another node):
        // then the room's list does not change and nobody else needs it again.
        let listed = self.listed(&room, &user);
        let r = self.rooms.entry(room.clone()).or_default();
        let was_present = r.members.contains_key(&user);
        r.members.entry(user.clone()).or_default().push(id);
        // The joiner gets the list at the next tick (the end of this turn),
        // uncoalesced like `/who`'s; the others only if it changed, when
        // the room's presence window allows.
        r.presence_joiners.push(id);
        if !listed {
            r.list_changed();
        }
        self.sessions.insert(id, s);
        self.replace(replaced, fx);
        self.cap_connections(&user, fx);
        if !self.sessions.contains_key(&id) {
            return self.joined_reply(&room, fx);
        }
        if !was_present {
            self.local_users_changed(&room, fx);
            self.system_to_others(&room, &user, &format!("{user} joined"), fx);
        }
        self.joined_reply(&room, fx);
    }

    fn joined_reply(&self, room: &RoomName, fx: &mut Effects) {
        fx.joined = Some(super::Joined {
            head: self.head,
            pending: self.pending(room),
        });
    }

    /// Over the per-user cap (connections, however many rooms each): the oldest go.
    fn cap_connections(&mut self, user: &Username, fx: &mut Effects) {
        let oldest: Vec<Vec<Uuid>> = match self.by_user.get(user) {
            Some(u) if u.conns().len() > self.max_sessions_per_user => {
                let excess = u.conns().len() - self.max_sessions_per_user;
                u.conns()[..excess]
                    .iter()
                    .map(|c| c.sessions.clone())
                    .collect()
            }
            _ => return,
        };
        for conn in oldest {
            fx.counts.push(Count::Eviction(Eviction::TooManySessions));
            for old in conn {
                self.remove_session(old, Some(CloseCode::Replaced), fx);
            }
        }
    }

    pub(super) fn kick(&mut self, user: &Username, family: Option<Uuid>, fx: &mut Effects) {
        for id in self.user_sessions(user, |_, s| family.is_none() || s.family == family) {
            fx.counts.push(Count::Eviction(Eviction::Revoked));
            self.remove_session(id, Some(CloseCode::Policy), fx);
        }
    }

    /// `user`'s home is another node now: its sessions here that were
    /// served as at home close with 1001.
    pub(super) fn move_away(&mut self, user: &Username, fx: &mut Effects) {
        for id in self.user_sessions(user, |_, s| !s.away) {
            fx.counts.push(Count::Eviction(Eviction::Moved));
            self.remove_session(id, Some(CloseCode::GoingAway), fx);
        }
    }

    /// The users with a session here served as at home (not away).
    pub(crate) fn homed_users(&self) -> Vec<Username> {
        self.by_user
            .iter()
            .filter(|(_, conns)| {
                conns
                    .sessions()
                    .any(|id| self.sessions.get(&id).is_some_and(|s| !s.away))
            })
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Another node registered a session for (user, client) at `kick`
    /// (ms, session id): this node's sessions with the same (user, client)
    /// registered before it close with 4001. A later one stays (it will
    /// have kicked the other), so two joins at once leave exactly one.
    pub(super) fn remote_kick(
        &mut self,
        user: &Username,
        client: &ClientId,
        kick: (u64, Uuid),
        fx: &mut Effects,
    ) {
        let older = self.user_sessions(user, |_, s| {
            s.client == *client && (s.joined_ms, s.conn) < kick
        });
        self.replace(older, fx);
    }

    /// `user`'s sessions here for which `keep` holds, connection by
    /// connection (oldest first), each connection's in join order.
    fn user_sessions(&self, user: &Username, keep: impl Fn(Uuid, &Session) -> bool) -> Vec<Uuid> {
        let Some(conns) = self.by_user.get(user) else {
            return Vec::new();
        };
        conns
            .sessions()
            .filter(|id| self.sessions.get(id).is_some_and(|s| keep(*id, s)))
            .collect()
    }

    /// The sessions (subscriptions) of one of `user`'s connections, in join order.
    fn conn_sessions(&self, user: &Username, conn: Uuid) -> Vec<Uuid> {
        self.by_user
            .get(user)
            .map(|u| u.sessions_of(conn).to_vec())
            .unwrap_or_default()
    }

    /// Closes `ids` with 4001: replaced by a newer session of their client.
    fn replace(&mut self, ids: Vec<Uuid>, fx: &mut Effects) {
        for id in ids {
            fx.counts.push(Count::Eviction(Eviction::Replaced));
            self.remove_session(id, Some(CloseCode::Replaced), fx);
        }
    }

    /// A session whose queue was full: closed with 4002 with every other
    /// subscription of its connection (they share the queue); nobody else waits.
    pub(super) fn evict(&mut self, id: Uuid, fx: &mut Effects) {
        if let Some(s) = self.sessions.get(&id) {
            fx.counts.push(Count::Eviction(Eviction::Slow));
            for sid in self.conn_sessions(&s.user.clone(), s.conn) {
                self.remove_session(sid, Some(CloseCode::Evicted), fx);
            }
        }
    }

    /// Removes a session, closing it with `close` if given. A user's last
    /// session in a room leaving makes a `left` line and a presence update.
    pub(super) fn remove_session(&mut self, id: Uuid, close: Option<CloseCode>, fx: &mut Effects) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        fx.removed.push(Removed { session: id, close });
        if let Some(conns) = self.by_user.get_mut(&s.user)
            && conns.remove(id, s.conn)
        {
            self.by_user.remove(&s.user);
        }
        let Some(room) = self.rooms.get_mut(&s.room) else {
            return;
        };
        let mut user_left = false;
        if let Some(ids) = room.members.get_mut(&s.user) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                room.members.remove(&s.user);
                room.typing_sent.remove(&s.user);
                room.typing_held.remove(&s.user);
                user_left = true;
            }
        }
        if room.members.is_empty() {
            // Room state is freed with its last member; its log stays on disk.
            self.rooms.remove(&s.room);
            self.local_users_changed(&s.room, fx);
            return;
        }
        if user_left {
            self.local_users_changed(&s.room, fx);
            let Some(room) = self.rooms.get_mut(&s.room) else {
                return;
            };
            room.list_changed();
            self.system_to_others(&s.room, &s.user, &format!("{} left", s.user), fx);
        }
    }

    /// Closes every session (shutdown). Nobody stays to hear `left` lines, so
    /// none are made: one pass, not one per session and room member.
    pub(super) fn close_all(&mut self, code: CloseCode, fx: &mut Effects) {
        fx.removed
            .extend(self.sessions.drain().map(|(session, _)| Removed {
                session,
                close: Some(code),
            }));
        self.by_user.clear();
        if self.replicated {
            fx.local_users.extend(self.rooms.keys().cloned());
        }
        self.rooms.clear();
    }

    pub(super) fn system_to_others(
        &self,
        room: &RoomName,
        user: &Username,
        content: &str,
        fx: &mut Effects,
    ) {
        let to = self.others_in(room, user);
        let f = encode(&ServerMsg::System {
            room: room.as_str(),
            content,
        });
        fx.deliver(to, f, Out::System);
    }
}
