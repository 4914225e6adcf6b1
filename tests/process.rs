//! The real binary as a process: SIGTERM drains everything that was broadcast;
//! `kill -9` loses nothing that got its `saved` receipt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hubbub::client::{self, Incoming};

struct Proc {
    child: Child,
    addr: SocketAddr,
}

fn spawn(data: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(base_args(data).iter().skip(1))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    Proc { child, addr }
}

/// All message ids in a room's history, paging back over HTTP.
async fn history_ids(addr: SocketAddr, cookie: &str, room: &str) -> Vec<String> {
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
        }
        if !v["more"].as_bool().unwrap() || msgs.is_empty() {
            break;
        }
        before = Some(msgs[0]["cursor"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_broadcast_message_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
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
    let exit = tokio::task::spawn_blocking(move || p.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let mut p = spawn(dir.path());
    let alice = client::signup_or_login(p.addr, "alice", PASSWORD)
        .await
        .unwrap();
    let ids = history_ids(p.addr, &alice.cookie_header(), "lobby").await;
    assert_eq!(
        ids, sent,
        "history after SIGTERM must hold every broadcast message, once, in order"
    );
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

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
    let mut saved = HashSet::new();
    for i in 0..200 {
        say(&mut ws, &format!("durable {i}")).await;
        if i % 50 == 49 {
            // Let some receipts arrive between bursts.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Collect saved receipts until 150 are in, then kill at once.
    while saved.len() < 150 {
        match ws.recv(T).await {
            Some(Incoming::Frame(v)) if v["type"] == "receipt" && v["status"] == "saved" => {
                saved.insert(v["id"].as_str().unwrap().to_owned());
            }
            Some(Incoming::Frame(_)) => {}
            other => panic!("waiting for receipts: {other:?}"),
        }
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let mut p = spawn(dir.path());
    let bob = client::signup_or_login(p.addr, "bob", PASSWORD)
        .await
        .unwrap();
    let ids: HashSet<String> = history_ids(p.addr, &bob.cookie_header(), "lobby")
        .await
        .into_iter()
        .collect();
    let lost: Vec<_> = saved.difference(&ids).collect();
    assert!(lost.is_empty(), "saved but lost after kill -9: {lost:?}");
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
