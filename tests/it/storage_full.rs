//! A data directory on a small tmpfs that fills up: nothing delivered live is
//! lost, every `saved` survives a restart, readiness follows the disk.
//!
//! Mounting needs root (CI runs as root); elsewhere each test says it skipped.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use hubbub_client::{self as client, Account, WsClient};

const MIB: u64 = 1 << 20;
/// Bounded waits: generous, the machine may be loaded.
const LONG: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a fresh temp directory; unmounted when dropped, also on panic.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with a note on stderr) when not root or the mount fails.
    fn mount(size_mb: u64) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs on {}", dir.path().display());
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size_mb: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount to {size_mb} MiB failed");
    }

    fn free(&self) -> u64 {
        hubbub::storage::free_bytes(self.path()).unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files must not keep the mount around.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Records every chat id delivered live to one session until stopped.
struct Receiver {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<HashSet<String>>,
}

impl Receiver {
    fn start(mut ws: WsClient) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut live = HashSet::new();
            while !flag.load(Ordering::Relaxed) {
                match ws.recv(Duration::from_millis(100)).await {
                    Some(Incoming::Frame(v)) if v["type"] == "chat" => {
                        live.insert(v["id"].as_str().unwrap().to_owned());
                    }
                    Some(Incoming::Frame(_)) | None => {}
                    Some(Incoming::Closed(_)) => break,
                }
            }
            live
        });
        Receiver { stop, task }
    }

    async fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// What the sender saw for its messages.
#[derive(Default)]
struct Sender {
    contents: HashMap<String, String>,
    saved: HashSet<String>,
    /// Ids answered `unavailable`, with the error's message.
    refused: HashMap<String, String>,
}

impl Sender {
    /// Sends `ids` (new or resent), then reads until each is `saved` or refused,
    /// or the connection closes. Returns false when it closed.
    async fn send(&mut self, ws: &mut WsClient, ids: &[String]) -> bool {
        for id in ids {
            let content = self.contents[id].clone();
            if ws.send_json(&chat(id, &content)).await.is_err() {
                return false;
            }
        }
        let mut open: HashSet<&String> = ids.iter().collect();
        let deadline = tokio::time::Instant::now() + LONG;
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match ws.recv(left).await {
                Some(Incoming::Frame(v)) => {
                    let Some(id) = v["id"].as_str().map(str::to_owned) else {
                        continue;
                    };
                    if v["type"] == "receipt" && v["status"] == "saved" {
                        self.refused.remove(&id);
                        self.saved.insert(id.clone());
                        open.remove(&id);
                    } else if v["type"] == "error" {
                        assert_eq!(v["code"], "unavailable", "{v}");
                        assert!(v["retry_after_ms"].as_u64().unwrap() > 0, "{v}");
                        let msg = v["message"].as_str().unwrap().to_owned();
                        self.refused.insert(id.clone(), msg);
                        open.remove(&id);
                    }
                }
                Some(Incoming::Closed(_)) => return false,
                None => panic!("no saved or unavailable for {} ids", open.len()),
            }
        }
        true
    }

    fn new_ids(&mut self, n: usize, size: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = uuid();
                let c = format!("{id} {}", "x".repeat(size));
                self.contents.insert(id.clone(), c);
                id
            })
            .collect()
    }

    /// Every id sent and not (yet) `saved`: what a client resends after reconnecting.
    fn unsaved(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .contents
            .keys()
            .filter(|id| !self.saved.contains(*id))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// Every message id in `room`'s history, paging back through the HTTP API.
async fn history_ids(addr: SocketAddr, acct: &Account, room: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let q = match &before {
            Some(c) => format!("?limit=100&before={c}"),
            None => "?limit=100".to_owned(),
        };
        let cookie = acct.cookie_header();
        let r = client::request(
            addr,
            "GET",
            &format!("/api/rooms/{room}/messages{q}"),
            &[("cookie", cookie.as_str())],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let msgs = page["messages"].as_array().unwrap().clone();
        for m in &msgs {
            ids.insert(m["id"].as_str().unwrap().to_owned());
        }
        if page["more"] != true || msgs.is_empty() {
            return ids;
        }
        before = Some(msgs[0]["cursor"].as_str().unwrap().to_owned());
    }
}

async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    client::request(addr, "GET", path, &[], None).await.unwrap()
}

