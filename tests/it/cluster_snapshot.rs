//! Issue 11, test 10: a node down while 100 000 messages are written (the
//! log compacted meanwhile) catches up by snapshot and serves identical
//! history; later messages reach it through the log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hubbub_client::{self as client, Account, Incoming};
use serde_json::{Value, json};

use crate::support::*;

/// The messages written while the node is down.
const MESSAGES: usize = 100_000;
/// Senders (each in a room of its own: no fan-out to read) and the sends
/// each keeps in flight (the fast path a benchmark takes).
const SENDERS: usize = 8;
const WINDOW: usize = 64;
/// A small interval, so the 100 000 messages (a few thousand entries) make
/// several snapshots and the log is compacted well past the dead node.
const SNAPSHOT_EVERY: &str = "200";
const BOUND: Duration = Duration::from_secs(300);

fn flags() -> Vec<&'static str> {
    vec![
        "--snapshot-every",
        SNAPSHOT_EVERY,
        // The senders go as fast as the log commits.
        "--msgs-per-sec",
        "1000000",
        "--burst",
        "1000000",
    ]
}

fn room(i: usize) -> String {
    format!("snap{i}")
}

/// Sends `n` messages into `room` at `addr`, `WINDOW` in flight, each
/// resent with its id until `saved`.
async fn send_all(addr: SocketAddr, acct: Account, room: String, n: usize) -> usize {
    let mut ws = join_at(addr, &acct, &room).await;
    let mut pending: HashMap<String, Value> = HashMap::new();
    let (mut sent, mut saved) = (0usize, 0usize);
    let t0 = Instant::now();
    while saved < n {
        assert!(t0.elapsed() < BOUND, "{room}: {saved} of {n} saved");
        while pending.len() < WINDOW && sent < n {
            sent += 1;
            let id = uuid::Uuid::new_v4().to_string();
            let f = json!({"type": "chat", "id": id, "room": room, "content": format!("m{sent}")});
            ws.send_json(&f).await.unwrap();
            pending.insert(id, f);
        }
        match ws.recv(Duration::from_secs(30)).await {
            Some(Incoming::Frame(f)) => match f["type"].as_str() {
                Some("receipt") if f["status"] == "saved" => {
                    let id = f["id"].as_str().unwrap_or("");
                    saved += usize::from(pending.remove(id).is_some());
                }
                Some("error") => {
                    // Busy for a moment: the same id again later.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(again) = f["id"].as_str().and_then(|id| pending.get(id)) {
                        ws.send_json(again).await.unwrap();
                    }
                }
                _ => {}
            },
            other => panic!("{room}: the socket ended: {other:?}"),
        }
    }
    saved
}

async fn log_of(n: &Node) -> Value {
    cluster_status(n.addr()).await["log"].clone()
}

