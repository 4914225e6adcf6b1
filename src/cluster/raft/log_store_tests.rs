//! The log store on real sled in temp dirs: openraft's own storage suite,
//! then what the suite does not cover (a reopen, purge and truncate edges,
//! corrupt records). The state machine here is a map in memory, only so the
//! suite can run (`test_sm.rs`); hubbub's state machine is its storage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership};

use super::*;
use crate::cluster::raft::test_sm::{MemStateMachine, TestConfig};

type Sm = MemStateMachine;
type Err = StorageError<u64>;

// ------------------------------------------------------------ the suite

/// A fresh `Store` on its own temp dir (real sled) per suite case; the temp
/// dir is the guard, removed when the case drops it.
struct TempStoreBuilder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, Sm, tempfile::TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<TestConfig>, Sm), Err> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        Ok((dir, LogStore::open(&store).unwrap(), Sm::default()))
    }
}

/// openraft's storage suite builds its own runtime per case, so this is a
/// plain test, not a `#[tokio::test]`.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(TempStoreBuilder).unwrap();
}

// ------------------------------------------------------------ our own cases

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64, s: &str) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(s.to_owned()),
    }
}

fn blank(term: u64, index: u64) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

/// Appends and waits for the flush callback, as RaftCore 0.9.25 does.
async fn append(ls: &mut LogStore<TestConfig>, entries: Vec<Entry<TestConfig>>) {
    use openraft::storage::RaftLogStorageExt;
    ls.blocking_append(entries).await.unwrap();
}

fn open(dir: &tempfile::TempDir) -> (Store, LogStore<TestConfig>) {
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let ls = LogStore::open(&store).unwrap();
    (store, ls)
}

fn indexes(v: &[Entry<TestConfig>]) -> Vec<u64> {
    v.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn entries_vote_committed_and_purged_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, mut ls) = open(&dir);
        let mut first = vec![blank(1, 1)];
        first.push(Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(Membership::new(
                vec![[1u64, 2, 3].into()],
                BTreeMap::from([(1u64, BasicNode::new("a")), (2, BasicNode::new("b"))]),
            )),
        });
        append(&mut ls, first).await;
        append(
            &mut ls,
            (3..=10).map(|i| normal(2, i, &format!("m{i}"))).collect(),
        )
        .await;
        ls.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        ls.purge(log_id(1, 2)).await.unwrap();
        // Committed is not flushed by itself: the next append's flush carries it.
        ls.save_committed(Some(log_id(2, 8))).await.unwrap();
        append(&mut ls, vec![normal(2, 11, "m11")]).await;
    }
    let (_store, mut ls) = open(&dir);
    let entries = ls.try_get_log_entries(..).await.unwrap();
    assert_eq!(indexes(&entries), (3..=11).collect::<Vec<_>>());
    assert!(matches!(&entries[2].payload, EntryPayload::Normal(s) if s == "m5"));
    assert_eq!(
        ls.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(ls.read_committed().await.unwrap(), Some(log_id(2, 8)));
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 11)));
}

#[tokio::test]
async fn an_empty_log_reports_nothing_and_committed_none_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut ls) = open(&dir);
    let state = ls.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(ls.read_vote().await.unwrap(), None);
    assert_eq!(ls.read_committed().await.unwrap(), None);
    ls.save_committed(None).await.unwrap();
    assert_eq!(ls.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn purging_everything_leaves_last_purged_as_the_last_log_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut ls) = open(&dir);
    append(&mut ls, (1..=5).map(|i| blank(1, i)).collect()).await;
    ls.purge(log_id(1, 5)).await.unwrap();
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(ls.try_get_log_entries(..).await.unwrap().is_empty());
    // The log goes on after the purged id.
    append(&mut ls, vec![blank(2, 6)]).await;
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 6)));
}

#[tokio::test]
async fn a_purge_whose_removal_was_lost_still_reports_last_purged() {
    // A crash after "last purged" was flushed but before the removal was:
    // the entries up to it are still on disk.
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ls) = open(&dir);
    append(&mut ls, (1..=5).map(|i| blank(1, i)).collect()).await;
    let purged = log_id(1, 7);
    store
        .raft_log()
        .unwrap()
        .put_meta(RaftMeta::LastPurged, &encode(&purged).unwrap())
        .await
        .unwrap();
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(purged));
    assert_eq!(state.last_log_id, Some(purged), "not the leftover at 5");
}

#[tokio::test]
async fn truncate_and_purge_are_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut ls) = open(&dir);
    append(&mut ls, (1..=10).map(|i| blank(1, i)).collect()).await;
    ls.truncate(log_id(1, 11)).await.unwrap();
    assert_eq!(ls.try_get_log_entries(..).await.unwrap().len(), 10);
    ls.truncate(log_id(1, 8)).await.unwrap();
    ls.purge(log_id(1, 3)).await.unwrap();
    let got = ls.try_get_log_entries(..).await.unwrap();
    assert_eq!(indexes(&got), (4..=7).collect::<Vec<_>>());
    // A new leader's entry replaces the truncated tail.
    append(&mut ls, vec![blank(3, 8)]).await;
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(3, 8)));
    // Truncating right after the purged id empties the log, which then ends at it.
    ls.truncate(log_id(1, 4)).await.unwrap();
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    let mut reader = ls.get_log_reader().await;
    assert!(reader.try_get_log_entries(0..100).await.unwrap().is_empty());
}