/// The value of an unlabelled metric.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_sample(addr, name)
        .await
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Polls `/readyz` until it answers `status` (bounded).
async fn wait_ready(addr: SocketAddr, status: u16) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let r = get(addr, "/readyz").await;
        if r.status == status {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_subset(what: &str, part: &HashSet<String>, whole: &HashSet<String>) {
    let missing: Vec<_> = part.difference(whole).collect();
    assert!(
        missing.is_empty(),
        "{} of {} {what} missing from history after restart: {missing:?}",
        missing.len(),
        part.len()
    );
}

#[tokio::test]
async fn a_full_disk_refuses_messages_loses_none_and_recovers_without_restart() {
    let Some(fs) = Tmpfs::mount(64) else { return };
    let data = tempfile::tempdir_in(fs.path()).unwrap();
    let flags = ["--min-free-mb", "8"];
    let s = TestServer::start_in(data, &flags).await;
    let (alice, bob) = (s.user("alice").await, s.user("bob").await);
    let mut tx = s.join(&alice, "lobby").await;
    let rx = Receiver::start(s.join(&bob, "lobby").await);
    assert_eq!(get(s.addr, "/readyz").await.status, 200);

    // Leave about 3 MiB above the watermark, so a few hundred messages fill it.
    let filler = fs.path().join("filler");
    let fill = fs.free().saturating_sub(11 * MIB);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();

    let mut snd = Sender::default();
    let mut rounds = 0;
    while !snd.refused.values().any(|m| m.contains("full")) {
        rounds += 1;
        assert!(rounds < 200, "storage never refused a message");
        let ids = snd.new_ids(20, 3000);
        assert!(snd.send(&mut tx, &ids).await, "sender's socket closed");
    }
    let r = get(s.addr, "/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("storage full"), "{}", r.body);
    assert_eq!(metric(s.addr, "hubbub_storage_state").await, 1.0);
    eprintln!(
        "full after {} sent: {} saved, {} refused",
        snd.contents.len(),
        snd.saved.len(),
        snd.refused.len()
    );

    // Space comes back: accepted again with no restart; refused ids are resent.
    std::fs::remove_file(&filler).unwrap();
    wait_ready(s.addr, 200).await;
    assert_eq!(metric(s.addr, "hubbub_storage_state").await, 0.0);
    let mut resend = snd.unsaved();
    resend.extend(snd.new_ids(5, 3000));
    assert!(snd.send(&mut tx, &resend).await);
    assert!(snd.refused.is_empty(), "still refused: {:?}", snd.refused);
    // Counters count what is on disk: one per saved message, refusals not included.
    assert_eq!(
        metric(s.addr, "hubbub_messages_stored_total").await,
        snd.saved.len() as f64
    );

    let live = rx.finish().await;
    eprintln!(
        "sent {}, saved {}, delivered live {}",
        snd.contents.len(),
        snd.saved.len(),
        live.len()
    );
    drop(tx);
    let s = TestServer::start_in(s.stop().await, &flags).await;
    let history = history_ids(s.addr, &alice, "lobby").await;
    assert_subset("saved messages", &snd.saved, &history);
    assert_subset("live-delivered messages", &live, &history);
    s.stop().await;
}

/// `hubbub` as a child process with its log (stderr) in `log`; killed when dropped.
fn spawn_logged(args: &[String], log: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let p = Proc {
        addr: line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}")),
        child,
    };
    // Keep reading stdout so later prints never hit a closed pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    p
}

/// Waits (bounded) for the process to exit on its own; its exit code.
async fn wait_exit(p: &mut Proc) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hubbub did not exit after storage failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join_at(addr: SocketAddr, acct: &Account, room: &str) -> WsClient {
    let mut ws = client::join(addr, acct, room, None, None).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    ws.expect("history", T).await.unwrap();
    ws
}

#[tokio::test]
async fn a_sled_write_error_stops_the_node_and_nothing_shown_live_is_lost() {
    let Some(fs) = Tmpfs::mount(6) else { return };
    let data = fs.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    // The guard off: the disk fills until sled itself fails.
    let args = proc_args(&data, &["--min-free-mb", "0"]);
    let mut p = spawn_logged(&args, &logs.path().join("first.log"));
    let alice = client::signup_or_login(p.addr, "alice", PASSWORD)
        .await
        .unwrap();
    let bob = client::signup_or_login(p.addr, "bob", PASSWORD)
        .await
        .unwrap();
    let mut tx = join_at(p.addr, &alice, "lobby").await;
    let rx = Receiver::start(join_at(p.addr, &bob, "lobby").await);

    let mut snd = Sender::default();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200, "storage never failed");
        let ids = snd.new_ids(20, 3000);
        if !snd.send(&mut tx, &ids).await {
            break;
        }
    }
    let status = wait_exit(&mut p).await;
    let log = std::fs::read_to_string(logs.path().join("first.log")).unwrap();
    assert_eq!(status, Some(75), "exit status; log:\n{log}");
    assert!(
        log.contains("storage failed") && log.contains("free disk space and start hubbub again"),
        "{log}"
    );
    let live = rx.finish().await;
    assert!(!snd.saved.is_empty() && !live.is_empty());
    eprintln!(
        "sent {}, saved {}, refused {}, delivered live {}; log:\n{log}",
        snd.contents.len(),
        snd.saved.len(),
        snd.refused.len(),
        live.len()
    );

    // Space comes back; the restarted node takes the resent ids.
    fs.resize(64);
    let p = spawn_logged(&args, &logs.path().join("second.log"));
    assert_eq!(get(p.addr, "/readyz").await.status, 200);
    let mut tx = join_at(p.addr, &alice, "lobby").await;
    let unsaved = snd.unsaved();
    assert!(snd.send(&mut tx, &unsaved).await);
    assert!(snd.refused.is_empty(), "still refused: {:?}", snd.refused);
    let history = history_ids(p.addr, &alice, "lobby").await;
    eprintln!(
        "after restart and {} resends: history {}",
        unsaved.len(),
        history.len()
    );
    assert_subset("saved messages", &snd.saved, &history);
    assert_subset("live-delivered messages", &live, &history);
}
