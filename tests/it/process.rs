//! The real binary as a process: SIGTERM drains everything that was broadcast;
//! `kill -9` loses nothing that got its `saved` receipt.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use hubbub_client::{self as client, Incoming};

/// The binary on `data`; killed when dropped, even when the test panics.
fn spawn(data: &Path) -> Proc {
    spawn_hubbub(&proc_args(data, &[]), &[])
}

/// All message ids in a room's history, paging back over HTTP; checks that
/// they come in strictly increasing cursor order.
async fn history_ids(addr: SocketAddr, cookie: &str, room: &str) -> Vec<String> {
    let mut cursors = Vec::new();
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let q = before
            .as_ref()
            .map(|b| format!("&before={b}"))
            .unwrap_or_default();
        let r = client::request(
            addr,
            "GET",
            &format!("/api/rooms/{room}/messages?limit=100{q}"),
            &[("cookie", cookie)],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let msgs = v["messages"].as_array().unwrap().clone();
        for m in msgs.iter().rev() {
            ids.push(m["id"].as_str().unwrap().to_owned());
            cursors.push(m["cursor"].as_str().unwrap().to_owned());
        }
        if !v["more"].as_bool().unwrap() || msgs.is_empty() {
            break;
        }
        before = Some(msgs[0]["cursor"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    cursors.reverse();
    // Cursors are fixed-width and sort as strings (PROTOCOL.md: history is in cursor order).
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "history not in strictly increasing cursor order: {cursors:?}"
    );
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_broadcast_message_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    let alice = client::signup_or_login(p.addr, "alice", PASSWORD)
        .await
        .unwrap();
    let mut ws = client::join(p.addr, &alice, "lobby", None, None)
        .await
        .unwrap();
    ws.expect("history", T).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..300 {
        sent.push(say(&mut ws, &format!("message {i}")).await);
    }
    // Wait until every message came back: all of them were broadcast.
    let mut echoed = HashSet::new();
    while echoed.len() < sent.len() {
        match ws.recv(T).await {
            Some(Incoming::Frame(v)) if v["type"] == "chat" => {
                echoed.insert(v["id"].as_str().unwrap().to_owned());
            }
            Some(Incoming::Frame(_)) => {}
            other => panic!("before SIGTERM: {other:?}"),
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(ws.expect_close(T).await.unwrap(), Some(1001));
    // Bounded: a server that does not exit fails the test (and is killed when `p` drops).
    let exit = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut p = p;
            p.child.wait().unwrap()
        }),
    )
    .await
    .expect("hubbub did not exit within 30 s of SIGTERM")
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let p = spawn(dir.path());
    let alice = client::signup_or_login(p.addr, "alice", PASSWORD)
        .await
        .unwrap();
    let ids = history_ids(p.addr, &alice.cookie_header(), "lobby").await;
    assert_eq!(
        ids, sent,
        "history after SIGTERM must hold every broadcast message, once, in order"
    );
}

/// Messages in the burst, and how many `saved` receipts to see before kill -9:
/// the kill lands while the rest of the burst is being sent and stored.
const BURST: usize = 800;
const KILL_AFTER_SAVED: usize = 100;
const CHUNK: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_that_was_saved() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
    let bob = client::signup_or_login(p.addr, "bob", PASSWORD)
        .await
        .unwrap();
    let mut ws = client::join(p.addr, &bob, "lobby", None, None)
        .await
        .unwrap();
    ws.expect("history", T).await.unwrap();
    let mut sent = Vec::with_capacity(BURST);
    let mut saved = HashSet::new();
    // Send the burst in chunks, reading what has arrived (without waiting)
    // after each chunk; kill -9 as soon as KILL_AFTER_SAVED are saved, with
    // up to a chunk of messages still on their way to disk.
    'burst: for i in 0..BURST {
        sent.push(say(&mut ws, &format!("durable {i}")).await);
        if (i + 1) % CHUNK != 0 {
            continue;
        }
        while let Some(m) = ws.recv(Duration::ZERO).await {
            note_saved(m, &mut saved);
            if saved.len() >= KILL_AFTER_SAVED {
                break 'burst;
            }
        }
    }
    // On a machine where the burst went out first, wait (bounded) for the receipts.
    while saved.len() < KILL_AFTER_SAVED {
        let m = ws.recv(T).await.expect("waiting for saved receipts");
        note_saved(m, &mut saved);
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    drop(p);
    eprintln!("kill -9 after {} sent, {} saved", sent.len(), saved.len());

    let p = spawn(dir.path());
    let bob = client::signup_or_login(p.addr, "bob", PASSWORD)
        .await
        .unwrap();
    let ids = history_ids(p.addr, &bob.cookie_header(), "lobby").await;
    let in_history: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        in_history.len(),
        ids.len(),
        "duplicates in history: {ids:?}"
    );
    let lost: Vec<_> = saved.iter().filter(|id| !in_history.contains(id)).collect();
    assert!(lost.is_empty(), "saved but lost after kill -9: {lost:?}");
    // Everything in history was sent, and in the order it was sent.
    let pos: Vec<usize> = ids
        .iter()
        .map(|id| {
            sent.iter()
                .position(|s| s == id)
                .unwrap_or_else(|| panic!("{id} in history was never sent"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "history is not in send order: {pos:?}"
    );
}

/// Notes a `saved` receipt; panics if the socket closed or went quiet too long.
fn note_saved(m: Incoming, saved: &mut HashSet<String>) {
    match m {
        Incoming::Frame(v) if v["type"] == "receipt" && v["status"] == "saved" => {
            saved.insert(v["id"].as_str().unwrap().to_owned());
        }
        Incoming::Frame(_) => {}
        other => panic!("waiting for receipts: {other:?}"),
    }
}
