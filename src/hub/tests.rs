//! The hub's state machine, driven without a runtime: channels stand in for
//! sessions and the storage queue, `Instant`s are made up.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::state::{HubCmd, HubState, NewMsg, SessionLink};
use crate::protocol::{ClientId, CloseCode, Cursor, Frame, MsgKind, RoomName, Username};
use crate::storage::{DurableMsg, StorageCmd, StorageEvent, StorageHandle, StorageHealth};

struct Sess {
    id: Uuid,
    rx: mpsc::Receiver<Vec<Frame>>,
    close: watch::Receiver<Option<CloseCode>>,
}

impl Sess {
    fn frames(&mut self) -> Vec<Value> {
        let mut v = Vec::new();
        while let Ok(batch) = self.rx.try_recv() {
            for f in batch {
                v.push(serde_json::from_str(f.as_str()).unwrap());
            }
        }
        v
    }

    fn types(&mut self) -> Vec<String> {
        self.frames()
            .iter()
            .map(|f| f["type"].as_str().unwrap().to_owned())
            .collect()
    }

    fn closed(&self) -> Option<CloseCode> {
        *self.close.borrow()
    }
}

struct Fixture {
    hub: HubState,
    storage_rx: mpsc::Receiver<StorageCmd>,
    health: Arc<StorageHealth>,
    now: Instant,
    ms: u64,
}

impl Fixture {
    fn new(max_sessions: usize, storage_queue: usize) -> Self {
        let (storage, storage_rx) = StorageHandle::detached(storage_queue);
        let health = storage.health().clone();
        let hub = HubState::new(
            max_sessions,
            Cursor::ZERO,
            storage,
            crate::metrics::Metrics::new(),
        );
        Fixture {
            hub,
            storage_rx,
            health,
            now: Instant::now(),
            ms: 1_000_000,
        }
    }

    fn join_q(&mut self, user: &str, client: &str, room: &str, queue: usize) -> Sess {
        let (out_tx, rx) = mpsc::channel(queue);
        let (close_tx, close) = watch::channel(None);
        let id = Uuid::new_v4();
        let link = SessionLink {
            id,
            user: Username::parse(user).unwrap(),
            client: ClientId::parse(client).unwrap(),
            room: RoomName::parse(room).unwrap(),
            family: None,
            out_tx,
            close_tx,
        };
        let (reply, _reply_rx) = oneshot::channel();
        self.apply(HubCmd::Join { link, reply });
        Sess { id, rx, close }
    }

    fn join(&mut self, user: &str, client: &str, room: &str) -> Sess {
        self.join_q(user, client, room, 64)
    }

    fn apply(&mut self, cmd: HubCmd) {
        self.hub.apply(cmd, self.now, self.ms);
        self.hub.flush_outbox();
    }

    fn storage_event(&mut self, ev: StorageEvent) {
        self.hub.apply_storage(ev);
        self.hub.flush_outbox();
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        self.ms += d.as_millis() as u64;
        self.hub.flush_timers(self.now);
        self.hub.flush_outbox();
    }

    fn chat(&mut self, s: &Sess, content: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.send(s, id, MsgKind::Chat, None, content);
        id
    }

    fn send(&mut self, s: &Sess, id: Uuid, kind: MsgKind, target: Option<&str>, content: &str) {
        let msg = NewMsg {
            id,
            kind,
            target: target.map(|t| Username::parse(t).unwrap()),
            content: content.into(),
            action: false,
            target_known: false,
        };
        self.apply(HubCmd::Send { session: s.id, msg });
    }

    /// The ids of the room's messages not yet on disk, as history merges them.
    fn pending_ids(&mut self, room: &str) -> Vec<Uuid> {
        let (reply, mut rx) = oneshot::channel();
        self.apply(HubCmd::Pending {
            room: RoomName::parse(room).unwrap(),
            reply,
        });
        rx.try_recv().unwrap().iter().map(|m| m.id).collect()
    }

    /// The queued appends' ids, taken off the storage queue.
    fn queued_ids(&mut self) -> Vec<Uuid> {
        let mut ids = Vec::new();
        while let Ok(StorageCmd::Append(m, _)) = self.storage_rx.try_recv() {
            ids.push(m.id);
        }
        ids
    }

