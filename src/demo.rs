//! `hubbub cluster-demo`: three cluster nodes on loopback, offline.
//!
//! The demo prepares what the three share before any of them starts (one CA
//! and its server certificate in `DIR/certs`, the cluster secret, the admin
//! token), so that three nodes starting at once never race to create them;
//! then it runs this same binary three times as child processes, node 1
//! first (the others are seeded with its cluster address, which with
//! `--base-port 0` is only known once it printed it). A second run in the
//! same directory reuses everything: the cluster comes back with its history.
//!
//! The nodes run in process groups of their own, so a Ctrl-C in the terminal
//! reaches the demo only, and the demo stops them: SIGTERM to each, then it
//! waits for each (their ordered shutdown). A node that exits while the
//! cluster starts stops the demo (with its log's tail); one that exits later
//! (the walk-through's `kill -9` of the leader) is reported and the others
//! carry on.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::config::DemoArgs;
use crate::files::{create_private_dir, write_private};
use crate::tls::{CertSource, Tls, local_names};

/// How long a node may take to print its addresses (a debug build on a
/// loaded machine opening sled and starting gossip).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a node may take for its ordered shutdown after SIGTERM before it
/// is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Lines of a failed node's log shown with the error.
const TAIL_LINES: usize = 20;
const NODES: u16 = 3;

/// What the three nodes share, made (or found) before they start.
struct Shared {
    dir: PathBuf,
    secret_file: PathBuf,
    admin_token: String,
    certs: PathBuf,
    /// The CA clients must trust (ours in `certs`, or mkcert's).
    ca: PathBuf,
    trust_help: String,
}

/// One running node.
struct Node {
    name: String,
    child: Child,
    log: PathBuf,
    url: String,
}

/// What a node printed on stdout at start: its URL and cluster address.
struct Announced {
    url: String,
    cluster: String,
}

/// Runs the demo until SIGINT or SIGTERM (then `Ok`: exit status 0), or
/// until a node fails to start (an error with its log's tail).
pub async fn run(args: DemoArgs) -> Result<()> {
    // First: from here on a Ctrl-C stops the nodes in order.
    let mut signals = Signals::new()?;
    let shared = prepare(&args.dir)?;
    let exe = std::env::current_exe().context("finding the hubbub binary")?;
    let mut nodes: Vec<Node> = Vec::new();
    let started = tokio::select! {
        r = start_all(&exe, &args, &shared, &mut nodes) => Some(r),
        _ = signals.recv() => None,
    };
    match started {
        None => {
            eprintln!("stopping the nodes started so far");
            return stop_all(&mut nodes).await;
        }
        Some(Err(e)) => {
            let _ = stop_all(&mut nodes).await;
            return Err(e);
        }
        Some(Ok(())) => {}
    }
    print_guide(&shared, &nodes, &args);
    watch(&mut nodes, &mut signals).await;
    eprintln!("stopping the nodes");
    stop_all(&mut nodes).await
}

/// The directory, the cluster secret, the admin token and the CA, each
/// created on the first run and reused afterwards.
fn prepare(dir: &Path) -> Result<Shared> {
    create_private_dir(dir)?;
    let secret_file = dir.join("cluster-secret");
    load_or_create_token(&secret_file)?;
    let admin_token = load_or_create_token(&dir.join("admin-token"))?;
    let certs = dir.join("certs");
    // The names every node's certificate covers: with --listen on
    // 127.0.0.1 they are the loopback names alone, the same for all three,
    // so the nodes only read what is made here.
    let names = local_names(([127, 0, 0, 1], 0).into(), &[]);
    let tls = Tls::local(&certs, names).context("generating the demo's CA")?;
    let ca = match &tls.source {
        CertSource::Local { ca, .. } => ca.clone(),
        CertSource::Files { cert, .. } => cert.clone(),
    };
    Ok(Shared {
        dir: dir.to_owned(),
        secret_file,
        admin_token,
        certs,
        ca,
        trust_help: tls.trust_help(),
    })
}

