//! The writer against real sled on a tmpfs that fills up (root only: the test
//! mounts it; elsewhere it says it skipped).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use super::StorageWriterConfig;
use crate::metrics::Metrics;
use crate::protocol::{Cursor, MsgKind, RoomName, StoredMsg, Username};
use crate::storage::{Refused, StorageCmd, StorageEvent, StorageHandle};
use crate::storage::{StorageState, Store};

const LONG: Duration = Duration::from_secs(30);

/// A tmpfs on a fresh temp directory, lazily unmounted when dropped (also on panic).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size_mb: u64) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs");
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn append(cursor: &mut Cursor) -> (Uuid, StorageCmd) {
    *cursor = cursor.next(1_000_000);
    let id = Uuid::new_v4();
    let m = StoredMsg {
        id,
        kind: MsgKind::Chat,
        room: RoomName::parse("lobby").unwrap(),
        sender: Username::parse("alice").unwrap(),
        target: None,
        content: format!("{id} {}", "x".repeat(3000)),
        action: false,
        ts_ms: cursor.ms,
        cursor: *cursor,
        mentions: Vec::new(),
    };
    (id, StorageCmd::Append(Arc::new(m), Instant::now()))
}

/// Sorts one event's ids into `durable` or `failed`.
fn note(ev: StorageEvent, durable: &mut HashSet<Uuid>, failed: &mut HashSet<Uuid>) {
    match ev {
        StorageEvent::Durable(v) => durable.extend(v.iter().map(|m| m.id)),
        StorageEvent::Failed(v) => failed.extend(v.iter().map(|m| m.id)),
        StorageEvent::Receipt { .. } => {}
        StorageEvent::Committed(_)
        | StorageEvent::Revoked { .. }
        | StorageEvent::Installed { .. }
        | StorageEvent::ReadMoved { .. } => {
            panic!("the writer never reports the log's commits")
        }
    }
}

#[tokio::test]
async fn a_failed_batch_is_reported_and_only_flushed_messages_count() {
    let Some(fs) = Tmpfs::mount(3) else { return };
    let store = Store::open(&fs.path().join("db"), 1 << 20).unwrap();
    let metrics = Metrics::new();
    let (events_tx, mut events_rx) = mpsc::channel(1024);
    let cfg = StorageWriterConfig {
        queue: 64,
        data_dir: fs.path().to_owned(),
        // The guard off: the disk fills until sled fails.
        min_free_bytes: 0,
    };
    let (h, task) = StorageHandle::spawn(store, cfg, events_tx, metrics.clone());
    let (mut sent, mut durable, mut failed) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut cursor = Cursor::ZERO;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < LONG, "storage never failed");
        let (id, cmd) = append(&mut cursor);
        match h.try_send(cmd) {
            Ok(()) => {
                sent.insert(id);
            }
            Err(Refused::Busy) => {
                let ev = tokio::time::timeout(LONG, events_rx.recv()).await.unwrap();
                note(ev.unwrap(), &mut durable, &mut failed);
            }
            Err(Refused::Failed) => break,
            Err(Refused::Full) => panic!("the guard is off"),
        }
        tokio::task::yield_now().await;
    }
    // Every message sent is reported once: on disk, or failed.
    while durable.len() + failed.len() < sent.len() {
        let ev = tokio::time::timeout(LONG, events_rx.recv()).await.unwrap();
        note(ev.unwrap(), &mut durable, &mut failed);
    }
    assert!(!failed.is_empty() && !durable.is_empty());
    assert!(durable.is_disjoint(&failed));
    assert_eq!(durable.len() + failed.len(), sent.len());
    // Counted once flushed, never for a failed batch.
    assert_eq!(metrics.messages_stored.get(), durable.len() as u64);
    assert!(metrics.storage_errors.get() >= 1);
    assert_eq!(metrics.storage_state.get(), StorageState::Failed as i64);
    let reason = tokio::time::timeout(LONG, h.health().failed())
        .await
        .unwrap();
    assert!(reason.contains("No space left"), "{reason}");
    assert!(matches!(
        h.try_send(append(&mut cursor).1),
        Err(Refused::Failed)
    ));
    drop(h);
    task.shutdown().await;
}

/// The hub reserves a slot before deciding on a message: refused like
/// `try_send` (full queue, full or failed storage); an unused slot is freed.
#[test]
fn an_append_reservation_is_refused_like_try_send_and_freed_when_unused() {
    let (tx, mut rx) = mpsc::channel(1);
    let handle = StorageHandle {
        tx,
        health: super::StorageHealth::new(),
    };
    let first = handle.try_reserve_append().unwrap();
    assert_eq!(handle.try_reserve_append().err(), Some(Refused::Busy));
    drop(first);
    let slot = handle.try_reserve_append().unwrap();
    let mut cursor = Cursor::ZERO;
    let StorageCmd::Append(m, _) = append(&mut cursor).1 else {
        unreachable!()
    };
    slot.append(m.clone());
    assert!(matches!(rx.try_recv(), Ok(StorageCmd::Append(got, _)) if got.id == m.id));
    assert!(handle.health().set_full(true));
    assert_eq!(handle.try_reserve_append().err(), Some(Refused::Full));
    handle.health().fail("test".into());
    assert_eq!(handle.try_reserve_append().err(), Some(Refused::Failed));
}

/// While one group commit's flush is under way, the writer applies the next
/// batch and starts its flush too (at most `MAX_IN_FLIGHT`); each batch is
/// reported durable only after its own flush, in the order applied.
#[tokio::test]
async fn the_next_batch_is_applied_while_a_flush_is_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let cfg = StorageWriterConfig {
        queue: 64,
        data_dir: dir.path().to_owned(),
        min_free_bytes: 0,
    };
    let gate = Arc::new(Semaphore::new(0));
    let (h, task) =
        StorageHandle::spawn_gated(store.clone(), cfg, events_tx, Metrics::new(), gate.clone());
    let (room, alice) = (
        RoomName::parse("lobby").unwrap(),
        Username::parse("alice").unwrap(),
    );
    let applied =
        |id: &Uuid| store.classify_id(id, &alice, &room).unwrap() == crate::storage::IdUse::Resend;
    let mut cursor = Cursor::ZERO;
    // Batch 1: applied, its flush held at the gate.
    let (first, cmd) = append(&mut cursor);
    h.try_send(cmd).unwrap();
    wait_until(|| applied(&first)).await;
    // Batch 2 is applied while the first flush is still held: the fix.
    let (second, cmd) = append(&mut cursor);
    h.try_send(cmd).unwrap();
    wait_until(|| applied(&second)).await;
    // Nothing is reported before a flush ends.
    tokio::task::yield_now().await;
    assert!(events_rx.try_recv().is_err(), "reported before its flush");
    // A third waits on the queue: both flush slots are taken.
    let (third, cmd) = append(&mut cursor);
    h.try_send(cmd).unwrap();
    gate.add_permits(3);
    let mut order = Vec::new();
    while order.len() < 3 {
        match tokio::time::timeout(LONG, events_rx.recv()).await.unwrap() {
            Some(StorageEvent::Durable(v)) => order.extend(v.iter().map(|m| m.id)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        order,
        [first, second, third],
        "reported in the order applied"
    );
    drop(h);
    task.shutdown().await;
}

/// Polls `f` until it holds, for at most `LONG` (a bounded wait, not a timing assert).
async fn wait_until(f: impl Fn() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < LONG, "condition not reached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
