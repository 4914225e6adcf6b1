//! The snapshot directory: a crash at each step of an install leaves the
//! old state or the new one after a restart, never a mix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use openraft::{CommittedLeaderId, LogId, StoredMembership};
use uuid::Uuid;

use super::*;
use crate::protocol::{Cursor, MsgKind, RoomName, StoredMsg, Username};
use crate::storage::{RaftMeta, StorageCmd};

/// A store with `n` messages in `room` and the state machine record for
/// log index `index`.
fn store_with(path: &Path, room: &str, n: u64, index: u64) -> (Store, Applied) {
    let store = Store::open(path, 1 << 20).unwrap();
    let cmds: Vec<StorageCmd> = (1..=n)
        .map(|k| {
            StorageCmd::Append(
                Arc::new(StoredMsg {
                    id: Uuid::new_v4(),
                    kind: MsgKind::Chat,
                    room: RoomName::parse(room).unwrap(),
                    sender: Username::parse("ann").unwrap(),
                    target: None,
                    content: format!("m{k}"),
                    action: false,
                    ts_ms: k,
                    cursor: Cursor { ms: k, seq: 0 },
                    mentions: Vec::new(),
                }),
                Instant::now(),
            )
        })
        .collect();
    store.apply_replicated(&cmds).unwrap();
    let applied = Applied {
        last: Some(LogId::new(CommittedLeaderId::new(1, 7), index)),
        membership: StoredMembership::default(),
        head: Cursor { ms: n, seq: 0 },
    };
    store
        .raft_log()
        .unwrap()
        .stage_meta(RaftMeta::StateMachine, &encode(&applied).unwrap())
        .unwrap();
    (store, applied)
}

/// The store's replicated state as bytes (an export is deterministic).
fn state(store: &Store, at: &Path) -> Vec<u8> {
    let f = std::fs::File::create(at).unwrap();
    store.export_replicated(f, b"").unwrap();
    std::fs::read(at).unwrap()
}

/// The leader's snapshot file (as it arrives), and the state it holds.
async fn leader_snapshot(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let (leader, applied) = store_with(&root.join("leader"), "lobby", 50, 40);
    let (mut snaps, _) = Snapshots::open(&root.join("leader-data"), &leader).unwrap();
    let header = Header {
        id: "1-40-0".into(),
        applied,
    };
    let (_file, _) = snaps.build(&leader, header).await.unwrap();
    let (mut f, _) = snaps.open_current().await.unwrap().unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut f, &mut bytes)
        .await
        .unwrap();
    (bytes, state(&leader, &root.join("leader.state")))
}

#[tokio::test]
async fn an_install_is_whole_after_a_crash_at_any_step() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (file, new_state) = leader_snapshot(root).await;

    // Step 0: the normal path, for reference.
    let data = root.join("f0");
    let (follower, _) = store_with(&root.join("f0db"), "other", 5, 3);
    let old_state = state(&follower, &root.join("old.state"));
    assert_ne!(old_state, new_state);
    let (mut snaps, _) = Snapshots::open(&data, &follower).unwrap();
    let mut rx = snaps.receiving().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut rx, &file)
        .await
        .unwrap();
    let (h, bytes) = snaps.install(&follower, rx).await.unwrap();
    assert_eq!(h.applied.last.unwrap().index, 40);
    assert_eq!(bytes, file.len() as u64);
    assert_eq!(state(&follower, &root.join("s0")), new_state);
    let (_, current) = snaps.open_current().await.unwrap().unwrap();
    assert_eq!(current.id, "1-40-0", "the installed snapshot is current");
    let names: Vec<_> = std::fs::read_dir(data.join(DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.len() == 1 && names[0].starts_with("snap-"),
        "{names:?}"
    );
    drop(snaps);
    drop(follower);

    // Crash while receiving (or before the rename): the old state, and the
    // partial file is gone at start.
    let data = root.join("f1");
    let (follower, _) = store_with(&root.join("f1db"), "other", 5, 3);
    let old_state = state(&follower, &root.join("old1.state"));
    let (mut snaps, _) = Snapshots::open(&data, &follower).unwrap();
    let mut rx = snaps.receiving().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut rx, &file[..file.len() / 2])
        .await
        .unwrap();
    drop((rx, snaps));
    let (snaps, redone) = Snapshots::open(&data, &follower).unwrap();
    assert!(redone.is_none());
    assert!(snaps.open_current().await.unwrap().is_none());
    assert_eq!(state(&follower, &root.join("s1")), old_state);
    assert!(
        std::fs::read_dir(data.join(DIR)).unwrap().next().is_none(),
        "the partial file was removed"
    );
    drop((snaps, follower));

    // Crash in the middle of the import (the mark is on disk, the trees are
    // half replaced): the import is done again at start.
    let data = root.join("f2");
    let (follower, _) = store_with(&root.join("f2db"), "other", 5, 3);
    crate::files::create_private_dir(&data.join(DIR)).unwrap();
    std::fs::write(data.join(DIR).join(INSTALLING), &file).unwrap();
    // The half: the new trees in place, then old state written over some.
    let partial = root.join("partial.snap");
    std::fs::write(&partial, &file).unwrap();
    follower.import_replicated(&partial).unwrap();
    follower
        .apply_replicated(&[StorageCmd::Append(
            Arc::new(StoredMsg {
                id: Uuid::new_v4(),
                kind: MsgKind::Chat,
                room: RoomName::parse("other").unwrap(),
                sender: Username::parse("ann").unwrap(),
                target: None,
                content: "stale".into(),
                action: false,
                ts_ms: 1,
                cursor: Cursor { ms: 1, seq: 0 },
                mentions: Vec::new(),
            }),
            Instant::now(),
        )])
        .unwrap();
    let (snaps, redone) = Snapshots::open(&data, &follower).unwrap();
    assert_eq!(redone.unwrap().applied.last.unwrap().index, 40);
    assert_eq!(state(&follower, &root.join("s2")), new_state);
    let (_, current) = snaps.open_current().await.unwrap().unwrap();
    assert_eq!(current.id, "1-40-0");
    assert!(!data.join(DIR).join(INSTALLING).exists());
    drop(snaps);

    // Crash after the import, before the mark was renamed: the same again
    // (importing twice is harmless).
    std::fs::copy(snaps_file(&data), data.join(DIR).join(INSTALLING)).unwrap();
    let (_snaps, redone) = Snapshots::open(&data, &follower).unwrap();
    assert!(redone.is_some());
    assert_eq!(state(&follower, &root.join("s3")), new_state);
}

fn snaps_file(data: &Path) -> std::path::PathBuf {
    std::fs::read_dir(data.join(DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".snap"))
        .unwrap()
}

#[tokio::test]
async fn a_damaged_received_snapshot_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (mut file, _) = leader_snapshot(root).await;
    let n = file.len();
    file[n / 2] ^= 1;
    let (follower, _) = store_with(&root.join("fdb"), "other", 5, 3);
    let old_state = state(&follower, &root.join("old.state"));
    let (mut snaps, _) = Snapshots::open(&root.join("f"), &follower).unwrap();
    let mut rx = snaps.receiving().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut rx, &file)
        .await
        .unwrap();
    assert!(snaps.install(&follower, rx).await.is_err());
    assert_eq!(state(&follower, &root.join("s")), old_state);
    assert!(snaps.open_current().await.unwrap().is_none());
}
