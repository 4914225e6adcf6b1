//! The hub's pure core, driven with events; the assertions are on the
//! `Effects` it returns. No runtime, no channels (but for the outbox's own
//! test), made-up clocks. The fixture plays the shell: it keeps the live
//! sessions, hands their frames to per-session inboxes, and models the
//! write-ahead queue's admission (capacity, full or failed storage).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::outbox::{Outbox, Refusal, SessionLink};
use super::state::{Count, Effects, Event, HubState, Joined, NewMsg, Now, Removed};
use crate::metrics::Eviction;
use crate::protocol::ErrorCode;
use crate::protocol::frames::encode;
use crate::protocol::{
    ClientId, CloseCode, Cursor, MsgKind, RoomName, ServerMsg, Status, StoredMsg, Username,
};
use crate::storage::{DurableMsg, Refused, StorageEvent};

#[derive(Clone, Copy)]
struct Sess(Uuid);

struct Fixture {
    hub: HubState,
    now: Now,
    /// Sessions the "shell" still holds, as its links.
    live: HashSet<Uuid>,
    inbox: HashMap<Uuid, Vec<Value>>,
    closed: HashMap<Uuid, Option<CloseCode>>,
    /// The write-ahead queue: appended and not yet taken by the "writer".
    queue: Vec<Arc<StoredMsg>>,
    queue_cap: usize,
    /// Storage health: `Some` refuses every message like this.
    refuse: Option<Refused>,
    counts: Vec<Count>,
    last_join: Option<Joined>,
}

impl Fixture {
    fn new(max_sessions: usize, queue_cap: usize) -> Self {
        Fixture {
            hub: HubState::new(max_sessions, Cursor::ZERO),
            now: Now {
                at: Instant::now(),
                ms: 1_000_000,
            },
            live: HashSet::new(),
            inbox: HashMap::new(),
            closed: HashMap::new(),
            queue: Vec::new(),
            queue_cap,
            refuse: None,
            counts: Vec::new(),
            last_join: None,
        }
    }

    /// Applies one event and carries its effects out the way the shell does.
    fn apply(&mut self, ev: Event) -> Effects {
        let fx = self.hub.apply(ev, self.now);
        self.counts.extend(fx.counts.iter().copied());
        for r in &fx.removed {
            assert!(self.live.remove(&r.session), "removed twice: {r:?}");
            self.closed.insert(r.session, r.close);
        }
        for d in &fx.deliveries {
            for id in &d.to {
                assert!(self.live.contains(id), "a frame for a removed session");
                let v: Value = serde_json::from_str(d.frame.as_str()).unwrap();
                self.inbox.entry(*id).or_default().push(v);
            }
        }
        if let Some(m) = &fx.append {
            self.queue.push(m.clone());
        }
        fx
    }

    fn join(&mut self, user: &str, client: &str, room: &str) -> Sess {
        let id = Uuid::new_v4();
        self.live.insert(id);
        let mut fx = self.apply(Event::Join {
            session: id,
            conn: id,
            user: Username::parse(user).unwrap(),
            client: ClientId::parse(client).unwrap(),
            room: RoomName::parse(room).unwrap(),
            family: None,
            away: false,
        });
        self.last_join = fx.joined.take();
        Sess(id)
    }

    /// A subscription of the multi-room connection `conn`.
    fn subscribe(&mut self, conn: Uuid, user: &str, client: &str, room: &str) -> Sess {
        let id = Uuid::new_v4();
        self.live.insert(id);
        self.apply(Event::Join {
            session: id,
            conn,
            user: Username::parse(user).unwrap(),
            client: ClientId::parse(client).unwrap(),
            room: RoomName::parse(room).unwrap(),
            family: None,
            away: false,
        });
        Sess(id)
    }

    fn frames(&mut self, s: Sess) -> Vec<Value> {
        self.inbox.remove(&s.0).unwrap_or_default()
    }

    fn types(&mut self, s: Sess) -> Vec<String> {
        let f = self.frames(s);
        f.iter()
            .map(|f| f["type"].as_str().unwrap().to_owned())
            .collect()
    }

    fn closed(&self, s: Sess) -> Option<CloseCode> {
        self.closed.get(&s.0).copied().flatten()
    }

    fn tick(&mut self, d: Duration) -> Option<Instant> {
        self.now.at += d;
        self.now.ms += d.as_millis() as u64;
        self.apply(Event::Tick).next_timer
    }

    /// The shell's reservation: refused when storage is unhealthy or its queue full.
    fn admission(&self) -> Result<(), Refused> {
        match self.refuse {
            Some(r) => Err(r),
            None if self.queue.len() >= self.queue_cap => Err(Refused::Busy),
            None => Ok(()),
        }
    }

    fn chat(&mut self, s: Sess, content: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.send(s, id, MsgKind::Chat, None, content);
        id
    }

    fn send(
        &mut self,
        s: Sess,
        id: Uuid,
        kind: MsgKind,
        target: Option<&str>,
        content: &str,
    ) -> Effects {
        let msg = NewMsg {
            id,
            kind,
            target: target.map(|t| Username::parse(t).unwrap()),
            content: content.into(),
            action: false,
            target_known: false,
            mentions: Vec::new(),
        };
        let storage = self.admission();
        let fx = self.apply(Event::Post {
            session: s.0,
            msg,
            storage,
        });
        if storage.is_err() {
            assert!(fx.append.is_none(), "appended what storage refused");
        }
        fx
    }

    fn typing(&mut self, s: Sess, active: bool) {
        self.apply(Event::Typing {
            session: s.0,
            active,
        });
    }

    /// The ids of the room's messages not yet on disk, as history merges them.
    fn pending_ids(&self, room: &str) -> Vec<Uuid> {
        let room = RoomName::parse(room).unwrap();
        self.hub.pending(&room).iter().map(|m| m.id).collect()
    }

    /// The queued appends' ids, taken off the queue by the "writer".
    fn queued_ids(&mut self) -> Vec<Uuid> {
        self.queue.drain(..).map(|m| m.id).collect()
    }

    /// Pretends the storage writer flushed everything queued.
    fn flush_storage(&mut self) {
        let durable = self
            .queue
            .drain(..)
            .map(|m| DurableMsg {
                id: m.id,
                room: m.room.clone(),
                sender: m.sender.clone(),
            })
            .collect();
        self.apply(Event::Storage(StorageEvent::Durable(durable)));
    }
}

fn lobby_msg(id: Uuid, sender: &str) -> DurableMsg {
    DurableMsg {
        id,
        room: RoomName::parse("lobby").unwrap(),
        sender: Username::parse(sender).unwrap(),
    }
}

/// Two sessions in the lobby, their first frames read.
fn alice_and_bob(queue_cap: usize) -> (Fixture, Sess, Sess) {
    let mut f = Fixture::new(8, queue_cap);
    let a = f.join("alice", "a", "lobby");
    let b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (f.frames(a), f.frames(b));
    (f, a, b)
}

mod membership;
mod messages;
mod outbox;
mod presence;
mod presence_peers;
mod remote;
mod replicated;
