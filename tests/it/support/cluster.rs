//! A cluster of hubbub processes on loopback: each node a child process with
//! its own data directory, its HTTP and cluster ports chosen by the kernel
//! (port 0), seeded from nodes already running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hubbub_client as client;
use serde_json::Value;

use super::process::{Proc, proc_args, spawn_hubbub_until};
use super::server::{PASSWORD, T};

/// The cluster secret of the node whose data directory is `dir`: one per
/// test, derived from the test's own temporary directory (the parent of its
/// nodes' directories). Two tests running at once must never share one: a
/// port a killed node of one test used may be handed to a node of another,
/// and nodes that share a secret are one cluster (same names, same keys), so
/// the survivors of the first would gossip and replicate into the second.
pub fn cluster_secret(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.parent().unwrap_or(dir).hash(&mut h);
    format!("cluster-secret-for-tests-{:016x}-0123456789", h.finish())
}
/// The admin token of every test node.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// One node: the process, its name and data directory, its cluster address.
pub struct Node {
    pub proc: Proc,
    pub name: String,
    pub dir: PathBuf,
    pub cluster: SocketAddr,
    pub generation: u64,
    /// Its `--ring-exclude`, if it was started with one.
    pub ring_exclude: Option<String>,
}

impl Node {
    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.proc.addr
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.proc.child.kill().unwrap();
        self.proc.child.wait().unwrap();
    }
}

/// Starts node `name` in `dir` (created when missing), gossiping with
/// `seeds`; `extra` flags replace the defaults (`--cluster-secret` included).
pub fn spawn_node(name: &str, dir: &Path, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let seeds = seeds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut flags: Vec<&str> = vec![
        "--node-id",
        name,
        "--cluster-listen",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN_TOKEN,
        // Below the machine's descriptor limit: no warning in every test's output.
        "--max-connections",
        "2000",
        "--max-http-connections",
        "1000",
    ];
    let secret = cluster_secret(dir);
    if !extra.contains(&"--cluster-secret") {
        flags.extend(["--cluster-secret", &secret]);
    }
    if !seeds.is_empty() {
        flags.extend(["--seeds", &seeds]);
    }
    flags.extend(extra);
    // openraft logs a peer that is down at ERROR every 500 ms.
    let log = [("RUST_LOG", Path::new("warn,openraft=off"))];
    let (proc, lines) = spawn_hubbub_until(&proc_args(dir, &flags), &log, "hubbub cluster on ");
    let (cluster, generation) = cluster_line(lines.last().unwrap());
    Node {
        proc,
        name: name.to_owned(),
        dir: dir.to_owned(),
        cluster,
        generation,
        ring_exclude: extra
            .windows(2)
            .find(|w| w[0] == "--ring-exclude")
            .map(|w| w[1].to_owned()),
    }
}

/// The cluster address and generation in the line a node prints:
/// "hubbub cluster on ADDR (node NAME, generation G)".
pub fn cluster_line(line: &str) -> (SocketAddr, u64) {
    let cluster = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let generation = line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    (cluster, generation)
}

/// `n` nodes named `n1`…, each seeded with the first; in `root`.
pub fn spawn_cluster(root: &Path, n: usize, extra: &[&str]) -> Vec<Node> {
    let first = spawn_node("n1", &root.join("n1"), &[], extra);
    let seed = [first.cluster];
    let mut nodes = vec![first];
    for i in 2..=n {
        let name = format!("n{i}");
        nodes.push(spawn_node(&name, &root.join(&name), &seed, extra));
    }
    nodes
}

/// Signs `name` up (or in) at the node at `addr`.
pub async fn user_at(addr: SocketAddr, name: &str) -> client::Account {
    client::signup_or_login(addr, name, PASSWORD).await.unwrap()
}

/// Joins `room` at the node at `addr`, wherever the user's home is (see
/// `client::join_here`); waits for `welcome` and `history`.
pub async fn join_at(addr: SocketAddr, acct: &client::Account, room: &str) -> client::WsClient {
    let mut ws = client::join_here(addr, acct, room, None, None)
        .await
        .unwrap();
    ws.expect("welcome", T).await.unwrap();
    ws.expect("history", T).await.unwrap();
    ws
}