    /// Pretends the storage writer flushed everything queued.
    fn flush_storage(&mut self) {
        let mut durable = Vec::new();
        while let Ok(StorageCmd::Append(m, _)) = self.storage_rx.try_recv() {
            durable.push(DurableMsg {
                id: m.id,
                room: m.room.clone(),
                sender: m.sender.clone(),
            });
        }
        self.storage_event(StorageEvent::Durable(durable));
    }
}

#[test]
fn join_sends_presence_and_join_lines_to_others_only() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    f.tick(Duration::ZERO);
    assert_eq!(a.types(), ["presence"]);
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::from_millis(600));
    let af = a.frames();
    assert_eq!(af[0]["type"], "system");
    assert_eq!(af[0]["content"], "bob joined");
    assert_eq!(af[1]["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(b.types(), ["presence"]);
    // A second session of bob: no join line.
    let _b2 = f.join("bob", "b2", "lobby");
    f.tick(Duration::from_millis(600));
    assert_eq!(a.types(), ["presence"]);
}

#[test]
fn presence_is_coalesced_per_room() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    f.tick(Duration::ZERO);
    a.frames();
    let mut others = Vec::new();
    for u in ["bob", "carol", "dave"] {
        others.push(f.join(u, "x", "lobby"));
        f.tick(Duration::from_millis(10));
    }
    // One presence in the first 500 ms window after the previous one... none yet.
    assert_eq!(a.types().iter().filter(|t| *t == "presence").count(), 0);
    f.tick(Duration::from_millis(500));
    let frames = a.frames();
    let presences: Vec<_> = frames.iter().filter(|f| f["type"] == "presence").collect();
    assert_eq!(presences.len(), 1, "{frames:?}");
    assert_eq!(presences[0]["count"], 4, "{frames:?}");
}

#[test]
fn chat_goes_to_everyone_in_the_room_and_to_disk_once() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    let mut c = f.join("carol", "c", "elsewhere");
    f.tick(Duration::ZERO);
    let (_, _, _) = (a.frames(), b.frames(), c.frames());
    let id = f.chat(&a, "hi");
    let got = b.frames();
    assert_eq!(got[0]["content"], "hi");
    assert_eq!(got[0]["sender"], "alice");
    assert_eq!(a.frames()[0]["id"], id.to_string());
    assert!(c.frames().is_empty());
    assert!(matches!(f.storage_rx.try_recv(), Ok(StorageCmd::Append(m, _)) if m.id == id));
    // Resent before durable: nothing delivered, nothing stored, no receipt yet.
    f.send(&a, id, MsgKind::Chat, None, "hi");
    assert!(b.frames().is_empty() && a.frames().is_empty());
    assert!(f.storage_rx.try_recv().is_err());
    f.storage_event(StorageEvent::Durable(vec![DurableMsg {
        id,
        room: RoomName::parse("lobby").unwrap(),
        sender: Username::parse("alice").unwrap(),
    }]));
    let r = a.frames();
    assert_eq!(
        (r[0]["type"].as_str(), r[0]["status"].as_str()),
        (Some("receipt"), Some("saved"))
    );
    assert!(b.frames().is_empty(), "receipts go to the sender only");
    // Resent after durable: saved again, still nothing delivered.
    f.send(&a, id, MsgKind::Chat, None, "hi");
    assert_eq!(a.frames()[0]["status"], "saved");
    assert!(b.frames().is_empty());
}

#[test]
fn an_id_of_another_sender_is_a_conflict() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let id = f.chat(&a, "mine");
    a.frames();
    b.frames();
    f.send(&b, id, MsgKind::Chat, None, "stolen");
    let e = b.frames();
    assert_eq!(
        (e[0]["type"].as_str(), e[0]["code"].as_str()),
        (Some("error"), Some("conflict"))
    );
    assert!(a.frames().is_empty());
}

#[test]
fn private_reaches_sender_and_target_only() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    let mut c = f.join("carol", "c", "lobby");
    f.tick(Duration::ZERO);
    let (_, _, _) = (a.frames(), b.frames(), c.frames());
    f.send(&a, Uuid::new_v4(), MsgKind::Private, Some("bob"), "psst");
    assert_eq!(a.frames()[0]["type"], "private");
    assert_eq!(b.frames()[0]["target"], "bob");
    assert!(c.frames().is_empty());
    // A target who never joined (and the session found no record of): not_found.
    f.send(&a, Uuid::new_v4(), MsgKind::Private, Some("zed"), "hello?");
    assert_eq!(a.frames()[0]["code"], "not_found");
}

