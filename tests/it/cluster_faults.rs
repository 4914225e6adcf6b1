//! Cluster faults under load (issue 11, tests 5–8): three hubbub processes,
//! 30 clients spread over them sending their own ids and reconnecting with
//! `since`; a leader or follower killed, a leader frozen, a rolling restart,
//! a node cut off in its own network namespace. What a client got `saved`
//! or saw must be in every node's history exactly once. Times are printed
//! and bounded generously: a bound fails only when the mechanism is broken.

mod load;
mod partition;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use load::{Addrs, Load, Report};

use crate::support::*;

pub(crate) const FORM_BOUND: Duration = Duration::from_secs(30);
/// The issue asks for writes to resume within 2 s; a slow debug build on a
/// loaded machine gets more before the test calls the mechanism broken.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);
pub(crate) const CLIENTS: usize = 30;

/// The index of the leader all nodes agree on.
async fn leader_index(nodes: &[Node]) -> usize {
    let refs: Vec<&Node> = nodes.iter().collect();
    let t0 = Instant::now();
    loop {
        if let Some(l) = one_leader(&refs).await {
            return nodes.iter().position(|n| n.name == l).unwrap();
        }
        assert!(
            t0.elapsed() < FORM_BOUND,
            "no one leader within {FORM_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn log_of(n: &Node) -> serde_json::Value {
    cluster_status(n.addr()).await["log"].clone()
}

fn applied(log: &serde_json::Value) -> u64 {
    log["last_applied"].as_u64().unwrap_or(0)
}

/// Waits until node `i` applied at least what `other` had applied when asked.
async fn caught_up(nodes: &[Node], i: usize, other: usize) -> Duration {
    let target = applied(&log_of(&nodes[other]).await);
    wait_for("caught up", FORM_BOUND, || async {
        applied(&log_of(&nodes[i]).await) >= target
    })
    .await
}

/// Waits until all nodes applied the same (the load has stopped).
async fn all_applied_equal(nodes: &[Node]) {
    wait_for("every node applied the same", FORM_BOUND, || async {
        let mut a = Vec::new();
        for n in nodes {
            a.push(applied(&log_of(n).await));
        }
        a.windows(2).all(|w| w[0] == w[1])
    })
    .await;
}

/// SIGTERM, then waits (bounded) for the process to exit.
async fn terminate(n: &mut Node) {
    signal(n, libc::SIGTERM);
    let t0 = Instant::now();
    loop {
        if let Some(status) = n.proc.child.try_wait().unwrap() {
            assert!(status.success(), "{} exited with {status}", n.name);
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} ignored SIGTERM",
            n.name
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts node `i` again in its data directory, seeded with node `seed`.
fn restart(nodes: &mut [Node], i: usize, seed: usize, addrs: &Addrs) {
    let (name, dir) = (nodes[i].name.clone(), nodes[i].dir.clone());
    let seeds = [nodes[seed].cluster];
    nodes[i] = spawn_node(&name, &dir, &seeds, &[]);
    addrs.set(i, Some(nodes[i].addr()));
}

/// A formed three-node cluster, a reader account on each node, 30 clients running.
struct Run {
    nodes: Vec<Node>,
    readers: Vec<hubbub_client::Account>,
    load: Arc<Load>,
    tasks: Vec<tokio::task::JoinHandle<Report>>,
    _root: tempfile::TempDir,
}

async fn start_run() -> Run {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    start_run_on(nodes, root).await
}

/// As [`start_run`] on nodes already started (in `root`).
async fn start_run_on(nodes: Vec<Node>, root: tempfile::TempDir) -> Run {
    formed(&nodes).await;
    let addrs: Vec<_> = nodes.iter().map(Node::addr).collect();
    let mut names: Vec<String> = (0..CLIENTS).map(|i| name(&format!("c{i}"))).collect();
    names.push(name("reader"));
    let mut accts = load::accounts(&addrs, &names).await;
    let readers = accts.pop().unwrap();
    let load = Arc::new(Load {
        addrs: Addrs::new(addrs),
        saves: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        avoid: Mutex::new(Default::default()),
    });
    let tasks = load::start(&load, accts);
    // Under way: every client has had a chance to connect and send.
    load::saves_after(&load, Instant::now(), 2 * CLIENTS, FORM_BOUND).await;
    Run {
        nodes,
        readers,
        load,
        tasks,
        _root: root,
    }
}

impl Run {
    /// Stops the load; checks every node's history against what the clients
    /// saw and got saved, and that all histories are the same.
    async fn finish_and_check(self) -> Vec<Report> {
        let reports = load::finish(&self.load, self.tasks).await;
        all_applied_equal(&self.nodes).await;
        let mut first = None;
        for (n, r) in self.nodes.iter().zip(&self.readers) {
            let h = load::history(n.addr(), r).await;
            load::check(&reports, &h, &n.name);
            match &first {
                None => first = Some(h),
                Some(f) => assert!(*f == h, "{}'s history differs from n1's", n.name),
            }
        }
        let saved: usize = reports.iter().map(|r| r.saved.len()).sum();
        let reconnects: usize = reports.iter().map(|r| r.reconnects).sum();
        let unresumed: usize = reports.iter().map(|r| r.unresumed).sum();
        let repeats: usize = reports.iter().map(|r| r.repeats.len()).sum();
        println!(
            "{} messages in history, {saved} saved by {} clients, {reconnects} reconnects, \
             {unresumed} resumes not honoured ({repeats} messages seen again)",
            first.map(|f| f.len()).unwrap_or(0),
            reports.len()
        );
        reports
    }

    /// `kill -9` node `i` under load, measure how soon writes resume, start it
    /// again (same data dir) and wait until it caught up.
    async fn kill_and_restart(&mut self, i: usize, what: &str) {
        let other = (i + 1) % self.nodes.len();
        self.load.addrs.set(i, None);
        let t = Instant::now();
        self.nodes[i].kill();
        let resumed = load::saves_after(&self.load, t, CLIENTS, FAILOVER_BOUND * 3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pause = load::longest_pause(&self.load, t);
        println!(
            "{what} kill -9: longest write pause {pause:?}; {CLIENTS} saves {resumed:?} after the kill"
        );
        assert!(pause < FAILOVER_BOUND, "{what}: writes paused {pause:?}");
        restart(&mut self.nodes, i, other, &self.load.addrs);
        let t = caught_up(&self.nodes, i, other).await;
        println!("{what} restarted: caught up {t:?} after its start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_then_follower_lose_no_saved_message() {
    let mut run = start_run().await;
    let leader = leader_index(&run.nodes).await;
    run.kill_and_restart(leader, "leader").await;
    let leader = leader_index(&run.nodes).await;
    let follower = (leader + 1) % run.nodes.len();
    run.kill_and_restart(follower, "follower").await;
    load::saves_after(&run.load, Instant::now(), CLIENTS, FORM_BOUND).await;
    let reports = run.finish_and_check().await;
    assert!(
        reports.iter().any(|r| r.reconnects > 0),
        "some client moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing() {
    rolling_restart().await;
}

/// The strict form of test 8: no client is ever answered `resumed: false`,
/// so none sees a message twice even before deduplicating by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_honours_every_resume() {
    let reports = rolling_restart().await;
    let unresumed: Vec<_> = reports
        .iter()
        .filter(|r| r.unresumed > 0)
        .map(|r| (&r.name, r.unresumed, r.repeats.len()))
        .collect();
    assert!(
        unresumed.is_empty(),
        "(client, unhonoured resumes, repeats): {unresumed:?}"
    );
}

/// SIGTERM and restart each node in turn under load; checks and returns the reports.
async fn rolling_restart() -> Vec<Report> {
    let mut run = start_run().await;
    let t0 = Instant::now();
    for i in 0..run.nodes.len() {
        let other = (i + 1) % run.nodes.len();
        run.load.addrs.set(i, None);
        terminate(&mut run.nodes[i]).await;
        restart(&mut run.nodes, i, other, &run.load.addrs);
        formed(&run.nodes).await;
        caught_up(&run.nodes, i, other).await;
        load::saves_after(&run.load, Instant::now(), CLIENTS, FORM_BOUND).await;
    }
    let pause = load::longest_pause(&run.load, t0);
    println!(
        "rolling restart: longest write pause {pause:?} over {:?}",
        t0.elapsed()
    );
    let reports = run.finish_and_check().await;
    assert!(
        reports.iter().any(|r| r.reconnects > 0),
        "some client moved"
    );
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_delivers_nothing_uncommitted_and_steps_down() {
    let run = start_run().await;
    let leader = leader_index(&run.nodes).await;
    let before = log_of(&run.nodes[leader]).await;
    let term = before["term"].as_u64().unwrap();
    signal(&run.nodes[leader], libc::SIGSTOP);
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cont = Instant::now();
    signal(&run.nodes[leader], libc::SIGCONT);
    let resumed = stopped.elapsed();
    // The others elect a leader about 1 s into the freeze and their writes
    // go there: saved while the old leader is still frozen.
    let during = load::saves_between(&run.load, stopped, cont, |_| true);
    println!("frozen leader: {during} messages saved during the {resumed:?} freeze");
    assert!(during > 0, "no write saved while the old leader was frozen");
    let n = &run.nodes[leader];
    let t = wait_for("the old leader steps down", FORM_BOUND, || async {
        let log = log_of(n).await;
        log["role"] != "leader" && log["term"].as_u64().unwrap() > term
    })
    .await;
    println!(
        "frozen leader {}: stepped down {t:?} after SIGCONT ({resumed:?} frozen)",
        n.name
    );
    let log = log_of(n).await;
    assert_ne!(log["leader"], n.name.as_str(), "{log}");
    load::saves_after(&run.load, Instant::now(), CLIENTS, FORM_BOUND).await;
    let pause = load::longest_pause(&run.load, stopped);
    println!("frozen leader: longest write pause {pause:?} from the SIGSTOP");
    // `check` holds every id any client saw (those on the frozen node
    // included) against the majority's history: nothing uncommitted shown.
    let reports = run.finish_and_check().await;
    let on_it: usize = reports
        .iter()
        .map(|r| r.seen_on.iter().filter(|(i, _)| *i == leader).count())
        .sum();
    println!("clients saw {on_it} messages on the frozen leader, all in every history");
    // A new leader was elected about 1 s into the freeze: the writes taken by
    // the other nodes go there, not `unavailable` after waiting out the
    // frozen one (the write deadline, 5 s, is longer than the election).
    let refused: Vec<_> = reports
        .iter()
        .flat_map(|r| r.errors.iter().filter(|(i, _)| *i != leader))
        .collect();
    assert!(refused.is_empty(), "errors on the live nodes: {refused:?}");
}

/// A SIGTERMed leader hands leadership over while it drains: when its
/// process has exited, the others already follow a new leader at a later
/// term. Without the hand-over they would name the old leader until their
/// election timeout passed (it heartbeats until its log shuts down, just
/// before it exits), and writes would pause for that election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_over_before_it_exits() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &[]);
    // Stopped as soon as it leads: the hand-over must then wait out the
    // lease of its own election (within it, it refuses every candidate).
    let leader = leader_index(&nodes).await;
    let term = log_of(&nodes[leader]).await["term"].as_u64().unwrap();
    let old = nodes[leader].name.clone();
    let t0 = Instant::now();
    terminate(&mut nodes[leader]).await;
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != leader) {
        // The new leader's first heartbeat may still be on its way to this
        // node: a moment's grace, far below the election the old leader's
        // heartbeats (until just before it exits) would otherwise delay.
        let grace = Instant::now() + Duration::from_millis(300);
        let log = loop {
            let log = log_of(n).await;
            let moved = log["leader"].is_string() && log["leader"] != old.as_str();
            if moved || Instant::now() > grace {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            log["leader"].is_string() && log["leader"] != old.as_str(),
            "node {i} 0.3 s after {old} exited: {log}"
        );
        // Exactly one election: the one asked for. A candidate refused
        // (the old leader within its own lease) would have cost a term more.
        assert_eq!(log["term"].as_u64().unwrap(), term + 1, "{log}");
    }
    println!(
        "{old} handed over and exited {:?} after SIGTERM",
        t0.elapsed()
    );
}

/// A join at `at` with `since` = the cursor of a message saved there.
async fn resume_at(nodes: &[Node], at: usize) -> (hubbub_client::Account, String) {
    let addr = nodes[at].addr();
    let acct = user_at(addr, &name("resumer")).await;
    let mut ws = join_at(addr, &acct, "lobby").await;
    let first = say_saved(&mut ws, "first").await;
    (acct, first["cursor"].as_str().unwrap().to_owned())
}

/// A resume during an election waits for the new leader's read index
/// (the frozen one never answers) and is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_the_leader_is_frozen_waits_for_the_next_one() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let leader = leader_index(&nodes).await;
    let at = (leader + 1) % nodes.len();
    let (acct, cursor) = resume_at(&nodes, at).await;
    signal(&nodes[leader], libc::SIGSTOP);
    let t0 = Instant::now();
    let mut ws = hubbub_client::join_here(nodes[at].addr(), &acct, "lobby", None, Some(&cursor))
        .await
        .unwrap();
    let welcome = ws.expect("welcome", FORM_BOUND).await;
    signal(&nodes[leader], libc::SIGCONT);
    let welcome = welcome.unwrap();
    println!(
        "resume during an election: welcome after {:?}",
        t0.elapsed()
    );
    assert_eq!(welcome["resumed"], true, "{welcome}");
}

/// A resume on a node that cannot catch up (both peers frozen, the leader
/// among them, so no leader; it still serves for its first 3 s) is closed
/// with 1001 before `welcome`: the client comes back later or elsewhere
/// with its `since`. The node asked is a follower, chosen after the leader
/// is known: with a fixed node, an election under load could make it the
/// leader, and whether a leader whose peers just froze still answers its own
/// read index is openraft's lease logic, not what this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_cannot_catch_up_is_closed_before_welcome() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let leader = leader_index(&nodes).await;
    let at = (leader + 1) % nodes.len();
    let (acct, cursor) = resume_at(&nodes, at).await;
    let peers: Vec<&Node> = (0..nodes.len())
        .filter(|&i| i != at)
        .map(|i| &nodes[i])
        .collect();
    for p in &peers {
        signal(p, libc::SIGSTOP);
    }
    let ws = hubbub_client::join_here(nodes[at].addr(), &acct, "lobby", None, Some(&cursor)).await;
    let first = match ws {
        Ok(mut ws) => ws.recv(FORM_BOUND).await,
        Err(e) => panic!("the upgrade within 3 s of losing the majority: {e}"),
    };
    for p in &peers {
        signal(p, libc::SIGCONT);
    }
    match first {
        Some(hubbub_client::Incoming::Closed(code)) => assert_eq!(code, Some(1001)),
        other => panic!("expected a close before anything: {other:?}"),
    }
}