/// A 32-byte random value as 64 hex digits in `path` (0600), or the one
/// already there.
fn load_or_create_token(path: &Path) -> Result<String> {
    use ring::rand::SecureRandom;
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim_end().to_owned();
        anyhow::ensure!(
            s.len() >= 32,
            "{} is shorter than 32 characters; remove it to have a new one made",
            path.display()
        );
        return Ok(s);
    }
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, format!("{hex}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hex)
}

/// Starts node 1, then nodes 2 and 3 seeded with node 1's cluster address;
/// each is pushed onto `nodes` as soon as it runs (so a failure stops it).
async fn start_all(
    exe: &Path,
    args: &DemoArgs,
    shared: &Shared,
    nodes: &mut Vec<Node>,
) -> Result<()> {
    let mut seed = None;
    let mut pending = Vec::new();
    for i in 1..=NODES {
        let (http, cluster) = args.ports(i)?;
        let (node, announced) = spawn_node(exe, shared, i, http, cluster, seed.as_deref())?;
        nodes.push(node);
        if i == 1 {
            // Nodes 2 and 3 need node 1's cluster address: wait for it.
            let a = await_announce(nodes, 0, announced).await?;
            seed = Some(a.cluster);
        } else {
            pending.push((nodes.len() - 1, announced));
        }
    }
    for (at, announced) in pending {
        await_announce(nodes, at, announced).await?;
    }
    Ok(())
}