/// A counter's value in the node's `/metrics` (0 when absent).
async fn metric(n: &Node, name: &str) -> f64 {
    let r = client::request(n.addr(), "GET", "/metrics", &[], None)
        .await
        .unwrap();
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_during_100k_messages_catches_up_by_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &flags());
    let leader = formed(&nodes).await;
    let victim = nodes.iter().position(|n| n.name != leader).unwrap();
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let reader = user_at(nodes[live[0]].addr(), &name("reader")).await;
    let mut accts = Vec::new();
    for i in 0..SENDERS {
        accts.push(user_at(nodes[live[i % 2]].addr(), &name(&format!("s{i}"))).await);
    }
    let down_at = log_of(&nodes[victim]).await["last_applied"]
        .as_u64()
        .unwrap_or(0);
    nodes[victim].kill();

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, acct) in accts.into_iter().enumerate() {
        let addr = nodes[live[i % 2]].addr();
        tasks.push(tokio::spawn(send_all(
            addr,
            acct,
            room(i),
            MESSAGES / SENDERS,
        )));
    }
    let mut saved = 0;
    for t in tasks {
        saved += t.await.unwrap();
    }
    assert_eq!(saved, MESSAGES);
    let wrote = t0.elapsed();

    // The survivors compacted their logs past where the dead node stopped.
    for &i in &live {
        let n = &nodes[i];
        wait_for("compacted", BOUND, || async {
            log_of(n).await["last_purged"].as_u64().unwrap_or(0) > down_at
        })
        .await;
        assert!(metric(n, "hubbub_log_snapshots_built_total").await >= 1.0);
    }
    let log = log_of(&nodes[live[0]]).await;
    let lead = &nodes[live[0]];
    eprintln!(
        "{MESSAGES} messages saved in {wrote:?} ({} entries, log from {}; the dead node stopped at {down_at}); \
         {} snapshots built, the last {} bytes, applies paused {} s for it",
        log["last_log_index"],
        log["last_purged"],
        metric(lead, "hubbub_log_snapshots_built_total").await,
        metric(lead, "hubbub_log_snapshot_bytes").await,
        metric(lead, "hubbub_log_snapshot_pause_seconds").await,
    );

    // Back: it cannot catch up from the log, only by snapshot.
    let (name_v, dir_v) = (nodes[victim].name.clone(), nodes[victim].dir.clone());
    let t1 = Instant::now();
    nodes[victim] = spawn_node(&name_v, &dir_v, &[nodes[live[0]].cluster], &flags());
    let target = log_of(&nodes[live[0]]).await["last_applied"]
        .as_u64()
        .unwrap();
    let v = &nodes[victim];
    wait_for("the restarted node caught up", BOUND, || async {
        log_of(v).await["last_applied"].as_u64().unwrap_or(0) >= target
    })
    .await;
    eprintln!("caught up by snapshot {:?} after the restart", t1.elapsed());
    assert_eq!(
        metric(v, "hubbub_log_snapshots_installed_total").await,
        1.0,
        "caught up by one snapshot"
    );
    assert!(metric(v, "hubbub_log_snapshot_bytes").await > 0.0);

    // Identical history on every node, room by room (ids and cursors).
    for i in 0..SENDERS {
        let want = room_history(nodes[live[0]].addr(), &reader, &room(i)).await;
        assert_eq!(want.len(), MESSAGES / SENDERS, "{}", room(i));
        for n in &nodes {
            let got = room_history(n.addr(), &reader, &room(i)).await;
            assert!(got == want, "{} on {} differs", room(i), n.name);
        }
    }

    // Later messages reach it through the log, sent at the node itself.
    let late = user_at(nodes[victim].addr(), &name("late")).await;
    let more = send_all(nodes[victim].addr(), late, room(0), 5).await;
    assert_eq!(more, 5);
    let want = room_history(nodes[live[0]].addr(), &reader, &room(0)).await;
    assert_eq!(want.len(), MESSAGES / SENDERS + 5);
    let target = log_of(&nodes[live[0]]).await["last_applied"]
        .as_u64()
        .unwrap();
    for n in &nodes {
        wait_for("the late messages everywhere", BOUND, || async {
            log_of(n).await["last_applied"].as_u64().unwrap_or(0) >= target
        })
        .await;
        assert!(
            room_history(n.addr(), &reader, &room(0)).await == want,
            "{}",
            n.name
        );
    }
    assert_eq!(
        metric(&nodes[victim], "hubbub_log_snapshots_installed_total").await,
        1.0,
        "the late messages came through the log"
    );

    // kill -9 after the install: it comes back from its own store and
    // snapshot (no new install) with the same history.
    nodes[victim].kill();
    nodes[victim] = spawn_node(&name_v, &dir_v, &[nodes[live[0]].cluster], &flags());
    let target = log_of(&nodes[live[0]]).await["last_applied"]
        .as_u64()
        .unwrap();
    let v = &nodes[victim];
    wait_for("back after the install", BOUND, || async {
        log_of(v).await["last_applied"].as_u64().unwrap_or(0) >= target
    })
    .await;
    assert!(room_history(v.addr(), &reader, &room(0)).await == want);
    assert_eq!(
        metric(v, "hubbub_log_snapshots_installed_total").await,
        0.0,
        "its own state survived the restart"
    );
}
