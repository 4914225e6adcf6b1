//! The replicated log's byte layer on a real sled database in a temp dir:
//! ranges, truncate and purge edges, durability across a reopen, corrupt keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Bound;

use super::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), 1 << 20).unwrap()
}

fn entries(r: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    r.map(|i| (i, format!("e{i}").into_bytes())).collect()
}

fn indexes(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
    v.iter().map(|(i, _)| *i).collect()
}

#[tokio::test]
async fn a_single_node_never_creates_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let names: Vec<Vec<u8>> = store
        .inner
        .db
        .tree_names()
        .into_iter()
        .map(|n| n.to_vec())
        .collect();
    assert!(!names.contains(&b"raftindex_entry".to_vec()));
    assert!(!names.contains(&b"raftmeta_value".to_vec()));
    store.raft_log().unwrap();
    assert!(
        store
            .inner
            .db
            .tree_names()
            .iter()
            .any(|n| &n[..] == b"raftindex_entry")
    );
}

#[tokio::test]
async fn ranges_follow_index_order_and_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir).raft_log().unwrap();
    assert_eq!(log.last().unwrap(), None);
    assert!(log.range(..).unwrap().is_empty());
    // Across a byte boundary (255 → 256), where little-endian keys would sort wrongly.
    log.append(entries(250..=260)).await.unwrap();
    assert_eq!(
        indexes(&log.range(..).unwrap()),
        (250..=260).collect::<Vec<_>>()
    );
    assert_eq!(indexes(&log.range(255..257).unwrap()), vec![255, 256]);
    assert_eq!(indexes(&log.range(..=251).unwrap()), vec![250, 251]);
    assert_eq!(indexes(&log.range(259..).unwrap()), vec![259, 260]);
    assert!(log.range(255..255).unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = log.range(257..255).unwrap();
    assert!(reversed.is_empty());
    assert!(
        log.range((Bound::Excluded(u64::MAX), Bound::Unbounded))
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.last().unwrap(), Some((260, b"e260".to_vec())));
    assert_eq!(log.range(256..=256).unwrap(), vec![(256, b"e256".to_vec())]);
}

#[tokio::test]
async fn truncate_removes_from_its_index_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir).raft_log().unwrap();
    log.append(entries(1..=10)).await.unwrap();
    log.truncate_from(11).await.unwrap();
    assert_eq!(log.last().unwrap().unwrap().0, 10, "past the end: nothing");
    log.truncate_from(7).await.unwrap();
    assert_eq!(
        indexes(&log.range(..).unwrap()),
        (1..=6).collect::<Vec<_>>()
    );
    // A new leader's entries replace the tail.
    log.append(vec![(7, b"new".to_vec())]).await.unwrap();
    assert_eq!(log.last().unwrap(), Some((7, b"new".to_vec())));
    log.truncate_from(0).await.unwrap();
    assert_eq!(log.last().unwrap(), None);
}

#[tokio::test]
async fn purge_removes_through_its_index_and_records_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir).raft_log().unwrap();
    log.append(entries(1..=10)).await.unwrap();
    assert_eq!(log.meta(RaftMeta::LastPurged).unwrap(), None);
    log.purge_through(0, b"p0").await.unwrap();
    assert_eq!(
        indexes(&log.range(..).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    log.purge_through(4, b"p4").await.unwrap();
    assert_eq!(
        indexes(&log.range(..).unwrap()),
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        log.meta(RaftMeta::LastPurged).unwrap(),
        Some(b"p4".to_vec())
    );
    log.purge_through(10, b"p10").await.unwrap();
    assert_eq!(log.last().unwrap(), None);
    assert_eq!(
        log.meta(RaftMeta::LastPurged).unwrap(),
        Some(b"p10".to_vec())
    );
}

#[tokio::test]
async fn meta_values_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir).raft_log().unwrap();
    log.put_meta(RaftMeta::Vote, b"v1").await.unwrap();
    log.stage_meta(RaftMeta::Committed, b"c1").unwrap();
    assert_eq!(log.meta(RaftMeta::Vote).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(log.meta(RaftMeta::Committed).unwrap(), Some(b"c1".to_vec()));
    assert_eq!(log.meta(RaftMeta::LastPurged).unwrap(), None);
    log.put_meta(RaftMeta::Vote, b"v2").await.unwrap();
    assert_eq!(log.meta(RaftMeta::Vote).unwrap(), Some(b"v2".to_vec()));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let log = store.raft_log().unwrap();
        log.append(entries(1..=20)).await.unwrap();
        log.put_meta(RaftMeta::Vote, b"vote").await.unwrap();
        log.stage_meta(RaftMeta::Committed, b"c15").unwrap();
        log.purge_through(5, b"p5").await.unwrap();
        log.truncate_from(18).await.unwrap();
    }
    let log = open(&dir).raft_log().unwrap();
    assert_eq!(
        indexes(&log.range(..).unwrap()),
        (6..=17).collect::<Vec<_>>()
    );
    assert_eq!(log.range(9..=9).unwrap(), vec![(9, b"e9".to_vec())]);
    assert_eq!(log.meta(RaftMeta::Vote).unwrap(), Some(b"vote".to_vec()));
    assert_eq!(
        log.meta(RaftMeta::Committed).unwrap(),
        Some(b"c15".to_vec())
    );
    assert_eq!(
        log.meta(RaftMeta::LastPurged).unwrap(),
        Some(b"p5".to_vec())
    );
}

