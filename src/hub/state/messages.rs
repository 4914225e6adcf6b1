//! Messages: a post's checks (duplicate, conflict, unknown target, storage
//! admission) in that order, its fan-out; storage's durable and failed
//! reports and receipts; the in-memory id cache.

use std::sync::Arc;

use uuid::Uuid;

use super::{Count, Effects, HubState, NewMsg};
use crate::metrics::Out;
use crate::protocol::ErrorCode;
use crate::protocol::frames::{encode, encode_message, encode_saved};
use crate::protocol::{Cursor, MsgKind, RoomName, ServerMsg, Status, StoredMsg, Username};
use crate::storage::{CommittedMsg, DurableMsg, IdUse, Refused};

/// Durable ids remembered in memory after their flush. Covers the moment
/// between a session's check of the on-disk index and the hub's own check.
const KNOWN_DURABLE_CAP: usize = 65_536;

/// An entry of the id cache (see `HubState::known`).
pub(super) struct Known {
    room: RoomName,
    sender: Username,
    durable: bool,
}

impl HubState {
    pub(super) fn post(
        &mut self,
        session: Uuid,
        msg: NewMsg,
        storage: Result<(), Refused>,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let (user, room) = (s.user.clone(), s.room.clone());
        // Duplicates first: a resend of a stored id answers `saved` even while
        // storage refuses new messages.
        // `known` is a cache of storage's id index, judged by the same rule.
        if let Some(k) = self.known.get(&msg.id) {
            if IdUse::judge(Some((&k.sender, &k.room)), &user, &room) == IdUse::Resend {
                // An idempotent resend: nothing new is stored or delivered.
                if k.durable {
                    fx.deliver(vec![session], encode_saved(&msg.id), Out::Receipt);
                }
            } else {
                let id = msg.id.to_string();
                error_to(
                    session,
                    ErrorCode::Conflict,
                    "this id names another message",
                    &id,
                    fx,
                );
            }
            return;
        }
        let target_online = msg.target.as_ref().is_some_and(|t| {
            self.rooms
                .get(&room)
                .is_some_and(|r| r.members.contains_key(t))
        });
        if msg.kind == MsgKind::Private && !(msg.target_known || target_online) {
            let (id, why) = (msg.id.to_string(), "that user has never joined this room");
            error_to(session, ErrorCode::NotFound, why, &id, fx);
            return;
        }
        // Queue full, disk nearly full, or storage failed: refused and not
        // broadcast, so that everything shown live is on its way to disk.
        if let Err(refused) = storage {
            unavailable_to(vec![session], refused, msg.id, fx);
            return;
        }
        self.accept(msg, user, room, now_ms, fx);
    }

    /// An admitted new message: cursor, pending, the id cache, the fan-out
    /// (one frame shared by every recipient), and the append. With the
    /// replicated log, only the append (a proposal): the cursor comes from the
    /// log and the message is shown when committed (`committed`).
    fn accept(
        &mut self,
        msg: NewMsg,
        user: Username,
        room: RoomName,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let cursor = if self.replicated {
            Cursor::ZERO
        } else {
            self.head.next(now_ms)
        };
        let stored = Arc::new(StoredMsg {
            id: msg.id,
            kind: msg.kind,
            room: room.clone(),
            sender: user.clone(),
            target: msg.target,
            content: msg.content,
            action: msg.action,
            ts_ms: if self.replicated { now_ms } else { cursor.ms },
            cursor,
            // A private message carries none (the session sends none either).
            mentions: if msg.kind == MsgKind::Chat {
                msg.mentions
            } else {
                Vec::new()
            },
        });
        self.known.insert(
            msg.id,
            Known {
                room: room.clone(),
                sender: user.clone(),
                durable: false,
            },
        );
        fx.append = Some(stored.clone());
        if self.replicated {
            return;
        }
        self.head = cursor;
        self.pending
            .entry(room)
            .or_default()
            .push_back(stored.clone());
        self.fan_out(&stored, fx);
    }

