//! Presence (coalesced per room) and typing (2/s per user and room, the
//! latest held-back state sent when the interval ends): the hub's timers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Effects, HubState, PeerPresence, Relay};
use crate::metrics::Out;
use crate::protocol::frames::encode;
use crate::protocol::{Frame, RoomName, ServerMsg, Username};

/// Presence frames per room are coalesced to one per this interval (in a
/// room of up to `PRESENCE_USERS_PER_STEP` users; see [`presence_window`]).
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);
/// Users per `PRESENCE_INTERVAL` of a room's presence window.
const PRESENCE_USERS_PER_STEP: usize = 50;
/// Typing frames forwarded per user and room: at most one per this interval (2/s).
pub const TYPING_INTERVAL: Duration = Duration::from_millis(500);
/// Presence lists at most this many names; `count` has the total.
const PRESENCE_MAX_USERS: usize = 1000;

/// How long a room's presence frames are coalesced: 500 ms up to 50 users
/// here, 500 ms more for every 50 started beyond, at most 10 s (from 951:
/// a frame lists 1000 names at most, so it stops growing there).
///
/// Every change of the list sends every user's name to every session, so a
/// room filling up costs the cube of its size in bytes when each join makes
/// a frame (a join storm into rooms of 100–200 spent most of the server's
/// writes and the clients' reads on presence). With the window growing with
/// the room, a room's presence bytes per second grow with its size, not its
/// square. Joins and leaves still show at once (`system` lines), and a
/// joiner gets its own list at once (`presence_joiners`).
pub(super) fn presence_window(users: usize) -> Duration {
    let steps = users
        .div_ceil(PRESENCE_USERS_PER_STEP)
        .clamp(1, PRESENCE_MAX_USERS / PRESENCE_USERS_PER_STEP);
    // At most 20 steps: the cast cannot truncate.
    PRESENCE_INTERVAL * steps as u32
}

/// What a room's presence needs at a tick.
enum PresenceDue {
    Nothing,
    /// The list changed and its window is over: a frame for everyone but
    /// these (joiners that got this very list on their own already).
    Everyone(Vec<Uuid>),
    /// Only these joiners get the list now (the others' is unchanged, or
    /// held back until the window ends).
    Joiners(Vec<Uuid>),
}

impl super::Room {
    /// Its list of users changed: a frame for everyone is due (when the
    /// window allows), and nobody has the new list yet.
    pub(super) fn list_changed(&mut self) {
        self.presence_dirty = true;
        self.presence_served.clear();
    }

    /// This tick's presence of the room; a held-back broadcast sets `next`.
    fn presence_due(&mut self, now: Instant, next: &mut Option<Instant>) -> PresenceDue {
        if self.presence_dirty {
            let window = presence_window(self.members.len());
            let at = self.presence_sent.map_or(now, |t| t + window);
            if at <= now {
                self.presence_dirty = false;
                self.presence_sent = Some(now);
                // The frame for everyone covers the joiners.
                self.presence_joiners.clear();
                return PresenceDue::Everyone(std::mem::take(&mut self.presence_served));
            }
            *next = Some(next.map_or(at, |n| n.min(at)));
        }
        if self.presence_joiners.is_empty() {
            return PresenceDue::Nothing;
        }
        let joiners = std::mem::take(&mut self.presence_joiners);
        if self.presence_dirty {
            // They get the changed list now; the held-back frame skips them.
            self.presence_served.extend(&joiners);
        }
        PresenceDue::Joiners(joiners)
    }
}