/// A stored record that does not decode: every read of it is a storage
/// error (openraft stops this node's Raft), and the process goes on.
#[tokio::test]
async fn corrupt_records_are_storage_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ls) = open(&dir);
    append(&mut ls, (1..=3).map(|i| normal(1, i, "ok")).collect()).await;
    let raw = store.raft_log().unwrap();
    raw.append(vec![(4, vec![0xff, 0xff, 0xff])]).await.unwrap();

    let err = ls.try_get_log_entries(..).await.unwrap_err();
    assert!(err.to_string().contains('4'), "names the index: {err}");
    assert!(
        ls.get_log_state().await.is_err(),
        "the last entry is read too"
    );
    assert_eq!(ls.try_get_log_entries(1..4).await.unwrap().len(), 3);

    // A well-formed entry under the wrong index is corrupt too.
    raw.append(vec![(4, encode(&normal(1, 9, "x")).unwrap())])
        .await
        .unwrap();
    let err = ls.try_get_log_entries(4..=4).await.unwrap_err();
    assert!(err.to_string().contains("says it is 9"), "{err}");

    raw.put_meta(RaftMeta::Vote, b"\xff").await.unwrap();
    assert!(ls.read_vote().await.is_err());
    raw.put_meta(RaftMeta::LastPurged, b"").await.unwrap();
    assert!(ls.get_log_state().await.is_err());
}

/// A length prefix claiming far more than any entry: refused by the decode
/// limit rather than attempted as an allocation.
#[tokio::test]
async fn a_huge_claimed_length_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut ls) = open(&dir);
    let mut bytes = encode(&normal(1, 1, "abc")).unwrap();
    // The string's varint length (3) sits right before its bytes at the end.
    let at = bytes.len() - 4;
    assert_eq!(bytes[at], 3);
    bytes.truncate(at);
    bytes.push(0xfd); // varint: a u64 follows
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bytes.extend_from_slice(b"abc");
    store
        .raft_log()
        .unwrap()
        .append(vec![(1, bytes)])
        .await
        .unwrap();
    let err = ls.try_get_log_entries(..).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("limit"), "{err}");
}

// ------------------------------------------------------------ durability without Drop

/// The child half of `appended_entries_and_the_vote_survive_a_process_exit`:
/// one step (`append` or `vote`), then the process exits at once (no
/// destructor runs, so sled is never flushed by dropping the store). Does
/// nothing unless the parent set the directory.
#[tokio::test]
#[ignore = "run by appended_entries_and_the_vote_survive_a_process_exit in a child process"]
async fn child_writes_then_exits() {
    let Ok(dir) = std::env::var("HUBBUB_TEST_RAFT_CHILD_DIR") else {
        return;
    };
    let step = std::env::var("HUBBUB_TEST_RAFT_CHILD_STEP").unwrap();
    let store = Store::open(std::path::Path::new(&dir), 1 << 20).unwrap();
    let mut ls = LogStore::<TestConfig>::open(&store).unwrap();
    match step.as_str() {
        "append" => {
            append(
                &mut ls,
                (1..=20).map(|i| normal(1, i, &format!("m{i}"))).collect(),
            )
            .await
        }
        "vote" => ls.save_vote(&Vote::new_committed(1, 1)).await.unwrap(),
        "truncate" => ls.truncate(log_id(1, 16)).await.unwrap(),
        "purge" => ls.purge(log_id(1, 5)).await.unwrap(),
        other => panic!("unknown step {other}"),
    }
    std::process::exit(0);
}

/// Runs one step of `child_writes_then_exits` in a child process (bounded).
fn run_child(dir: &tempfile::TempDir, step: &str) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "cluster::raft::log_store::tests::child_writes_then_exits",
            "--exact",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("HUBBUB_TEST_RAFT_CHILD_DIR", dir.path())
        .env("HUBBUB_TEST_RAFT_CHILD_STEP", step)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: a child stuck for a minute is killed and the test fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("child ({step}) did not finish in 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "child ({step}) failed: {status}");
}

/// What `append`, `save_vote`, `truncate` and `purge` report done must be on disk even when the
/// process ends without dropping anything (sled writes its buffers out only
/// on a flush or a drop). Each step runs in its own process, so neither
/// rides on the other's flush.
#[test]
fn appended_entries_and_the_vote_survive_a_process_exit() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    run_child(&dir, "append");
    rt.block_on(async {
        let (_store, mut ls) = open(&dir);
        let entries = ls.try_get_log_entries(..).await.unwrap();
        assert_eq!(indexes(&entries), (1..=20).collect::<Vec<_>>());
    });
    run_child(&dir, "vote");
    rt.block_on(async {
        let (_store, mut ls) = open(&dir);
        assert_eq!(
            ls.read_vote().await.unwrap(),
            Some(Vote::new_committed(1, 1))
        );
    });
    // A truncated tail must not come back.
    run_child(&dir, "truncate");
    rt.block_on(async {
        let (_store, mut ls) = open(&dir);
        let entries = ls.try_get_log_entries(..).await.unwrap();
        assert_eq!(indexes(&entries), (1..=15).collect::<Vec<_>>());
    });
    // "Last purged" is on disk; the removal may or may not be (it rides on
    // the next flush), and either way the log state is the same.
    run_child(&dir, "purge");
    rt.block_on(async {
        let (_store, mut ls) = open(&dir);
        let state = ls.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 15)));
        let entries = ls.try_get_log_entries(6..).await.unwrap();
        assert_eq!(indexes(&entries), (6..=15).collect::<Vec<_>>());
    });
}
