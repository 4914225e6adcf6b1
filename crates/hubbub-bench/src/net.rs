//! Targets, connections and accounts: loopback checks, `--spawn`, RSS, the
//! open-file limit, WebSocket connects with a small read buffer, log-ins.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use hubbub_client::{Account, Endpoint, Io, signup_or_login};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::Args;

pub type Ws = WebSocketStream<Box<dyn Io>>;

pub const PASSWORD: &str = "bench-password-1";

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

/// CPU use of the server and of this process over a stretch of wall time.
pub struct CpuMeter {
    pid: Option<u32>,
    server: Option<f64>,
    bench: Option<f64>,
    wall: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Self {
        CpuMeter {
            pid,
            server: pid.and_then(|p| cpu_secs(Some(p))),
            bench: cpu_secs(None),
            wall: std::time::Instant::now(),
        }
    }

    /// Average cores busy (server, this process), CPU seconds, and the 1-minute load.
    pub fn json(&self) -> serde_json::Value {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let secs = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let server = secs(self.server, self.pid.and_then(|p| cpu_secs(Some(p))));
        let bench = secs(self.bench, cpu_secs(None));
        let cores = |s: Option<f64>| s.map(|s| (s / wall * 100.0).round() / 100.0);
        let load1 = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        });
        serde_json::json!({
            "server_cores": cores(server),
            "bench_cores": cores(bench),
            "server_cpu_s": server,
            "bench_cpu_s": bench,
            "machine_load1": load1,
        })
    }
}

/// `http://host:port` (or ws://) → a loopback socket address; anything else is refused.
pub fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = ["http://", "ws://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .ok_or_else(|| anyhow!("--url must start with http:// or ws:// (got {url})"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        bail!("refusing non-loopback target {hostport}: hubbub-bench only loads 127.0.0.1/::1");
    }
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no address for {hostport}"))
}

/// The server under test: an address, maybe a PID, maybe a child we started.
pub struct Target {
    /// How to connect: plain, or TLS trusting `--ca` (or the spawned server's CA).
    pub ep: Endpoint,
    pub pid: Option<u32>,
    pub raw: bool,
    pub raw_path: String,
    pub spawned: bool,
    /// The server's data dir, when known (`--spawn`: `--data-dir` or a temp
    /// dir; with `--url`: `--data-dir`): `fill` weighs it, `durable` measures
    /// this disk's fsync there.
    pub data_dir: Option<PathBuf>,
    child: Option<Child>,
    temp_dir: Option<PathBuf>,
}

impl Target {
    /// A running plain-HTTP hubbub at `ep` that this process did not start.
    pub fn at(ep: Endpoint) -> Target {
        Target {
            ep,
            pid: None,
            raw: false,
            raw_path: "/".into(),
            spawned: false,
            data_dir: None,
            child: None,
            temp_dir: None,
        }
    }

    pub async fn open(args: &Args) -> anyhow::Result<Target> {
        if !args.spawn {
            let addr = loopback_addr(&args.url)?;
            let ep = match (&args.ca, args.tls || args.url.starts_with("https://")) {
                (Some(ca), _) => Endpoint::tls(addr, ca)?,
                (None, true) => bail!("--tls needs --ca FILE (the server's CA, e.g. certs/ca.pem)"),
                (None, false) => Endpoint::from(addr),
            };
            return Ok(Target {
                ep,
                pid: args.server_pid,
                raw: args.raw,
                raw_path: args.raw_path.clone(),
                spawned: false,
                // Of a server started elsewhere: given to read its size (fill).
                data_dir: args.data_dir.clone(),
                child: None,
                temp_dir: None,
            });
        }
        let bin = server_bin(args)?;
        let (dir, temp_dir) = match &args.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let d = std::env::temp_dir()
                    .join(format!("hubbub-bench-{}-{nanos}", std::process::id()));
                (d.clone(), Some(d))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = server_command(&bin, &dir, args.tls, "warn", libc::SIGTERM);
        cmd.args(&args.server_arg);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1))
                {
                    let a = a.split_whitespace().next().unwrap_or("");
                    return anyhow::Ok(a.trim_end_matches('/').parse::<SocketAddr>()?);
                }
            }
            bail!("server exited before listening")
        })
        .await
        .context("waiting for the server to listen")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        eprintln!(
            "spawned {} pid {} on {addr}, data {}",
            bin.display(),
            pid.unwrap_or(0),
            dir.display()
        );
        let ep = if args.tls {
            Endpoint::tls(addr, &dir.join("certs").join("ca.pem"))?
        } else {
            Endpoint::from(addr)
        };
        Ok(Target {
            ep,
            pid,
            raw: false,
            raw_path: args.raw_path.clone(),
            spawned: true,
            data_dir: Some(dir),
            child: Some(child),
            temp_dir,
        })
    }

    /// Stops a spawned server (SIGTERM, then SIGKILL after 20 s) and removes its temp dir.
    pub async fn close(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own child by its PID.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(d) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// The path and query of a WebSocket to `room` (ignored in raw mode).
    pub fn ws_path(&self, room: &str) -> String {
        if self.raw {
            self.raw_path.clone()
        } else {
            format!("/ws?room={room}")
        }
    }
}

