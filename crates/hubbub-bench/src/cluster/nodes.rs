//! The processes of a cluster bench: three `hubbub` nodes (or one, the
//! baseline) in temp dirs on loopback, each on kernel-chosen ports, plus the
//! admin and metrics reads the fault scenarios poll.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hubbub_client::Endpoint;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::Args;
use crate::net;

/// The cluster secret of every bench node (at least 32 bytes).
const SECRET: &str = "hubbub-bench-cluster-secret-0123456789abcdef";
/// The admin token of every bench node.
pub const ADMIN_TOKEN: &str = "hubbub-bench-admin-token-0123456789";
/// How long a node may take to print its addresses.
const START: Duration = Duration::from_secs(60);

/// One running `hubbub` process.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    /// The cluster address (`None` for the single-node baseline).
    pub cluster: Option<SocketAddr>,
    child: Option<Child>,
}

impl Node {
    pub fn ep(&self) -> Endpoint {
        Endpoint::from(self.http)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `kill -9`, then reaps the child.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM without waiting: the node drains; [`Node::stop`] reaps it.
    pub fn term(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child by its PID.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// SIGTERM, SIGKILL after 20 s.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: signalling our own child by its PID.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

/// The root holding every node's data dir; removed on drop unless it came
/// from --data-dir (kept, as for the other scenarios).
pub struct Root(pub PathBuf, bool);

impl Root {
    pub fn new(args: &Args) -> anyhow::Result<Root> {
        let d = args.data_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("hubbub-bench-cluster-{}", net::run_id()))
        });
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(Root(d, args.data_dir.is_some()))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts node `name` in `root/name`; cluster mode when `seeds` is `Some`.
pub async fn spawn(
    args: &Args,
    bin: &Path,
    root: &Path,
    name: &str,
    seeds: Option<&[SocketAddr]>,
) -> anyhow::Result<Node> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // openraft logs a down peer at ERROR every 500 ms: the fault scenarios make many.
    let mut cmd = net::server_command(bin, &dir, false, "warn,openraft=off", libc::SIGKILL);
    cmd.args(["--admin-token", ADMIN_TOKEN])
        .args(&args.server_arg);
    if let Some(seeds) = seeds {
        cmd.args(["--cluster-listen", "127.0.0.1:0", "--node-id", name])
            .args(["--cluster-secret", SECRET]);
        if !seeds.is_empty() {
            let s: Vec<String> = seeds.iter().map(ToString::to_string).collect();
            cmd.args(["--seeds", &s.join(",")]);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (http, cluster) = read_addrs(stdout, name, seeds.is_some()).await?;
    let http = http.ok_or_else(|| anyhow!("{name}: no HTTP address printed"))?;
    Ok(Node {
        name: name.into(),
        http,
        cluster,
        child: Some(child),
    })
}

/// Reads a starting node's stdout up to its addresses (HTTP, and the cluster
/// address in cluster mode), then keeps draining it in the background.
async fn read_addrs(
    stdout: tokio::process::ChildStdout,
    name: &str,
    want_cluster: bool,
) -> anyhow::Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    let mut lines = BufReader::new(stdout).lines();
    let addrs = tokio::time::timeout(START, async {
        let mut http = None;
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let a = a.split_whitespace().next().unwrap_or("");
                http = Some(a.trim_end_matches('/').parse::<SocketAddr>()?);
                if !want_cluster {
                    return anyhow::Ok((http, None));
                }
            }
            // "hubbub cluster on ADDR (node NAME, generation G)"
            if let Some(a) = line.split("hubbub cluster on ").nth(1) {
                let a = a.split_whitespace().next().unwrap_or("");
                return Ok((http, Some(a.parse::<SocketAddr>()?)));
            }
        }
        bail!("{name} exited before listening")
    })
    .await
    .with_context(|| format!("waiting for {name} to listen"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(addrs)
}

/// The hubbub binary: --server-bin, else next to this binary, else target/release.
pub fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.server_bin {
        return Ok(b.clone());
    }
    let beside = std::env::current_exe()?.with_file_name("hubbub");
    for c in [beside, PathBuf::from("target/release/hubbub")] {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("no hubbub binary found; build it (cargo build --release) or pass --server-bin")
}

/// Three nodes n1..n3, n2 and n3 seeded with n1; returns once all three see
/// each other live and ready and agree on a leader.
pub async fn spawn_three(args: &Args, bin: &Path, root: &Path) -> anyhow::Result<Vec<Node>> {
    let n1 = spawn(args, bin, root, "n1", Some(&[])).await?;
    let seed: Vec<SocketAddr> = n1.cluster.into_iter().collect();
    let mut nodes = vec![n1];
    for name in ["n2", "n3"] {
        nodes.push(spawn(args, bin, root, name, Some(&seed)).await?);
    }
    let t0 = Instant::now();
    let all: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    wait_formed(&all).await?;
    eprintln!(
        "cluster formed {:.1}s after the third start: {}",
        t0.elapsed().as_secs_f64(),
        nodes
            .iter()
            .map(|n| format!("{} http {} pid {}", n.name, n.http, n.pid().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(nodes)
}

/// Waits (60 s at most) until every node in `addrs` sees three members live
/// and ready and they all name the same leader.
pub async fn wait_formed(addrs: &[SocketAddr]) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Some(l) = formed(addrs).await {
            return Ok(l);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the cluster did not form within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn formed(addrs: &[SocketAddr]) -> Option<String> {
    let mut leader: Option<String> = None;
    for a in addrs {
        let s = status(*a).await.ok()?;
        let members = s["members"].as_array()?;
        let ready = members
            .iter()
            .filter(|m| m["live"] == true && m["state"] == "ready")
            .count();
        let l = s["log"]["leader"].as_str()?.to_owned();
        if ready < 3 || leader.get_or_insert_with(|| l.clone()) != &l {
            return None;
        }
    }
    leader
}

/// `GET /api/admin/cluster` at `addr`.
pub async fn status(addr: SocketAddr) -> anyhow::Result<Value> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = hubbub_client::request(
        addr,
        "GET",
        "/api/admin/cluster",
        &[("authorization", &auth)],
        None,
    )
    .await?;
    if r.status != 200 {
        bail!("/api/admin/cluster: {} {}", r.status, r.body);
    }
    Ok(serde_json::from_str(&r.body)?)
}

/// The sum of every sample of `metric` on `addr`'s /metrics.
pub async fn metric(addr: SocketAddr, metric: &str) -> anyhow::Result<f64> {
    let r = hubbub_client::request(addr, "GET", "/metrics", &[], None).await?;
    if r.status != 200 {
        bail!("/metrics: {}", r.status);
    }
    Ok(r.body
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
