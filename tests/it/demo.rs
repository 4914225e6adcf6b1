//! `hubbub cluster-demo` as a person runs it: a child process that starts
//! three nodes, prints their URLs, and stops them all on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubbub_client::{self as client, Endpoint};
use serde_json::Value;

use crate::support::wait_for;

/// Generous: a debug build on a loaded 2-core machine starting three nodes.
const START: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(60);
/// The demo's own bound per node is 30 s; this one covers all three.
const STOP: Duration = Duration::from_secs(90);

/// The demo and, once known, its nodes: all killed when dropped (a failing
/// test leaves nothing running).
struct Demo {
    child: Child,
    nodes: Vec<i32>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for &pid in &self.nodes {
            if alive(pid) {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` exists (and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Reads the demo's stdout until `n` lines came (or it ends); the rest is
/// read and dropped so the demo never blocks on a full pipe.
fn first_lines(child: &mut Child, n: usize) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => panic!("the demo printed {got:?}, not {n} lines, within {START:?}"),
        }
    }
    got
}

/// `/api/admin/cluster` at `ep`; `Null` when it does not answer 200.
async fn cluster(ep: &Endpoint, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let h = [("authorization", auth.as_str())];
    match client::request(ep, "GET", "/api/admin/cluster", &h, None).await {
        Ok(r) if r.status == 200 => serde_json::from_str(&r.body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// `live` live members and a leader in `ep`'s view of the cluster.
async fn formed(ep: &Endpoint, token: &str, live: usize) -> bool {
    let v = cluster(ep, token).await;
    let n = v["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["live"] == true).count());
    n == live && v["log"]["leader"].is_string()
}

/// Starts the demo in `dir` with kernel-chosen ports.
fn spawn_demo(dir: &std::path::Path, stderr: Stdio) -> Demo {
    let child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["cluster-demo", "--base-port", "0", "--dir"])
        .arg(dir)
        // The nodes inherit it: their logs say when a shutdown completed.
        .env("RUST_LOG", "warn,hubbub::server=info")
        .env_remove("CAROOT")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Demo {
        child,
        nodes: Vec::new(),
    }
}

#[test]
fn a_node_failing_at_start_stops_the_demo_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    // node2's data directory cannot be made: a file is in its place.
    std::fs::write(dir.path().join("node2"), "in the way").unwrap();
    let mut demo = spawn_demo(dir.path(), Stdio::piped());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < START, "the demo still runs after {START:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut demo.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("node2 exited"), "{err}");
    assert!(
        err.contains("Error: creating"),
        "the node's own error, from its log: {err}"
    );
    assert!(children_of(demo.child.id()).is_empty());
    // node1 had started: it was stopped in order, not left running.
    let log = std::fs::read_to_string(dir.path().join("node1.log")).unwrap();
    assert!(log.contains("shutdown complete"), "node1:\n{log}");
}

/// Starts the demo and waits until its three nodes answer `/readyz` 200
/// over TLS (trusting the demo's CA) and node 1 sees three live members and
/// a leader; the endpoints of node 1, 2, 3 and the admin token.
async fn start_formed(dir: &std::path::Path) -> (Demo, Vec<Endpoint>, String) {
    let mut demo = spawn_demo(dir, Stdio::inherit());
    let lines = first_lines(&mut demo.child, 3);
    demo.nodes = children_of(demo.child.id());
    assert_eq!(demo.nodes.len(), 3, "node processes: {:?}", demo.nodes);
    let ca = dir.join("certs/ca.pem");
    let mut eps = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let (name, url) = line.split_once(' ').unwrap();
        assert_eq!(name, format!("node{}", i + 1), "{line}");
        let addr: SocketAddr = url.strip_prefix("https://").unwrap().parse().unwrap();
        eps.push(Endpoint::tls(addr, &ca).unwrap());
    }
    for ep in &eps {
        wait_for("/readyz 200 over TLS", READY, || async {
            client::request(ep, "GET", "/readyz", &[], None)
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
    }
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    let token = token.trim().to_owned();
    wait_for("three live members and a leader", READY, || {
        formed(&eps[0], &token, 3)
    })
    .await;
    (demo, eps, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_demo_runs_three_nodes_and_stops_them_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (mut demo, eps, _token) = start_formed(dir.path()).await;
    let signup = |ep: Endpoint| async move {
        let body = r#"{"username":"alice","password":"correct horse battery"}"#;
        client::request(&ep, "POST", "/api/auth/signup", &[], Some(body))
            .await
            .unwrap()
            .status
    };
    assert_eq!(signup(eps[0].clone()).await, 201);
    let secret = std::fs::read(dir.path().join("cluster-secret")).unwrap();
    for f in ["admin-token", "cluster-secret"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    stop_and_check(&mut demo);
    // Each node ran its ordered shutdown (SIGTERM), not killed.
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node{i}.log"))).unwrap();
        assert!(log.contains("shutdown complete"), "node{i}:\n{log}");
    }
    // A second run in the same directory: the same secret, and the cluster
    // comes back with its data (alice's name is still taken).
    let (mut demo, eps, _token) = start_formed(dir.path()).await;
    assert_eq!(
        std::fs::read(dir.path().join("cluster-secret")).unwrap(),
        secret
    );
    assert_eq!(signup(eps[0].clone()).await, 409);
    stop_and_check(&mut demo);
}

/// The README's walk-through: `kill -9` the leader; the demo keeps the two
/// others running, they elect a new leader, and Ctrl-C still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_the_leader_the_other_two_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut demo, eps, token) = start_formed(dir.path()).await;
    let leader = cluster(&eps[0], &token).await["log"]["leader"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = *demo
        .nodes
        .iter()
        .find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--node-id" && w[1] == leader.as_bytes())
        })
        .unwrap();
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let n: usize = leader.trim_start_matches("node").parse().unwrap();
    let other = &eps[if n == 1 { 1 } else { 0 }];
    wait_for("a new leader among the two left", READY, || async {
        let v = cluster(other, &token).await;
        v["log"]["leader"].as_str().is_some_and(|l| l != leader)
    })
    .await;
    assert!(
        demo.child.try_wait().unwrap().is_none(),
        "the demo carries on"
    );
    demo.nodes.retain(|p| *p != pid);
    stop_and_check(&mut demo);
}

/// SIGINT, as Ctrl-C: the demo exits 0 within `STOP` and no node is left.
fn stop_and_check(demo: &mut Demo) {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGINT) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < STOP,
            "the demo still runs {STOP:?} after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the demo exited with {status}");
    let left: Vec<i32> = demo.nodes.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "nodes still running: {left:?}");
}