impl HubState {
    pub(super) fn typing(&mut self, session: Uuid, active: bool, now: Instant, fx: &mut Effects) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (user, room_name) = (s.user.clone(), s.room.clone());
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        if room
            .typing_sent
            .get(&user)
            .is_some_and(|t| now.duration_since(*t) < TYPING_INTERVAL)
        {
            room.typing_held.insert(user, active);
            return;
        }
        room.typing_sent.insert(user.clone(), now);
        room.typing_held.remove(&user);
        self.typing_to_others(&room_name, &user, active, fx);
    }

    pub(super) fn who(&self, session: Uuid, fx: &mut Effects) {
        if let Some(s) = self.sessions.get(&session) {
            fx.deliver(vec![session], self.presence_frame(&s.room), Out::Presence);
        }
    }

    /// A typing state of a session here: to the room's others here and, in
    /// a cluster, to the other nodes.
    fn typing_to_others(&self, room: &RoomName, user: &Username, active: bool, fx: &mut Effects) {
        if self.replicated {
            fx.relay.push(Relay::Typing {
                room: room.clone(),
                user: user.clone(),
                active,
            });
        }
        self.typing_here(room, user, active, fx);
    }

    /// A typing state to the room's sessions here, none of `user`'s (never
    /// echoed). Another node's arrive here already throttled by that node.
    pub(super) fn typing_here(
        &self,
        room: &RoomName,
        user: &Username,
        active: bool,
        fx: &mut Effects,
    ) {
        let to = self.others_in(room, user);
        let f = encode(&ServerMsg::Typing {
            room: room.as_str(),
            sender: user.as_str(),
            active,
        });
        fx.deliver(to, f, Out::Typing);
    }

    /// Sends due presence frames and held-back typing states; returns when the
    /// next one falls due, if any is waiting.
    pub(super) fn flush_timers(&mut self, now: Instant, fx: &mut Effects) -> Option<Instant> {
        let mut due = Vec::new();
        let mut typing_due = Vec::new();
        let mut joiners = Vec::new();
        let mut next: Option<Instant> = None;
        for (name, room) in &mut self.rooms {
            let first_due = typing_due.len();
            for (user, active) in &room.typing_held {
                let at = room
                    .typing_sent
                    .get(user)
                    .map_or(now, |t| *t + TYPING_INTERVAL);
                if at <= now {
                    typing_due.push((name.clone(), user.clone(), *active));
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            for (_, user, _) in &typing_due[first_due..] {
                room.typing_held.remove(user);
                room.typing_sent.insert(user.clone(), now);
            }
            match room.presence_due(now, &mut next) {
                PresenceDue::Nothing => {}
                PresenceDue::Everyone(served) => due.push((name.clone(), served)),
                PresenceDue::Joiners(ids) => joiners.push((name.clone(), ids)),
            }
        }
        for (name, served) in due {
            let frame = self.presence_frame(&name);
            let mut to = self.everyone_in(&name);
            if !served.is_empty() {
                to.retain(|id| !served.contains(id));
            }
            fx.deliver(to, frame, Out::Presence);
        }
        for (name, ids) in joiners {
            // Still there (not replaced or capped away since).
            let to: Vec<Uuid> = ids
                .into_iter()
                .filter(|id| self.sessions.get(id).is_some_and(|s| s.room == name))
                .collect();
            fx.deliver(to, self.presence_frame(&name), Out::Presence);
        }
        for (room, user, active) in typing_due {
            self.typing_to_others(&room, &user, active, fx);
        }
        next
    }

    /// Cluster mode: `room`'s local users changed; the shell publishes them.
    pub(super) fn local_users_changed(&self, room: &RoomName, fx: &mut Effects) {
        if self.replicated {
            fx.local_users.push(room.clone());
        }
    }

    /// This node's users in `room`, sorted (what it gossips).
    pub fn local_users(&self, room: &RoomName) -> Vec<Username> {
        self.rooms
            .get(room)
            .map(|r| r.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Another node's users in a room, or that node gone: a room whose union
    /// changed gets a presence frame (coalesced as a local change is).
    pub(super) fn peer_presence(&mut self, p: PeerPresence) {
        match p {
            PeerPresence::Users { node, room, users } => self.set_peer(room, node, users),
            PeerPresence::Gone { node } => {
                let rooms: Vec<RoomName> = self
                    .peers
                    .iter()
                    .filter(|(_, by_node)| by_node.contains_key(&node))
                    .map(|(room, _)| room.clone())
                    .collect();
                for room in rooms {
                    self.set_peer(room, node.clone(), Vec::new());
                }
            }
        }
    }

    /// `node`'s users in `room` are `users` now (empty: none, forgotten).
    fn set_peer(&mut self, room: RoomName, node: String, users: Vec<Username>) {
        let before = self.everyone_named(&room);
        let of_room = self.peers.entry(room.clone()).or_default();
        if users.is_empty() {
            of_room.remove(&node);
        } else {
            of_room.insert(node, users);
        }
        if of_room.is_empty() {
            self.peers.remove(&room);
        }
        self.dirty_if_changed(&room, before);
    }

    /// Marks `room` for a presence frame if its union is not `before`.
    fn dirty_if_changed(&mut self, room: &RoomName, before: BTreeSet<Username>) {
        if self.everyone_named(room) != before
            && let Some(r) = self.rooms.get_mut(room)
        {
            r.list_changed();
        }
    }

    /// The room's presence: its users here and on every serving node.
    fn everyone_named(&self, room: &RoomName) -> BTreeSet<Username> {
        let mut all: BTreeSet<Username> = self.local_users(room).into_iter().collect();
        if let Some(by_node) = self.peers.get(room) {
            all.extend(by_node.values().flatten().cloned());
        }
        all
    }

    /// Whether `user` is in `room`'s presence list now (here or on another node).
    pub(super) fn listed(&self, room: &RoomName, user: &Username) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains_key(user))
            || self
                .peers
                .get(room)
                .is_some_and(|by_node| by_node.values().any(|users| users.contains(user)))
    }

    pub(super) fn presence_frame(&self, room: &RoomName) -> Frame {
        let Some(by_node) = self.peers.get(room) else {
            // Only users here: the members' keys are the sorted list already,
            // so no set of copied names is built for every frame.
            let members = self.rooms.get(room).map(|r| &r.members);
            let users: Vec<&str> = members
                .into_iter()
                .flat_map(|m| m.keys())
                .take(PRESENCE_MAX_USERS)
                .map(Username::as_str)
                .collect();
            let count = members.map_or(0, |m| m.len());
            return encode(&ServerMsg::Presence {
                room: room.as_str(),
                users,
                count,
            });
        };
        let mut all: BTreeSet<&Username> = by_node.values().flatten().collect();
        if let Some(r) = self.rooms.get(room) {
            all.extend(r.members.keys());
        }
        let users: Vec<&str> = all
            .iter()
            .take(PRESENCE_MAX_USERS)
            .map(|u| u.as_str())
            .collect();
        encode(&ServerMsg::Presence {
            room: room.as_str(),
            users,
            count: all.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presence_window_grows_by_500_ms_per_50_users_up_to_10_s() {
        let ms = |users| presence_window(users).as_millis();
        assert_eq!([ms(0), ms(1), ms(50)], [500, 500, 500]);
        assert_eq!(
            [ms(51), ms(100), ms(101), ms(200)],
            [1000, 1000, 1500, 2000]
        );
        assert_eq!([ms(951), ms(1000), ms(100_000)], [10_000, 10_000, 10_000]);
    }
}