/// Spawns node `i` with its log in `DIR/node<i>.log`; the receiver gets
/// its URL and cluster address once it printed them.
fn spawn_node(
    exe: &Path,
    shared: &Shared,
    i: u16,
    http: u16,
    cluster: u16,
    seed: Option<&str>,
) -> Result<(Node, oneshot::Receiver<Announced>)> {
    let name = format!("node{i}");
    let log = shared.dir.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .args(["--node-id", &name])
        .arg("--data-dir")
        .arg(shared.dir.join(&name))
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")])
        .args(["--tls", "on"])
        .arg("--certs-dir")
        .arg(&shared.certs)
        .arg("--cluster-secret-file")
        .arg(&shared.secret_file)
        .args(["--bootstrap-expect", "3"])
        // In the environment, not on the command line: `ps` shows arguments
        // to every user, a process's environment only to its owner.
        .env("HUBBUB_ADMIN_TOKEN", &shared.admin_token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        // The last resort if the demo itself fails: never leave a node behind.
        .kill_on_drop(true);
    if let Some(s) = seed {
        cmd.args(["--seeds", s]);
    }
    #[cfg(unix)]
    isolate(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(read_announce(stdout, tx));
    Ok((
        Node {
            name,
            child,
            log,
            url: String::new(),
        },
        rx,
    ))
}

/// A process group of its own (the terminal's Ctrl-C is for the demo, which
/// stops the nodes in order), and on Linux SIGTERM when the demo dies, even
/// by `kill -9`.
#[cfg(unix)]
fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: runs in the forked child before exec and calls only prctl,
    // which is async-signal-safe. The parent-death signal fires when the
    // spawning *thread* ends: the demo spawns from the future that
    // `#[tokio::main]` blocks on, which runs on the main thread for the
    // process's whole life.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads a node's stdout: sends its URL and cluster address once both are
/// printed, then keeps reading (and dropping) so the node never blocks on a
/// full pipe.
async fn read_announce(stdout: tokio::process::ChildStdout, tx: oneshot::Sender<Announced>) {
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut tx) = (None, Some(tx));
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(u) = line.strip_prefix("hubbub listening on ") {
            url = Some(u.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("hubbub cluster on ") {
            let cluster = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if let (Some(url), Some(tx)) = (url.take(), tx.take()) {
                let _ = tx.send(Announced { url, cluster });
            }
        }
    }
}

/// Waits until `nodes[at]` printed its addresses; an error with its log's
/// tail when it exits first or takes longer than `START_LIMIT`.
async fn await_announce(
    nodes: &mut [Node],
    at: usize,
    announced: oneshot::Receiver<Announced>,
) -> Result<Announced> {
    let node = &mut nodes[at];
    let outcome = tokio::time::timeout(START_LIMIT, async {
        tokio::select! {
            a = announced => a.ok(),
            _ = node.child.wait() => None,
        }
    })
    .await;
    let why = match outcome {
        Ok(Some(a)) => {
            node.url = a.url.clone();
            return Ok(a);
        }
        // Its output ended: it is exiting (give it a moment to be reaped).
        Ok(None) => match tokio::time::timeout(Duration::from_secs(5), node.child.wait()).await {
            Ok(Ok(status)) => format!("exited ({})", describe(status)),
            _ => "closed its output".to_owned(),
        },
        Err(_) => format!("printed no address within {START_LIMIT:?}"),
    };
    anyhow::bail!(
        "{} {why} while the cluster was starting; the end of {}:\n{}",
        node.name,
        node.log.display(),
        tail(&node.log)
    )
}

/// The URLs first (one line per node), then how to trust the CA, watch the
/// cluster and stop it.
fn print_guide(shared: &Shared, nodes: &[Node], args: &DemoArgs) {
    for n in nodes {
        println!("{} {}", n.name, n.url);
    }
    println!("{}", shared.trust_help);
    let dir = args.dir.display();
    let first = nodes.first().map_or("", |n| n.url.as_str());
    println!("Watch the cluster:");
    println!(
        "  curl -s --cacert {} -H \"Authorization: Bearer $(cat {dir}/admin-token)\" {first}/api/admin/cluster",
        shared.ca.display()
    );
    println!("Logs: {dir}/node1.log … node3.log. Ctrl-C stops all three.");
}

/// Until SIGINT or SIGTERM. A node that exits meanwhile is reported (with
/// the end of its log) and the others carry on: that is the walk-through's
/// failover. When none is left the demo ends too.
async fn watch(nodes: &mut [Node], signals: &mut Signals) {
    let mut alive: Vec<usize> = (0..nodes.len()).collect();
    while !alive.is_empty() {
        let exited = {
            let waits = nodes
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| alive.contains(i))
                .map(|(i, n)| Box::pin(async move { (i, n.child.wait().await) }));
            tokio::select! {
                ((i, status), _, _) = futures_util::future::select_all(waits) => (i, status),
                _ = signals.recv() => return,
            }
        };
        let (i, status) = exited;
        alive.retain(|a| *a != i);
        let n = &nodes[i];
        let how = status.map_or_else(|e| e.to_string(), describe);
        eprintln!(
            "{} exited ({how}); the others carry on. The end of {}:\n{}",
            n.name,
            n.log.display(),
            tail(&n.log)
        );
    }
    eprintln!("every node has exited");
}

/// SIGTERM to every node still running, then waits for each (killed after
/// `STOP_LIMIT`). An error names the nodes that did not stop cleanly.
async fn stop_all(nodes: &mut [Node]) -> Result<()> {
    for n in nodes.iter_mut() {
        if let (Ok(None), Some(pid)) = (n.child.try_wait(), n.child.id()) {
            // A pid of a child we have not waited for: it cannot be reused yet.
            #[cfg(unix)]
            // SAFETY: kill(2) with a valid signal number has no memory effects.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let mut bad = Vec::new();
    for n in nodes.iter_mut() {
        match tokio::time::timeout(STOP_LIMIT, n.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bad.push(format!("{}: {e}", n.name)),
            Err(_) => {
                let _ = n.child.kill().await;
                bad.push(format!(
                    "{}: still running {STOP_LIMIT:?} after SIGTERM; killed",
                    n.name
                ));
            }
        }
    }
    anyhow::ensure!(bad.is_empty(), "{}", bad.join("; "));
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
            return format!("killed by signal {sig}");
        }
    }
    status.to_string()
}

/// The last `TAIL_LINES` lines of a log, before a backtrace (with
/// `RUST_BACKTRACE` set a node's error is followed by one, which would push
/// the error itself out of the tail).
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace:"))
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the demo's start to its
/// end, so none arriving between two waits is lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