#[test]
fn full_storage_refuses_and_does_not_broadcast() {
    let mut f = Fixture::new(8, 1);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (a.frames(), b.frames());
    f.chat(&a, "one");
    f.chat(&a, "two");
    let got: Vec<_> = b
        .frames()
        .into_iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(got, ["one"]);
    let af = a.frames();
    assert_eq!(af[1]["code"], "unavailable");
    assert!(af[1]["retry_after_ms"].as_u64().unwrap() > 0);
}

#[test]
fn a_full_queue_evicts_that_session_only() {
    let mut f = Fixture::new(8, 64);
    let mut a = f.join("alice", "a", "lobby");
    let slow = f.join_q("slowpoke", "s", "lobby", 2);
    f.tick(Duration::ZERO);
    a.frames();
    for i in 0..5 {
        f.chat(&a, &format!("m{i}"));
    }
    assert_eq!(slow.closed(), Some(CloseCode::Evicted));
    let got = a.frames();
    assert_eq!(got.iter().filter(|m| m["type"] == "chat").count(), 5);
    assert!(
        got.iter()
            .any(|m| m["type"] == "system" && m["content"] == "slowpoke left")
    );
    assert_eq!(f.hub.session_count(), 1);
}

#[test]
fn same_client_id_replaces_and_cap_closes_the_oldest() {
    let mut f = Fixture::new(2, 16);
    let first = f.join("alice", "tab", "lobby");
    let second = f.join("alice", "tab", "lobby");
    assert_eq!(first.closed(), Some(CloseCode::Replaced));
    assert_eq!(second.closed(), None);
    let third = f.join("alice", "other", "lobby");
    assert_eq!((second.closed(), third.closed()), (None, None));
    let fourth = f.join("alice", "another", "lobby");
    assert_eq!(second.closed(), Some(CloseCode::Replaced));
    assert_eq!((third.closed(), fourth.closed()), (None, None));
    assert_eq!(f.hub.session_count(), 2);
}

#[test]
fn typing_is_throttled_and_never_echoed() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (a.frames(), b.frames());
    f.apply(HubCmd::Typing {
        session: a.id,
        active: true,
    });
    f.apply(HubCmd::Typing {
        session: a.id,
        active: true,
    });
    assert_eq!(b.types(), ["typing"]);
    assert!(a.frames().is_empty());
    f.now += Duration::from_millis(500);
    f.apply(HubCmd::Typing {
        session: a.id,
        active: false,
    });
    let t = b.frames();
    assert_eq!(t[0]["active"], false);
    assert!(f.storage_rx.try_recv().is_err(), "typing is never stored");
}

#[test]
fn a_held_back_typing_stop_is_sent_when_the_interval_ends() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (a.frames(), b.frames());
    f.apply(HubCmd::Typing {
        session: a.id,
        active: true,
    });
    f.apply(HubCmd::Typing {
        session: a.id,
        active: false,
    });
    let t = b.frames();
    assert_eq!((t.len(), &t[0]["active"]), (1, &Value::Bool(true)));
    assert_eq!(
        f.hub.flush_timers(f.now),
        Some(f.now + Duration::from_millis(500))
    );
    f.tick(Duration::from_millis(500));
    let t = b.frames();
    assert_eq!((t.len(), &t[0]["active"]), (1, &Value::Bool(false)));
    f.tick(Duration::from_millis(500));
    assert!(b.frames().is_empty(), "sent once");
}

#[test]
fn leaving_frees_the_room_and_cursors_keep_increasing() {
    let mut f = Fixture::new(8, 64);
    let a = f.join("alice", "a", "lobby");
    let one = f.chat(&a, "one");
    f.ms -= 10_000; // the clock jumps back
    let two = f.chat(&a, "two");
    f.apply(HubCmd::Leave { session: a.id });
    assert_eq!(f.hub.room_count(), 0);
    let mut appended = Vec::new();
    while let Ok(StorageCmd::Append(m, _)) = f.storage_rx.try_recv() {
        appended.push((m.id, m.cursor));
    }
    // Exactly the two chats, in order; the later one sorts after the earlier
    // although its wall-clock time is 10 s older.
    let ids: Vec<Uuid> = appended.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![one, two]);
    assert!(
        appended[0].1 < appended[1].1,
        "cursors went backwards with the clock: {:?}",
        appended
    );
}

