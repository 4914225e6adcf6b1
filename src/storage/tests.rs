//! Storage unit tests: the view index bounds a page's work, is built for a
//! log written without it, and undecodable records are skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::*;
use crate::metrics::Metrics;
use crate::protocol::{MsgKind, PageDir, StoredMsg};

fn user(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn msg(room: &RoomName, n: u64, from: &str, to: Option<&str>) -> StoredMsg {
    StoredMsg {
        id: Uuid::new_v4(),
        kind: if to.is_some() {
            MsgKind::Private
        } else {
            MsgKind::Chat
        },
        room: room.clone(),
        sender: user(from),
        target: to.map(user),
        content: format!("m{n}"),
        action: false,
        ts_ms: n,
        cursor: Cursor { ms: n, seq: 0 },
        mentions: Vec::new(),
    }
}

/// 3 public, `hidden` privates alice → bob, 3 public: cursors 1..
fn room_msgs(room: &RoomName, hidden: u64) -> Vec<StoredMsg> {
    let mut v = Vec::new();
    let mut n = 0;
    let mut next = |from: &str, to: Option<&str>| {
        n += 1;
        msg(room, n, from, to)
    };
    for _ in 0..3 {
        v.push(next("alice", None));
    }
    for _ in 0..hidden {
        v.push(next("alice", Some("bob")));
    }
    for _ in 0..3 {
        v.push(next("bob", None));
    }
    v
}

/// Writes through the real storage writer (log, id index and view index in one commit).
async fn write(store: &Store, msgs: Vec<StoredMsg>) {
    let (events_tx, mut events_rx) = mpsc::channel(16);
    let drain = tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    // A queue that holds them all: the test sends without waiting.
    let queue = msgs.len() + 1;
    let (h, task) = StorageHandle::spawn(
        store.clone(),
        StorageWriterConfig {
            queue,
            // The guard off: these tests are about what is written, not the disk.
            data_dir: std::env::temp_dir(),
            min_free_bytes: 0,
        },
        events_tx,
        Metrics::new(),
    );
    for m in msgs {
        assert!(
            h.try_send(StorageCmd::Append(Arc::new(m), Instant::now()))
                .is_ok()
        );
    }
    task.shutdown().await;
    drop(h);
    drain.await.unwrap();
}

/// Writes records the way a build without the view index did: log and room only.
fn write_unindexed(store: &Store, msgs: &[StoredMsg]) {
    for m in msgs {
        store
            .inner
            .log
            .insert(log_key(&m.room, m.cursor), encode(m).unwrap())
            .unwrap();
    }
    store.note_rooms(msgs.iter().map(|m| &m.room)).unwrap();
}

fn contents(p: &Page) -> Vec<String> {
    p.msgs.iter().map(|(m, _)| m.content.clone()).collect()
}

fn page(store: &Store, room: &RoomName, who: &str, dir: PageDir, limit: usize) -> Page {
    store.page(room, &user(who), dir, limit, None, &[]).unwrap()
}

const HIDDEN: u64 = 10_000;

#[tokio::test]
async fn a_page_examines_only_what_the_reader_may_see() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let room = RoomName::parse("scan").unwrap();
    write(&store, room_msgs(&room, HIDDEN)).await;

    // carol sees the 6 public messages and nothing between them.
    let p = page(&store, &room, "carol", PageDir::Latest, 50);
    assert_eq!(
        contents(&p),
        ["m1", "m2", "m3", "m10004", "m10005", "m10006"]
    );
    assert!(!p.more);
    assert!(p.examined <= 6, "examined {} records", p.examined);
    // Paging backwards across the hidden run is just as cheap.
    let p = page(
        &store,
        &room,
        "carol",
        PageDir::Before(Cursor { ms: 10_004, seq: 0 }),
        2,
    );
    assert_eq!(contents(&p), ["m2", "m3"]);
    assert!(p.more);
    assert!(p.examined <= 3, "examined {} records", p.examined);
    let p = page(
        &store,
        &room,
        "carol",
        PageDir::After(Cursor { ms: 3, seq: 0 }),
        2,
    );
    assert_eq!(contents(&p), ["m10004", "m10005"]);
    assert!(p.more);
    assert!(p.examined <= 3, "examined {} records", p.examined);

    // bob (the target) and alice (the sender) see the privates, merged in order.
    for who in ["bob", "alice"] {
        let p = page(&store, &room, who, PageDir::Latest, 5);
        assert_eq!(
            contents(&p),
            ["m10002", "m10003", "m10004", "m10005", "m10006"]
        );
        assert!(p.more);
        assert!(p.examined <= 6, "{who} examined {} records", p.examined);
    }
    let p = page(
        &store,
        &room,
        "bob",
        PageDir::After(Cursor { ms: 2, seq: 0 }),
        3,
    );
    assert_eq!(contents(&p), ["m3", "m4", "m5"]);
}