#[tokio::test]
async fn a_foreign_key_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir).raft_log().unwrap();
    log.append(entries(1..=3)).await.unwrap();
    log.entries.insert(b"bad", b"x".to_vec()).unwrap();
    let err = log.range(..).unwrap_err();
    assert!(matches!(err, InternalError::Storage(_)), "{err}");
    assert!(err.to_string().contains("raft log key"), "{err}");
    log.entries.insert([0xff; 9], b"x".to_vec()).unwrap();
    assert!(log.last().is_err());
}

/// How long each measured configuration runs (`HUBBUB_BENCH_SECS`, default 3).
fn bench_secs() -> std::time::Duration {
    let secs = std::env::var("HUBBUB_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    std::time::Duration::from_secs_f64(secs)
}

/// A fresh store per measured configuration (no growth carried over), with
/// the server's default page cache (64 MiB).
fn bench_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 64 << 20).unwrap();
    (dir, store)
}

/// Appends ~1 KiB entries in batches of 1, 10 and 100, each batch one flush,
/// alone and with as many state-machine writes (another tree) carried by the
/// same flush, or by a second flush. Prints entries/s and flushes/s.
/// Run: `cargo test -p hubbub --lib storage::raft_log::tests::bench_append -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test: run by hand"]
async fn bench_append() {
    use std::time::Instant;
    let payload = vec![0x5a; 1024];
    // `HUBBUB_BENCH_BATCHES=100,200,400` measures other batch sizes;
    // `HUBBUB_BENCH_MODES="log only"` only the log.
    let batches: Vec<u64> = std::env::var("HUBBUB_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect();
    let modes = ["log only", "log + sm, one flush", "log + sm, two flushes"];
    let only = std::env::var("HUBBUB_BENCH_MODES").unwrap_or_default();
    for mode in modes.into_iter().filter(|m| m.starts_with(only.as_str())) {
        for &batch in &batches {
            let (dir, store) = bench_store();
            let log = store.raft_log().unwrap();
            let sm = store.inner.db.open_tree("bench_sm").unwrap();
            let mut next = 1u64;
            let (start, mut entries, mut flushes) = (Instant::now(), 0u64, 0u64);
            while start.elapsed() < bench_secs() {
                let rows: Vec<(u64, Vec<u8>)> =
                    (next..next + batch).map(|i| (i, payload.clone())).collect();
                if mode != "log only" {
                    let mut b = sled::Batch::default();
                    for (i, _) in &rows {
                        b.insert(&i.to_be_bytes(), payload.clone());
                    }
                    sm.apply_batch(b).unwrap();
                    if mode.ends_with("two flushes") {
                        store.flush().await.unwrap();
                        flushes += 1;
                    }
                }
                log.append(rows).await.unwrap();
                flushes += 1;
                next += batch;
                entries += batch;
            }
            let s = start.elapsed().as_secs_f64();
            println!(
                "{mode:<22} batch {batch:>3}: {:>8.0} entries/s {:>6.0} flushes/s",
                entries as f64 / s,
                flushes as f64 / s
            );
            drop((log, sm, store, dir));
        }
    }
}

/// What "last applied" costs to keep atomic with the data it covers, without
/// flushes (CPU and sled's own work only): one batch in one tree, two
/// batches in two trees (not atomic together), one transaction over two trees.
/// Run: `cargo test -p hubbub --lib storage::raft_log::tests::bench_last_applied -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test: run by hand"]
async fn bench_last_applied() {
    use sled::Transactional;
    use std::time::Instant;
    let payload = vec![0x5a; 1024];
    for per_op in [1u64, 10, 100] {
        for mode in [
            "one tree, one batch",
            "two trees, two batches",
            "two trees, transaction",
        ] {
            let (_dir, store) = bench_store();
            let data = store.inner.db.open_tree("bench_data").unwrap();
            let meta = store.inner.db.open_tree("bench_meta").unwrap();
            let (start, mut ops, mut n) = (Instant::now(), 0u64, 0u64);
            while start.elapsed() < bench_secs() {
                let keys: Vec<[u8; 8]> = (n..n + per_op).map(u64::to_be_bytes).collect();
                n += per_op;
                match mode {
                    "one tree, one batch" => {
                        let mut b = sled::Batch::default();
                        for k in &keys {
                            b.insert(&k[..], payload.clone());
                        }
                        b.insert(&b"\xffapplied"[..], &n.to_be_bytes()[..]);
                        data.apply_batch(b).unwrap();
                    }
                    "two trees, two batches" => {
                        let mut b = sled::Batch::default();
                        for k in &keys {
                            b.insert(&k[..], payload.clone());
                        }
                        data.apply_batch(b).unwrap();
                        meta.insert(b"applied", &n.to_be_bytes()).unwrap();
                    }
                    _ => {
                        (&data, &meta)
                            .transaction(|(d, m)| {
                                for k in &keys {
                                    d.insert(&k[..], payload.clone())?;
                                }
                                m.insert(&b"applied"[..], &n.to_be_bytes()[..])?;
                                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                            })
                            .unwrap();
                    }
                }
                ops += 1;
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / ops as f64;
            println!("{per_op:>3} writes/op, {mode:<24}: {us:>7.1} µs/op");
        }
    }
}
