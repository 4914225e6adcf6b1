//! Network namespaces for partition tests (root only): one namespace per
//! node, their cluster interfaces on a bridge in a namespace of its own, and
//! one point-to-point link per node to this (the test's) namespace for its
//! clients. Cutting a node's port on the bridge partitions the cluster while
//! its clients still reach it. Everything is removed by [`Netns`]'s drop,
//! also on panic; only names made from this process's id are touched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::cluster::{ADMIN_TOKEN, Node, cluster_line, cluster_secret};
use super::process::{Proc, proc_args};

/// The namespaces and links of one test; dropped = deleted.
pub struct Netns {
    tag: String,
    nodes: usize,
    /// The client-side subnet: `10.a.b.0/24`, from the process id.
    net: (u8, u8),
}

/// Runs `ip args`; the error says which command failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the namespaces for `nodes` nodes, or says why it cannot (not
    /// root, no `ip`, no namespaces): the caller skips then.
    pub fn create(nodes: usize) -> Result<Netns, String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let pid = std::process::id();
        let ns = Netns {
            tag: format!("hf{}", pid % 10_000_000),
            nodes,
            net: (200 + (pid % 50) as u8, ((pid / 50) % 256) as u8),
        };
        // From here on `ns` deletes whatever was made, also on an error.
        ns.build()?;
        Ok(ns)
    }

    fn bridge_ns(&self) -> String {
        format!("{}b", self.tag)
    }

    /// The namespace of node `i` (from 0).
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Node `i`'s cluster address (on the bridge), port 0.
    pub fn cluster_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8 + 1)), 0)
    }

    /// Node `i`'s HTTP address (on its link to the test), port 0.
    pub fn http_addr(&self, i: usize) -> SocketAddr {
        let (a, b) = self.net;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, 4 * i as u8 + 2)), 0)
    }

    fn build(&self) -> Result<(), String> {
        let (a, b) = self.net;
        let br = self.bridge_ns();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.node_ns(i);
            let (c, p) = (format!("{}c{i}", self.tag), format!("{}p{i}", self.tag));
            let (h, k) = (format!("{}h{i}", self.tag), format!("{}k{i}", self.tag));
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The cluster side: node ↔ bridge.
            ip(&["link", "add", &c, "type", "veth", "peer", "name", &p])?;
            ip(&["link", "set", &c, "netns", &ns])?;
            ip(&["link", "set", &p, "netns", &br])?;
            ip(&["-n", &br, "link", "set", &p, "master", "br0", "up"])?;
            let cl = format!("{}/24", self.cluster_addr(i).ip());
            ip(&["-n", &ns, "addr", "add", &cl, "dev", &c])?;
            ip(&["-n", &ns, "link", "set", &c, "up"])?;
            // The clients' side: this namespace ↔ node, a /30 each.
            ip(&["link", "add", &h, "type", "veth", "peer", "name", &k])?;
            ip(&["link", "set", &k, "netns", &ns])?;
            let here = format!("10.{a}.{b}.{}/30", 4 * i + 1);
            ip(&["addr", "add", &here, "dev", &h])?;
            ip(&["link", "set", &h, "up"])?;
            let there = format!("{}/30", self.http_addr(i).ip());
            ip(&["-n", &ns, "addr", "add", &there, "dev", &k])?;
            ip(&["-n", &ns, "link", "set", &k, "up"])?;
        }
        Ok(())
    }

    /// Cuts node `i` off the other nodes (its clients still reach it), or heals it.
    pub fn cut(&self, i: usize, cut: bool) {
        let p = format!("{}p{i}", self.tag);
        let state = if cut { "down" } else { "up" };
        ip(&["-n", &self.bridge_ns(), "link", "set", &p, state]).unwrap();
    }

    /// Starts node `i` (named `n{i+1}`) in its namespace, in `dir`, seeded with `seeds`.
    pub fn spawn_node(&self, i: usize, dir: &Path, seeds: &[SocketAddr]) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let name = format!("n{}", i + 1);
        let (listen, cluster) = (
            self.http_addr(i).to_string(),
            self.cluster_addr(i).to_string(),
        );
        let seeds = seeds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let secret = cluster_secret(dir);
        let mut flags = vec![
            "--node-id",
            &name,
            "--listen",
            &listen,
            "--cluster-listen",
            &cluster,
            "--admin-token",
            ADMIN_TOKEN,
            "--cluster-secret",
            &secret,
            // Below the machine's descriptor limit, as `spawn_node`.
            "--max-connections",
            "2000",
            "--max-http-connections",
            "1000",
        ];
        if !seeds.is_empty() {
            flags.extend(["--seeds", &seeds]);
        }
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.node_ns(i),
            env!("CARGO_BIN_EXE_hubbub"),
        ])
        .args(proc_args(dir, &flags))
        .env("RUST_LOG", "warn,openraft=off")
        .env_remove("CAROOT");
        let (proc, last) = spawn_cmd(cmd, "hubbub cluster on ");
        let (cluster, generation) = cluster_line(&last);
        Node {
            proc,
            name,
            dir: dir.to_owned(),
            cluster,
            generation,
            ring_exclude: None,
        }
    }
}

/// Runs `cmd` (`ip netns exec` execs hubbub: the child is hubbub itself);
/// returns once it printed a line starting with `last`, with that line. The
/// first line gives the HTTP address. Killed on failure (no hang).
fn spawn_cmd(mut cmd: Command, last: &str) -> (Proc, String) {
    use std::io::{BufRead, BufReader};
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut proc = Proc {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let last = last.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = None;
        loop {
            let mut line = String::new();
            if matches!(reader.read_line(&mut line), Ok(0) | Err(_)) {
                return;
            }
            let line = line.trim_end().to_owned();
            first.get_or_insert_with(|| line.clone());
            if line.starts_with(&last) {
                let _ = tx.send((first.take().unwrap_or_default(), line));
                break;
            }
        }
        // Read the rest for the child's whole life: its prints never block.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    // On a panic `proc` is dropped: the child is killed.
    let (first, line) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a node in a namespace printed its cluster line within 60 s");
    proc.addr = first.rsplit("://").next().unwrap().parse().unwrap();
    (proc, line)
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the interfaces in it, and with each
        // veth end its peer (the clients' ends in this namespace included).
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.node_ns(i)]);
            let _ = ip(&["link", "del", &format!("{}h{i}", self.tag)]);
        }
        let _ = ip(&["netns", "del", &self.bridge_ns()]);
    }
}