#[tokio::test]
async fn a_log_written_without_the_index_is_indexed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let room = RoomName::parse("old").unwrap();
    let msgs = room_msgs(&room, 100);
    {
        let store = Store::open(dir.path(), 16 << 20).unwrap();
        // Half of it indexed (a build cut short), the rest as an old build wrote it.
        write(&store, msgs[..50].to_vec()).await;
        write_unindexed(&store, &msgs[50..]);
        store.inner.db.flush().unwrap();
    }
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let p = page(&store, &room, "carol", PageDir::Latest, 50);
    assert_eq!(contents(&p), ["m1", "m2", "m3", "m104", "m105", "m106"]);
    let p = page(&store, &room, "bob", PageDir::Latest, 100);
    assert_eq!(p.msgs.len(), 100);
    assert!(p.more);
    // Nothing left to index on the next start.
    assert_eq!(store.catch_up_views().unwrap(), 0);
}

#[tokio::test]
async fn an_undecodable_record_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let room = RoomName::parse("bad").unwrap();
    let msgs = room_msgs(&room, 0);
    write(&store, msgs.clone()).await;
    // Garbage in place of m2 (its view entry stays).
    store
        .inner
        .log
        .insert(log_key(&room, msgs[1].cursor), &[0xff; 7])
        .unwrap();
    let p = page(&store, &room, "carol", PageDir::Latest, 50);
    assert_eq!(contents(&p), ["m1", "m3", "m4", "m5", "m6"]);
    let counted = store.decode_errors().with_label_values(&["message"]).get();
    assert_eq!(counted, 1);

    store.inner.users.insert("zed", &[0xff; 3]).unwrap();
    assert!(store.users().unwrap().is_empty());
    assert_eq!(store.decode_errors().with_label_values(&["user"]).get(), 1);
}

/// sled's lock failure is classified here, in storage: the server retries an
/// open only on `LockHeld`, and the rest of the server never matches sled.
#[test]
fn a_held_lock_is_classified_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path(), 1 << 20).unwrap();
    let Err(e) = Store::open(dir.path(), 1 << 20) else {
        panic!("a second open of a held database succeeded");
    };
    assert!(e.is_lock_held(), "not classified as a held lock: {e}");
    assert!(e.to_string().contains("could not acquire lock"), "{e}");
}

/// The id index answers the id rule (ids.rs): the sender's own resend in
/// the same room, someone else's id, and a fresh one.
#[tokio::test]
async fn classify_id_follows_the_rule_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 16 << 20).unwrap();
    let room = RoomName::parse("r").unwrap();
    let m = msg(&room, 1, "alice", None);
    let id = m.id;
    write(&store, vec![m]).await;
    let other = RoomName::parse("s").unwrap();
    assert_eq!(
        store.classify_id(&id, &user("alice"), &room).unwrap(),
        IdUse::Resend
    );
    assert_eq!(
        store.classify_id(&id, &user("bob"), &room).unwrap(),
        IdUse::Conflict
    );
    assert_eq!(
        store.classify_id(&id, &user("alice"), &other).unwrap(),
        IdUse::Conflict
    );
    let fresh = Uuid::new_v4();
    assert_eq!(
        store.classify_id(&fresh, &user("alice"), &room).unwrap(),
        IdUse::Fresh
    );
}