fn lobby_msg(id: Uuid, sender: &str) -> DurableMsg {
    DurableMsg {
        id,
        room: RoomName::parse("lobby").unwrap(),
        sender: Username::parse(sender).unwrap(),
    }
}

#[test]
fn a_failed_batch_is_unavailable_to_its_sender_forgotten_and_can_be_retried() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (a.frames(), b.frames());
    let lost = f.chat(&a, "lost");
    let kept = f.chat(&a, "kept");
    let (_, _) = (a.frames(), b.frames());
    assert_eq!(f.queued_ids(), [lost, kept]);
    f.storage_event(StorageEvent::Failed(vec![lobby_msg(lost, "alice")]));
    let e = a.frames();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0]["type"].as_str(), e[0]["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    assert_eq!(e[0]["id"], lost.to_string());
    assert!(e[0]["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(b.frames().is_empty(), "only the sender hears of it");
    // Not shown as on its way to disk any more; the other one still is.
    assert_eq!(f.pending_ids("lobby"), [kept]);
    // A resend of the kept one is still a duplicate: nothing new.
    f.send(&a, kept, MsgKind::Chat, None, "kept");
    assert!(f.queued_ids().is_empty() && b.frames().is_empty());
    // The lost id is accepted again, as a new message.
    f.send(&a, lost, MsgKind::Chat, None, "lost");
    assert_eq!(b.frames()[0]["id"], lost.to_string());
    assert_eq!(f.queued_ids(), [lost]);
    assert_eq!(f.pending_ids("lobby"), [kept, lost]);
    f.storage_event(StorageEvent::Durable(vec![
        lobby_msg(kept, "alice"),
        lobby_msg(lost, "alice"),
    ]));
    let saved: Vec<_> = a
        .frames()
        .into_iter()
        .filter(|r| r["type"] == "receipt")
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(saved, ["saved", "saved"]);
    assert!(f.pending_ids("lobby").is_empty());
}

#[test]
fn a_failed_report_for_a_stored_id_keeps_it_stored() {
    // The writer reports each id once; a failed report for an id that an
    // earlier batch made durable (a resend) must not make it retryable.
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let id = f.chat(&a, "once");
    f.flush_storage();
    let (_, _) = (a.frames(), b.frames());
    f.storage_event(StorageEvent::Failed(vec![lobby_msg(id, "alice")]));
    a.frames();
    f.send(&a, id, MsgKind::Chat, None, "once");
    assert_eq!(a.frames()[0]["status"], "saved");
    assert!(b.frames().is_empty() && f.queued_ids().is_empty());
}

#[test]
fn full_or_failed_storage_refuses_without_broadcast_until_space_is_back() {
    let mut f = Fixture::new(8, 16);
    let mut a = f.join("alice", "a", "lobby");
    let mut b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (a.frames(), b.frames());
    assert!(f.health.set_full(true));
    let id = f.chat(&a, "too much");
    let e = a.frames();
    assert_eq!(
        (e[0]["code"].as_str(), e[0]["id"].as_str()),
        (Some("unavailable"), Some(id.to_string().as_str()))
    );
    assert!(e[0]["message"].as_str().unwrap().contains("full"));
    assert!(e[0]["retry_after_ms"].as_u64().unwrap() >= 1000);
    assert!(b.frames().is_empty(), "a refused message is not broadcast");
    assert!(f.queued_ids().is_empty() && f.pending_ids("lobby").is_empty());
    // Space is back: the same id goes through.
    assert!(f.health.set_full(false));
    f.send(&a, id, MsgKind::Chat, None, "too much");
    assert_eq!(b.frames()[0]["id"], id.to_string());
    assert_eq!(f.queued_ids(), [id]);
    a.frames();
    // Failed: refused the same way, private messages too.
    f.health.fail("disk on fire".into());
    f.send(&a, Uuid::new_v4(), MsgKind::Private, Some("bob"), "psst");
    let e = a.frames();
    assert_eq!(e[0]["code"], "unavailable");
    assert!(e[0]["message"].as_str().unwrap().contains("failed"));
    assert!(b.frames().is_empty() && f.queued_ids().is_empty());
}