    /// Queues `stored` to everyone who may see it in its room.
    fn fan_out(&self, stored: &StoredMsg, fx: &mut Effects) {
        let (room, user) = (&stored.room, &stored.sender);
        let (to, kind) = match (&stored.kind, &stored.target) {
            (MsgKind::Private, Some(t)) => {
                let mut to = self.sessions_of(room, user);
                if t != user {
                    to.extend(self.sessions_of(room, t));
                }
                (to, Out::Private)
            }
            (MsgKind::Private, None) => (self.everyone_in(room), Out::Private),
            _ => (self.everyone_in(room), Out::Chat),
        };
        fx.counts.push(Count::Deliveries(to.len() as u64));
        fx.deliver(to, encode_message(stored), kind);
    }

    /// A message of a committed log entry, applied to the store: shown now
    /// (a fresh one; a resend only answers its sender), and `saved` to its
    /// sender's sessions on this node.
    pub(super) fn committed(&mut self, c: CommittedMsg, fx: &mut Effects) {
        let m = &c.msg;
        if c.fresh {
            self.head = self.head.max(m.cursor);
            self.fan_out(m, fx);
        }
        self.known.insert(
            m.id,
            Known {
                room: m.room.clone(),
                sender: m.sender.clone(),
                durable: false,
            },
        );
        self.durable(
            DurableMsg {
                id: m.id,
                room: m.room.clone(),
                sender: m.sender.clone(),
            },
            fx,
        );
    }

    pub(super) fn durable(&mut self, m: DurableMsg, fx: &mut Effects) {
        if let Some(k) = self.known.get_mut(&m.id)
            && !k.durable
        {
            k.durable = true;
            self.known_durable.push_back(m.id);
            while self.known_durable.len() > KNOWN_DURABLE_CAP {
                if let Some(old) = self.known_durable.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
        if let Some(q) = self.pending.get_mut(&m.room) {
            // The writer reports in queue order, so this is almost always the front.
            if let Some(pos) = q.iter().position(|p| p.id == m.id) {
                q.remove(pos);
            }
            if q.is_empty() {
                self.pending.remove(&m.room);
            }
        }
        let to = self.sessions_of(&m.room, &m.sender);
        fx.deliver(to, encode_saved(&m.id), Out::Receipt);
    }

    /// A broadcast message that storage could not write: it is forgotten (no
    /// longer in history merges or the id cache, so the same id can be sent
    /// again) and its sender's sessions get `unavailable` with its id.
    pub(super) fn failed(&mut self, m: DurableMsg, fx: &mut Effects) {
        if self.known.get(&m.id).is_some_and(|k| !k.durable) {
            self.known.remove(&m.id);
        }
        if let Some(q) = self.pending.get_mut(&m.room) {
            q.retain(|p| p.id != m.id);
            if q.is_empty() {
                self.pending.remove(&m.room);
            }
        }
        let to = self.sessions_of(&m.room, &m.sender);
        unavailable_to(to, Refused::Failed, m.id, fx);
    }

    pub(super) fn receipt(
        &self,
        id: Uuid,
        room: &RoomName,
        sender: &Username,
        by: &Username,
        status: Status,
        fx: &mut Effects,
    ) {
        let frame = encode(&ServerMsg::Receipt {
            id: &id,
            status: status.as_str(),
            by: Some(by.as_str()),
        });
        fx.deliver(self.sessions_of(room, sender), frame, Out::Receipt);
    }
}

fn unavailable_to(to: Vec<Uuid>, why: Refused, id: Uuid, fx: &mut Effects) {
    if to.is_empty() {
        return;
    }
    let f = why.frame(Some(&id.to_string()));
    fx.counts
        .push(Count::ErrorSent(ErrorCode::Unavailable, to.len() as u64));
    fx.deliver(to, f, Out::Error);
}

fn error_to(session: Uuid, code: ErrorCode, message: &str, id: &str, fx: &mut Effects) {
    fx.counts.push(Count::ErrorSent(code, 1));
    let f = encode(&ServerMsg::Error {
        code,
        message,
        id: Some(id),
        retry_after_ms: None,
    });
    fx.deliver(vec![session], f, Out::Error);
}
