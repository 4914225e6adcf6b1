//! History in a room full of private messages between others, and stored
//! records that fail to decode. The data is written straight into a stopped
//! server's sled database (as a build without the view index wrote it), then a
//! real server starts on that directory.

use std::path::Path;

use crate::support::*;
use hubbub::protocol::{Cursor, MsgKind, RoomName, StoredMsg, Username};

const ADMIN: &str = "admin-token-0123456789abcdef";
/// Private messages alice → bob between the public ones: enough that reading
/// them all for a third user's page would show in the examined-records metric.
const HIDDEN: u64 = 20_000;

fn stored(room: &str, n: u64, from: &str, to: Option<&str>, content: String) -> StoredMsg {
    StoredMsg {
        id: uuid::Uuid::new_v4(),
        kind: if to.is_some() {
            MsgKind::Private
        } else {
            MsgKind::Chat
        },
        room: RoomName::parse(room).unwrap(),
        sender: Username::parse(from).unwrap(),
        target: to.map(|t| Username::parse(t).unwrap()),
        content,
        action: false,
        ts_ms: now_ms(),
        cursor: Cursor { ms: n, seq: 0 },
        mentions: Vec::new(),
    }
}

fn log_key(room: &str, n: u64) -> Vec<u8> {
    let mut k = room.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&Cursor { ms: n, seq: 0 }.to_key());
    k
}

/// Writes into the stopped server's database the way a build without the
/// view index did (room log + room list), plus garbage under `bad` cursors
/// of the room log and a garbage account record when `bad_user`.
fn seed(data: &Path, room: &str, msgs: &[StoredMsg], bad: &[u64], bad_user: bool) {
    let db = reopen(|| sled::open(data.join("db")));
    let log = db.open_tree("roomname_cursor_msg").unwrap();
    let mut batch = sled::Batch::default();
    for m in msgs {
        let bytes = bincode::serde::encode_to_vec(m, bincode::config::standard()).unwrap();
        batch.insert(log_key(room, m.cursor.ms), bytes);
    }
    for n in bad {
        batch.insert(log_key(room, *n), &[0xff_u8; 9][..]);
    }
    log.apply_batch(batch).unwrap();
    db.open_tree("roomname_unit")
        .unwrap()
        .insert(room, &[])
        .unwrap();
    if bad_user {
        db.open_tree("username_user")
            .unwrap()
            .insert("zz_broken", &[0xff_u8; 5][..])
            .unwrap();
    }
    db.flush().unwrap();
}

/// One sample of the server's `/metrics` text: `name{labels} value`.
async fn metric(s: &TestServer, series: &str) -> f64 {
    metric_sample(s.endpoint(), series)
        .await
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

/// Users exist before the seeding (sign-up needs a running server).
async fn users(names: &[&str], extra: &[&str]) -> (tempfile::TempDir, Vec<String>) {
    let s = TestServer::start_with(extra).await;
    let mut out = Vec::new();
    for n in names {
        let n = name(n);
        s.user(&n).await;
        out.push(n);
    }
    (s.stop().await, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_users_page_skips_hidden_privates_without_reading_them() {
    let (dir, names) = users(&["alice", "bob", "carol"], &[]).await;
    let (alice, bob, carol) = (&names[0], &names[1], &names[2]);
    let room = "crowded";
    let mut msgs = Vec::new();
    let mut n = 0;
    for i in 0..5 {
        n += 1;
        msgs.push(stored(room, n, alice, None, format!("pub a{i}")));
    }
    for i in 0..HIDDEN {
        n += 1;
        msgs.push(stored(room, n, alice, Some(bob), format!("secret {i}")));
    }
    for i in 0..5 {
        n += 1;
        msgs.push(stored(room, n, bob, None, format!("pub b{i}")));
    }
    seed(dir.path(), room, &msgs, &[], false);
    let public: Vec<String> = (0..5)
        .map(|i| format!("pub a{i}"))
        .chain((0..5).map(|i| format!("pub b{i}")))
        .collect();

    let s = TestServer::start_in(dir, &[]).await;
    let carol = s.user(carol).await;
    let (_c, _, h) = join_full(&s, &carol, room, None, None).await;
    assert_eq!(contents_of(&h), public);
    assert_eq!(h["more"], false);

    // The sender and the target see the privates, in order, after the upgrade.
    let bob = s.user(bob).await;
    let (_b, _, h) = join_full(&s, &bob, room, None, None).await;
    let mut want: Vec<String> = (HIDDEN - 45..HIDDEN)
        .map(|i| format!("secret {i}"))
        .collect();
    want.extend((0..5).map(|i| format!("pub b{i}")));
    assert_eq!(contents_of(&h), want);
    assert_eq!(h["more"], true);

    // carol pages back over HTTP, 3 at a time: every public message once.
    let mut seen: Vec<String> = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let r = http_history(&s, &carol, room, &query).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let mut got = contents_of(&page);
        got.extend(seen);
        seen = got;
        if page["more"] != true {
            break;
        }
        let oldest = page["messages"][0]["cursor"].as_str().unwrap();
        query = format!("limit=3&before={oldest}");
    }
    assert_eq!(seen, public);

    // Every page (the joins included) read at most limit + 1 records, not the
    // 20 000 privates between the public ones.
    let pages = metric(&s, "hubbub_history_records_examined_count").await;
    let small = metric(&s, "hubbub_history_records_examined_bucket{le=\"101\"}").await;
    assert!(pages >= 6.0, "{pages} pages");
    assert_eq!(small, pages, "a page examined more than 101 records");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_skipped_and_counted() {
    let (dir, names) = users(&["alice", "carol"], &["--admin-token", ADMIN]).await;
    let room = "damaged";
    let msgs: Vec<StoredMsg> = [1, 2, 4, 6]
        .into_iter()
        .map(|n| stored(room, n, &names[0], None, format!("good {n}")))
        .collect();
    seed(dir.path(), room, &msgs, &[3, 5], true);

    let s = TestServer::start_in(dir, &["--admin-token", ADMIN]).await;
    let carol = s.user(&names[1]).await;
    let (mut c, _, h) = join_full(&s, &carol, room, None, None).await;
    assert_eq!(contents_of(&h), ["good 1", "good 2", "good 4", "good 6"]);
    assert_eq!(h["more"], false);
    let r = http_history(&s, &carol, room, "limit=2").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(contents_of(&r.json()), ["good 4", "good 6"]);
    let bad = metric(&s, "hubbub_storage_decode_errors_total{what=\"message\"}").await;
    assert!(bad >= 2.0, "{bad} message decode errors counted");

    // The user list still lists everyone else.
    let auth = format!("Bearer {ADMIN}");
    let r = hubbub_client::request(
        s.addr,
        "GET",
        "/api/admin/users",
        &[("authorization", auth.as_str())],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&names[0]) && r.body.contains(&names[1]),
        "{}",
        r.body
    );
    assert!(!r.body.contains("zz_broken"), "{}", r.body);
    let bad = metric(&s, "hubbub_storage_decode_errors_total{what=\"user\"}").await;
    assert!(bad >= 1.0, "{bad} user decode errors counted");

    // And the room keeps working.
    say_saved(&mut c, "still here").await;
    s.stop().await;
}