/// A hubbub server on 127.0.0.1:0 with its data (and certificates) in
/// `dir` and the limits lifted; its stdout piped (it prints its addresses
/// there), killed on drop, and sent `death` if the bench itself dies. The
/// caller adds its own flags. `log`: `RUST_LOG` unless the bench's own
/// environment sets one.
pub fn server_command(
    bin: &std::path::Path,
    dir: &std::path::Path,
    tls: bool,
    log: &str,
    death: libc::c_int,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
        .args(lifted_limits(bin, tls))
        .arg("--certs-dir")
        .arg(dir.join("certs"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| log.into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl in the child between fork and exec only sets its death signal.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, death);
            Ok(())
        });
    }
    cmd
}

/// Flags that lift the server's per-connection and per-address limits (every
/// client of a bench shares 127.0.0.1), and plain HTTP: only those this
/// binary's `--help` lists, so older and newer servers both start.
pub fn lifted_limits(bin: &std::path::Path, tls: bool) -> Vec<String> {
    const BIG: &str = "1000000";
    let wanted = [
        ("--msgs-per-sec", BIG),
        ("--burst", BIG),
        ("--max-sessions-per-user", "100000"),
        ("--upgrades-per-min", BIG),
        ("--signups-per-min", BIG),
        ("--logins-per-min", BIG),
        ("--logins-per-user-per-min", BIG),
        ("--max-connections", BIG),
        ("--max-connections-per-address", BIG),
        ("--max-http-connections", BIG),
        ("--max-http-connections-per-address", BIG),
        ("--tls", if tls { "on" } else { "off" }),
    ];
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let has = |flag: &str| {
        help.split(|c: char| c.is_whitespace() || c == ',')
            .any(|w| w == flag || w.starts_with(&format!("{flag}=")))
    };
    wanted
        .iter()
        .filter(|(f, _)| has(f))
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
}

fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
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

/// Redirects [`ws_connect`] follows: a cluster redirects a client at most
/// once (its loop shield), so more than this is a loop.
const MAX_REDIRECTS: usize = 3;

/// Opens a WebSocket with a small read buffer (the bench holds thousands),
/// following a cluster's 307 to the user's home node.
pub async fn ws_connect(
    ep: &Endpoint,
    path: &str,
    cookie: Option<&str>,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let (mut ep, mut path) = (ep.clone(), path.to_owned());
    for _ in 0..=MAX_REDIRECTS {
        match upgrade(&ep, &path, cookie, read_buffer).await? {
            Ok(ws) => return Ok(ws),
            Err(location) => (ep, path) = follow(&ep, &location).await?,
        }
    }
    bail!("more than {MAX_REDIRECTS} redirects (last to {path})")
}

