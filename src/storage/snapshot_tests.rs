//! Snapshot export/import: every replicated tree round-trips, nothing else
//! travels, and a damaged file is an error that changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::*;
use crate::protocol::{Cursor, MsgKind, Status, StoredMsg, Username};
use crate::storage::{AccountOp, AckCmd, RefreshRecord, StorageCmd, UserRecord};

type Dump = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every tree of the database but sled's default one, with its content.
fn dump(store: &Store) -> Dump {
    let db = &store.inner.db;
    db.tree_names()
        .into_iter()
        .filter(|n| n.as_ref() != b"__sled__default")
        .map(|n| {
            let t = db.open_tree(&n).unwrap();
            let kv = t
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (String::from_utf8(n.to_vec()).unwrap(), kv)
        })
        .collect()
}

/// What travels: everything but the log's entries and its own meta values.
fn replicated(mut d: Dump) -> Dump {
    d.remove("raftindex_entry");
    if let Some(meta) = d.get_mut("raftmeta_value") {
        meta.retain(|(k, _)| k == RaftMeta::StateMachine.key());
    }
    d
}

fn user(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn post(room: &str, n: u64, to: Option<&str>) -> StorageCmd {
    StorageCmd::Append(
        Arc::new(StoredMsg {
            id: Uuid::new_v4(),
            kind: if to.is_some() {
                MsgKind::Private
            } else {
                MsgKind::Chat
            },
            room: RoomName::parse(room).unwrap(),
            sender: user("alice"),
            target: to.map(user),
            content: format!("m{n}"),
            action: false,
            ts_ms: n,
            cursor: Cursor { ms: n, seq: 0 },
            mentions: Vec::new(),
        }),
        Instant::now(),
    )
}

/// A store with something in every replicated tree, and a log of its own.
async fn filled(path: &Path, rooms: &[&str], n: u64) -> Store {
    let store = Store::open(path, 1 << 20).unwrap();
    let mut cmds = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for k in 0..n {
            let to = (k % 3 == 0).then_some("bob");
            cmds.push(post(room, (i as u64) * 1000 + k + 1, to));
        }
        let r = RoomName::parse(room).unwrap();
        store.remember_member(&r, &user("bob")).unwrap();
        // A read position: replicated like the log's messages (`ReadCmd`).
        let read = Cursor {
            ms: (i as u64) * 1000 + 1,
            seq: 0,
        };
        assert!(store.move_read(&user("bob"), &r, read).unwrap());
    }
    let ids: Vec<Uuid> = cmds
        .iter()
        .filter_map(|c| match c {
            StorageCmd::Append(m, _) => Some(m.id),
            _ => None,
        })
        .collect();
    cmds.push(StorageCmd::Ack(AckCmd {
        by: user("bob"),
        ids,
        status: Status::Seen,
    }));
    store.apply_replicated(&cmds).unwrap();
    let rec = UserRecord {
        id: Uuid::new_v4(),
        username: user(rooms[0]),
        created_ms: 1,
        phc: "$argon2id$x".into(),
        disabled: false,
    };
    let family = Uuid::new_v4();
    let refresh = RefreshRecord {
        family,
        username: rec.username.clone(),
        expires_ms: 1 << 40,
        spent: false,
    };
    let ops = [
        AccountOp::CreateUser(rec.clone()),
        AccountOp::PutRefresh {
            hash: vec![1; 32],
            rec: refresh.clone(),
        },
        AccountOp::PutRefresh {
            hash: vec![2; 32],
            rec: refresh,
        },
        AccountOp::Spend {
            hash: vec![1; 32],
            op: Uuid::new_v4(),
        },
        AccountOp::RevokeFamily {
            family,
            user: rec.username,
        },
    ];
    for op in &ops {
        store.apply_account(op, 5).unwrap();
    }
    let log = store.raft_log().unwrap();
    log.append([(1, b"entry".to_vec())]).await.unwrap();
    log.put_meta(RaftMeta::Vote, b"vote").await.unwrap();
    log.stage_meta(RaftMeta::StateMachine, rooms[0].as_bytes())
        .unwrap();
    store
}

fn export(store: &Store, path: &Path) -> Exported {
    let f = std::fs::File::create(path).unwrap();
    store.export_replicated(f, b"header").unwrap()
}

