//! Read positions, room lists and counts, and the message record layouts
//! (records written before `mentions` still decode).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::*;
use crate::protocol::message::StoredMsgV1;
use crate::protocol::{MsgKind, PageDir};

fn user(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn msg(r: &RoomName, n: u64, from: &str, to: Option<&str>, mentions: &[&str]) -> StorageCmd {
    StorageCmd::Append(
        Arc::new(StoredMsg {
            id: Uuid::new_v4(),
            kind: if to.is_some() {
                MsgKind::Private
            } else {
                MsgKind::Chat
            },
            room: r.clone(),
            sender: user(from),
            target: to.map(user),
            content: format!("m{n}"),
            action: false,
            ts_ms: n,
            cursor: Cursor { ms: n, seq: 0 },
            mentions: mentions.iter().map(|m| user(m)).collect(),
        }),
        Instant::now(),
    )
}

fn at(n: u64) -> Cursor {
    Cursor { ms: n, seq: 0 }
}

fn open(dir: &Path) -> Store {
    Store::open(&dir.join("db"), 1 << 20).unwrap()
}

#[test]
fn a_record_written_before_mentions_still_decodes() {
    let d = tempfile::tempdir().unwrap();
    let lobby = room("lobby");
    let old = StoredMsgV1 {
        id: Uuid::new_v4(),
        kind: MsgKind::Chat,
        room: lobby.clone(),
        sender: user("alice"),
        target: None,
        content: "from an older version".into(),
        action: false,
        ts_ms: 5,
        cursor: at(5),
    };
    {
        // The log as an older binary left it: the record, its room, no index.
        let store = open(d.path());
        store
            .inner
            .log
            .insert(log_key(&lobby, at(5)), encode(&old).unwrap())
            .unwrap();
        store.inner.rooms.insert(lobby.as_str(), &[]).unwrap();
        store.inner.db.flush().unwrap();
    }
    // Opening indexes it (a decode), and a page reads it (another).
    let store = open(d.path());
    let page = store
        .page(&lobby, &user("bob"), PageDir::Latest, 10, None, &[])
        .unwrap();
    assert_eq!(page.msgs.len(), 1, "the old record is skipped");
    assert_eq!(*page.msgs[0].0, StoredMsg::from(old));
    assert!(page.msgs[0].0.mentions.is_empty());
    // A new record is read whole, mentions and all.
    store
        .apply_replicated(&[msg(&lobby, 6, "alice", None, &["bob"])])
        .unwrap();
    let page = store
        .page(&lobby, &user("bob"), PageDir::After(at(5)), 10, None, &[])
        .unwrap();
    assert_eq!(page.msgs[0].0.mentions, [user("bob")]);
}

#[test]
fn positions_move_forward_and_counts_skip_own_and_others_privates() {
    let d = tempfile::tempdir().unwrap();
    let store = open(d.path());
    let (a, b) = (room("a"), room("b"));
    let bob = user("bob");
    store.remember_member(&a, &bob).unwrap();
    store.remember_member(&b, &bob).unwrap();
    store
        .apply_replicated(&[
            msg(&a, 1, "alice", None, &["bob"]),
            msg(&a, 2, "bob", None, &[]),
            msg(&a, 3, "alice", Some("carol"), &[]),
            msg(&a, 4, "alice", Some("bob"), &[]),
            msg(&a, 5, "alice", None, &[]),
        ])
        .unwrap();
    let r = store.room_read(&bob, &a).unwrap();
    // 1, 4, 5: not bob's own 2, not alice's private to carol 3.
    assert_eq!((r.unread, r.mentions, r.last_cursor), (3, 1, Some(at(5))));
    assert!(store.move_read(&bob, &a, at(4)).unwrap());
    assert!(!store.move_read(&bob, &a, at(1)).unwrap(), "backwards");
    assert!(!store.move_read(&bob, &a, at(4)).unwrap(), "the same");
    let r = store.room_read(&bob, &a).unwrap();
    assert_eq!((r.read_cursor, r.unread, r.mentions), (Some(at(4)), 1, 0));
    // Joining again keeps the position.
    store.remember_member(&a, &bob).unwrap();
    let list = store.rooms_of(&bob).unwrap();
    let names: Vec<&str> = list.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list[0].read_cursor, Some(at(4)));
    assert_eq!((list[1].last_cursor, list[1].unread), (None, 0));
    // Carol: the chats of both and her private, not bob's private 4; alice's list is empty.
    assert_eq!(store.room_read(&user("carol"), &a).unwrap().unread, 4);
    assert!(store.rooms_of(&user("alice")).unwrap().is_empty());
}

#[test]
fn room_lists_are_built_from_older_member_records() {
    let d = tempfile::tempdir().unwrap();
    {
        let store = open(d.path());
        // As an older binary recorded a join: the member record only.
        store
            .inner
            .room_members
            .insert(member_key(&room("old"), &user("bob")), &[])
            .unwrap();
        store.inner.db.flush().unwrap();
    }
    let store = open(d.path());
    let list = store.rooms_of(&user("bob")).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].room.as_str(), list[0].read_cursor), ("old", None));
}

#[test]
fn counts_stop_at_the_cap() {
    let d = tempfile::tempdir().unwrap();
    let store = open(d.path());
    let r = room("busy");
    let cmds: Vec<StorageCmd> = (1..=120)
        .map(|n| msg(&r, n, "alice", None, &["bob"]))
        .collect();
    store.apply_replicated(&cmds).unwrap();
    let got = store.room_read(&user("bob"), &r).unwrap();
    assert_eq!((got.unread, got.mentions), (COUNT_CAP, COUNT_CAP));
}

/// The cost of `GET /api/rooms`'s storage side for a user in 100 rooms, each
/// with 150 messages unread (so every room hits both caps) and one message
/// of theirs. A measurement, not a check: run with
/// `cargo test --lib rooms_of_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn rooms_of_cost_for_a_user_in_100_rooms() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(&d.path().join("db"), 64 << 20).unwrap();
    let bob = user("bob");
    let mut n = 0;
    for r in 0..100 {
        let r = room(&format!("r{r}"));
        store.remember_member(&r, &bob).unwrap();
        let cmds: Vec<StorageCmd> = (0..151)
            .map(|i| {
                n += 1;
                let from = if i == 0 { "bob" } else { "alice" };
                msg(&r, n, from, None, if i > 0 { &["bob"] } else { &[] })
            })
            .collect();
        store.apply_replicated(&cmds).unwrap();
    }
    let mut ms: Vec<f64> = (0..15)
        .map(|_| {
            let t = std::time::Instant::now();
            let list = store.rooms_of(&bob).unwrap();
            assert_eq!(list.len(), 100);
            assert!(
                list.iter()
                    .all(|r| r.unread == COUNT_CAP && r.mentions == COUNT_CAP)
            );
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "rooms_of, 100 rooms at both caps: median {:.2} ms, min {:.2}, max {:.2} (15 runs)",
        ms[7], ms[0], ms[14]
    );
}