/// One upgrade: the socket, or the `Location` of a 307.
async fn upgrade(
    ep: &Endpoint,
    path: &str,
    cookie: Option<&str>,
    read_buffer: usize,
) -> anyhow::Result<Result<Ws, String>> {
    let scheme = if ep.is_tls() { "wss" } else { "ws" };
    let mut req = format!("{scheme}://{}{path}", ep.addr).into_client_request()?;
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", HeaderValue::from_str(c)?);
    }
    let tcp = ep.connect().await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer.max(256))
        .max_message_size(Some(64 << 20));
    match tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(tungstenite::Error::Http(resp)) => {
            let location = resp
                .headers()
                .get(tungstenite::http::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            match (resp.status().as_u16(), location) {
                (307, Some(to)) => Ok(Err(to.to_owned())),
                (s, _) => bail!("upgrade refused with {s}"),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a `Location` (`ws://host:port/ws?…`) points: `ep`'s TLS settings
/// at that (loopback) address, and the path with its query.
async fn follow(ep: &Endpoint, location: &str) -> anyhow::Result<(Endpoint, String)> {
    let rest = ["ws://", "wss://"]
        .iter()
        .find_map(|p| location.strip_prefix(p))
        .ok_or_else(|| anyhow!("a Location that is not ws:// or wss://: {location}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = loopback_addr(&format!("ws://{authority}"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok((ep.at(addr), path.to_owned()))
}

/// `path` (`/ws?…`) placed at `ep` itself in a cluster: with `from=` the
/// home that node names for `account` (`GET /api/cluster/route`), which its
/// loop shield serves where it lands. Unchanged on a node not in a cluster
/// (404) or without an account.
pub async fn placed(
    ep: &Endpoint,
    path: &str,
    account: Option<&Account>,
) -> anyhow::Result<String> {
    let Some(a) = account else {
        return Ok(path.to_owned());
    };
    Ok(match hubbub_client::route(ep.clone(), a).await? {
        None => path.to_owned(),
        Some((node, _)) => format!("{path}&from={node}"),
    })
}

/// Connects a session to `room` and, for hubbub, waits for `welcome` and `history`.
pub async fn join(
    ep: &Endpoint,
    raw: bool,
    path: &str,
    account: Option<&Account>,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let cookie = account.map(Account::cookie_header);
    let mut ws = ws_connect(ep, path, cookie.as_deref(), read_buffer).await?;
    if !raw {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen_welcome = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, ws.next())
                .await
                .context("timed out waiting for welcome/history")?;
            match m {
                Some(Ok(Message::Text(t))) => {
                    // batch=1: welcome and history may share a frame, a line each.
                    for s in t.as_str().split('\n') {
                        if s.starts_with("{\"type\":\"welcome\"") {
                            seen_welcome = true;
                        } else if seen_welcome && s.starts_with("{\"type\":\"history\"") {
                            return Ok(ws);
                        }
                    }
                }
                Some(Ok(Message::Close(f))) => bail!("closed on join: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed on join"),
            }
        }
    }
    Ok(ws)
}

/// Signs up or logs in `n` accounts `bench_<i>` with `concurrency` at once.
pub async fn accounts(
    t: &Target,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Account>, f64)> {
    if t.raw || n == 0 {
        return Ok((Vec::new(), 0.0));
    }
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    // argon2 takes ~19 MiB and ~28 ms per log-in: more than a few at once only
    // inflates the server's heap (and its RSS baseline) on 2 cores.
    for _ in 0..concurrency.clamp(1, 4).min(n) {
        let next = next.clone();
        let ep = t.ep.clone();
        set.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(got);
                }
                let a = signup_or_login(&ep, &format!("bench_{i}"), PASSWORD)
                    .await
                    .context("log-in (a 429 means the server's sign-up/log-in limits are too low for a bench; --spawn lifts them)")?;
                got.push((i, a));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|(i, _)| *i);
    let secs = start.elapsed().as_secs_f64();
    Ok((all.into_iter().map(|(_, a)| a).collect(), secs))
}

/// Sessions per account: the server default (8) unless we started the server.
pub fn sessions_per_user(args: &Args, t: &Target) -> usize {
    args.sessions_per_user
        .unwrap_or(if t.spawned { 50 } else { 8 })
        .max(1)
}

/// A short id that makes room names and message ids unique per run.
pub fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 40)
}

/// The messages in one received text frame: a peer that batches (the Go hub,
/// a gorilla-style writer) joins what it had queued with `\n`, one message per
/// line; a frame without `\n` is one message. Empty lines carry nothing.
pub fn lines(frame: &str) -> impl Iterator<Item = &str> {
    frame.split('\n').filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redirect_is_followed_to_its_loopback_address_with_its_query() {
        let ep = Endpoint::from("127.0.0.1:1".parse::<SocketAddr>().unwrap());
        let (to, path) = follow(&ep, "ws://127.0.0.1:4242/ws?room=a&from=n1")
            .await
            .unwrap();
        assert_eq!(to.addr, "127.0.0.1:4242".parse::<SocketAddr>().unwrap());
        assert_eq!(path, "/ws?room=a&from=n1");
    }

    #[tokio::test]
    async fn a_redirect_off_loopback_or_to_another_scheme_is_refused() {
        let ep = Endpoint::from("127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert!(follow(&ep, "ws://10.1.2.3:4242/ws?room=a").await.is_err());
        assert!(follow(&ep, "http://127.0.0.1:4242/ws").await.is_err());
        assert!(follow(&ep, "/ws?room=a").await.is_err());
    }

    #[test]
    fn a_batched_frame_splits_into_one_message_per_line() {
        let one = "t=1 s=0 xxx";
        assert_eq!(lines(one).collect::<Vec<_>>(), [one]);
        let three = "t=1 s=0 a\nt=2 s=0 b\nt=3 s=1 c";
        assert_eq!(
            lines(three).collect::<Vec<_>>(),
            ["t=1 s=0 a", "t=2 s=0 b", "t=3 s=1 c"]
        );
        // Each line keeps its own stamp, so each counts as its own delivery.
        let stamps: Vec<_> = lines(three).filter_map(crate::sender::stamp).collect();
        assert_eq!(stamps, [(1, 0), (2, 0), (3, 1)]);
        // A trailing or doubled separator yields no empty message.
        assert_eq!(lines("a\n\nb\n").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(lines("").count(), 0);
        // hubbub's JSON frames hold no raw newline: one frame, one message.
        let chat = r#"{"type":"chat","content":"t=5 s=2 line\nbreak"}"#;
        assert_eq!(lines(chat).count(), 1);
    }
}