#[tokio::test]
async fn every_replicated_tree_round_trips_and_the_log_stays_its_own() {
    // Read positions (`username_roomname_cursor`) included: they come from the log.
    let d = tempfile::tempdir().unwrap();
    let src = filled(&d.path().join("a"), &["lobby", "dev"], 40).await;
    let file = d.path().join("s.snap");
    let stats = export(&src, &file);
    assert!(stats.records > 100, "{stats:?}");
    assert_eq!(stats.bytes, std::fs::metadata(&file).unwrap().len());

    // The target has other state of its own: all of it is replaced.
    let dst = filled(&d.path().join("b"), &["other"], 5).await;
    let own_log = dump(&dst)["raftindex_entry"].clone();
    let header = dst.import_replicated(&file).unwrap();
    assert_eq!(header, b"header");

    let want = replicated(dump(&src));
    // Every tree the source wrote travels (a new tree must be added to TREES).
    let names: Vec<&str> = TREES.iter().map(|(_, n)| *n).collect();
    for name in want.keys() {
        assert!(
            names.contains(&name.as_str()) || name == "raftmeta_value",
            "tree {name} is not in the snapshot"
        );
        assert!(
            !want[name].is_empty() || name == "raftindex_entry",
            "{name} empty"
        );
    }
    assert_eq!(replicated(dump(&dst)), want);
    let after = dump(&dst);
    assert_eq!(after["raftindex_entry"], own_log, "the log is not replaced");
    let vote = dst.raft_log().unwrap().meta(RaftMeta::Vote).unwrap();
    assert_eq!(vote.as_deref(), Some(&b"vote"[..]), "the vote stays");

    // Read positions travel (they come from the log), the target's own are replaced.
    let lobby = RoomName::parse("lobby").unwrap();
    let read = dst.room_read(&user("bob"), &lobby).unwrap().read_cursor;
    assert_eq!(
        read,
        Some(Cursor { ms: 1, seq: 0 }),
        "bob's position in lobby"
    );
    let other = RoomName::parse("other").unwrap();
    assert_eq!(
        dst.room_read(&user("bob"), &other).unwrap().read_cursor,
        None
    );

    // In-memory caches follow: the rooms of the snapshot, not the old ones.
    assert!(dst.room_known(&RoomName::parse("lobby").unwrap()));
    assert!(!dst.room_known(&RoomName::parse("other").unwrap()));
    assert_eq!(dst.last_cursor().unwrap(), src.last_cursor().unwrap());
}

#[tokio::test]
async fn a_truncated_or_corrupt_snapshot_is_an_error_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let src = filled(&d.path().join("a"), &["lobby"], 30).await;
    let file = d.path().join("s.snap");
    export(&src, &file);
    let good = std::fs::read(&file).unwrap();
    let dst = filled(&d.path().join("b"), &["other"], 5).await;
    let before = dump(&dst);
    let bad = d.path().join("bad.snap");
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for cut in [
        0,
        4,
        8,
        12,
        40,
        good.len() / 2,
        good.len() - 33,
        good.len() - 1,
    ] {
        cases.push(good[..cut].to_vec());
    }
    for at in [3, 9, 20, good.len() / 3, good.len() - 40, good.len() - 2] {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        cases.push(b);
    }
    let mut longer = good.clone();
    longer.push(0);
    cases.push(longer);
    // A length far past anything stored: refused before it is allocated.
    let mut huge = good[..12].to_vec();
    huge.extend_from_slice(&[0xff; 8]);
    cases.push(huge);
    cases.push((0..5000u32).map(|i| (i * 7919) as u8).collect());
    for (i, c) in cases.iter().enumerate() {
        std::fs::write(&bad, c).unwrap();
        assert!(Store::check_snapshot(&bad).is_err(), "case {i} checks");
        assert!(dst.import_replicated(&bad).is_err(), "case {i} imports");
        assert_eq!(dump(&dst), before, "case {i} changed the store");
    }
    assert!(Store::check_snapshot(&d.path().join("missing")).is_err());
    std::fs::write(&bad, &good).unwrap();
    assert!(dst.import_replicated(&bad).is_ok());
}

/// Measurement, not a check (run with `--ignored --nocapture`): how long an
/// export of 100 000 messages takes (applies pause that long in a cluster)
/// and how long installing it takes.
#[tokio::test]
#[ignore]
async fn measure_export_and_import_of_100k_messages() {
    let d = tempfile::tempdir().unwrap();
    let src = Store::open(&d.path().join("a"), 64 << 20).unwrap();
    for batch in 0..100u64 {
        let cmds: Vec<StorageCmd> = (0..1000u64)
            .map(|k| {
                let n = batch * 1000 + k + 1;
                post(&format!("room{}", n % 8), n, None)
            })
            .collect();
        src.apply_replicated(&cmds).unwrap();
    }
    let file = d.path().join("s.snap");
    let t0 = Instant::now();
    let n = export(&src, &file);
    let exported = t0.elapsed();
    let dst = Store::open(&d.path().join("b"), 64 << 20).unwrap();
    let t1 = Instant::now();
    dst.import_replicated(&file).unwrap();
    eprintln!(
        "100 000 messages: {} records, {} bytes; export {exported:?}, check + import {:?}",
        n.records,
        n.bytes,
        t1.elapsed()
    );
}