/// Like [`join_at`], with a chosen client id (many sessions of one user).
pub async fn join_at_as(
    addr: SocketAddr,
    acct: &client::Account,
    room: &str,
    client_id: &str,
) -> client::WsClient {
    let mut ws = client::join_here(addr, acct, room, Some(client_id), None)
        .await
        .unwrap();
    ws.expect("welcome", T).await.unwrap();
    ws.expect("history", T).await.unwrap();
    ws
}

/// `GET /api/admin/cluster` at `addr`.
pub async fn cluster_status(addr: SocketAddr) -> Value {
    let r = admin_request(addr, "GET", "/api/admin/cluster").await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The member `node` as `addr` sees it, if known.
pub async fn member(addr: SocketAddr, node: &str) -> Option<Value> {
    cluster_status(addr).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == node)
        .cloned()
}

/// Polls `check` every 20 ms until it holds; returns how long that took.
/// Panics after `limit` with `what`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

/// True when every node's log knows the same leader.
pub async fn one_leader(nodes: &[&Node]) -> Option<String> {
    let mut leader = None;
    for n in nodes {
        let l = cluster_status(n.addr()).await["log"]["leader"]
            .as_str()?
            .to_owned();
        if leader.get_or_insert_with(|| l.clone()) != &l {
            return None;
        }
    }
    leader
}

/// True when every node in `nodes` sees all of `names` live and ready.
pub async fn all_ready(nodes: &[&Node], names: &[&str]) -> bool {
    for n in nodes {
        for name in names {
            match member(n.addr(), name).await {
                Some(m) if m["live"] == true && m["state"] == "ready" => {}
                _ => return false,
            }
        }
    }
    true
}

/// The log's leader once every node agrees on one.
pub async fn wait_for_leader(nodes: &[&Node]) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(l) = one_leader(nodes).await {
            return l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `sig` (`libc::SIGSTOP`, …) to a node's process.
pub fn signal(n: &Node, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(n.proc.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; it is not reaped yet (we hold
    // its `Child` and wait only after killing it), so the pid is still ours.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Waits until every node sees every other live and ready, every node's
/// ring of homes has them all, and all agree on one leader; returns its name.
pub async fn formed(nodes: &[Node]) -> String {
    let refs: Vec<&Node> = nodes.iter().collect();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    wait_for("formed", Duration::from_secs(30), || {
        all_ready(&refs, &names)
    })
    .await;
    wait_for("every ring has every node", Duration::from_secs(30), || {
        rings_have(&refs, &names)
    })
    .await;
    wait_for_leader(&refs).await
}

/// True when every node's ring of homes has all of `names` (a node started
/// with `--ring-exclude` leaves that one out, and is not asked about it).
pub async fn rings_have(nodes: &[&Node], names: &[&str]) -> bool {
    for n in nodes {
        let status = cluster_status(n.addr()).await;
        let ring: Vec<&str> = status["ring"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !names
            .iter()
            .all(|m| ring.contains(m) || n.ring_exclude.as_deref() == Some(*m))
        {
            return false;
        }
    }
    true
}

/// `(id, cursor)` of every message of a history page (`{"messages": […]}`).
pub fn ids_and_cursors(page: &Value) -> Vec<(String, String)> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["cursor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A request with the admin token to the node at `addr`.
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> client::HttpResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    client::request(addr, method, path, &[("authorization", &auth)], None)
        .await
        .unwrap()
}

/// Reads until the socket closes (within 30 s); its close code.
pub async fn closed_code(ws: &mut client::WsClient) -> Option<u16> {
    loop {
        match ws.recv(Duration::from_secs(30)).await {
            Some(client::Incoming::Closed(code)) => return code,
            Some(client::Incoming::Frame(_)) => continue,
            None => panic!("the socket stayed open"),
        }
    }
}

/// Every message of `room` as the node at `addr` serves it, oldest first.
pub async fn room_history(
    addr: SocketAddr,
    acct: &client::Account,
    room: &str,
) -> Vec<(String, String)> {
    let mut all: Vec<Vec<(String, String)>> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            None => format!("/api/rooms/{room}/messages?limit=100"),
            Some(b) => format!("/api/rooms/{room}/messages?limit=100&before={b}"),
        };
        let cookie = acct.cookie_header();
        let r = client::request(addr, "GET", &path, &[("cookie", &cookie)], None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let page = ids_and_cursors(&v);
        before = page.first().map(|p| p.1.clone());
        let more = v["more"] == true;
        all.push(page);
        if !more || before.is_none() {
            return all.into_iter().rev().flatten().collect();
        }
    }
}
