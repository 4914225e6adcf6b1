//! Test harness: a real hubbub on 127.0.0.1:0 with sled in a temp dir, and
//! logged-in WebSocket clients. No mocks: everything goes over real sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubbub::client::{self, Account, Endpoint, WsClient};
use hubbub::config::Config;
use hubbub::server::{self, Running};
use serde_json::{Value, json};

pub const T: Duration = Duration::from_secs(5);
pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub addr: SocketAddr,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
}

/// Flags every test server gets, unless the test gives the same flag itself:
/// plain HTTP, limits high enough for many users from 127.0.0.1, a temp data dir.
pub fn base_args(data: &Path) -> Vec<String> {
    base_args_except(data, &[])
}

pub fn base_args_except(data: &Path, extra: &[&str]) -> Vec<String> {
    let data_dir = data.display().to_string();
    let certs = data.join("certs").display().to_string();
    let defaults: [(&str, &str); 12] = [
        ("--listen", "127.0.0.1:0"),
        ("--node-id", "test-node"),
        ("--jwt-secret", "test-secret-test-secret-test-secret-0123"),
        ("--data-dir", &data_dir),
        ("--certs-dir", &certs),
        ("--tls", "off"),
        ("--msgs-per-sec", "1000"),
        ("--burst", "1000"),
        ("--upgrades-per-min", "100000"),
        ("--signups-per-min", "100000"),
        ("--logins-per-min", "100000"),
        ("--logins-per-user-per-min", "100000"),
    ];
    let mut v = vec!["hubbub".to_string()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            v.push(flag.into());
            v.push(value.into());
        }
    }
    v
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let mut args = base_args_except(dir.path(), extra);
        args.extend(extra.iter().map(|s| s.to_string()));
        let cfg = Config::from_args(args).unwrap();
        let running = server::start(cfg).await.unwrap();
        TestServer {
            addr: running.addr,
            running: Some(running),
            dir,
        }
    }

    /// How to reach this server: plain, or TLS trusting its generated CA.
    pub fn endpoint(&self) -> Endpoint {
        let tls = self.running.as_ref().is_some_and(|r| r.tls.is_some());
        if tls {
            Endpoint::tls(self.addr, &self.dir.path().join("certs").join("ca.pem")).unwrap()
        } else {
            Endpoint::from(self.addr)
        }
    }

    /// Ordered shutdown; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.running.take().unwrap().shutdown().await.unwrap();
        self.dir
    }

    pub async fn user(&self, name: &str) -> Account {
        client::signup_or_login(self.addr, name, PASSWORD)
            .await
            .unwrap()
    }

    pub async fn join(&self, acct: &Account, room: &str) -> WsClient {
        let mut ws = client::join(self.addr, acct, room, None, None)
            .await
            .unwrap();
        ws.expect("welcome", T).await.unwrap();
        ws.expect("history", T).await.unwrap();
        ws
    }
}

static NAMES: AtomicUsize = AtomicUsize::new(0);

/// A fresh valid username with a readable prefix.
pub fn name(prefix: &str) -> String {
    format!("{prefix}_{}", NAMES.fetch_add(1, Ordering::Relaxed))
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn chat(id: &str, content: &str) -> Value {
    json!({"type": "chat", "id": id, "content": content})
}

/// Sends a chat and returns its id.
pub async fn say(ws: &mut WsClient, content: &str) -> String {
    let id = uuid();
    ws.send_json(&chat(&id, content)).await.unwrap();
    id
}

/// The next chat/private frame with this id.
pub async fn expect_msg(ws: &mut WsClient, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(client::Incoming::Frame(v))
                if (v["type"] == "chat" || v["type"] == "private") && v["id"] == id =>
            {
                return v;
            }
            Some(client::Incoming::Frame(_)) => continue,
            other => panic!("waiting for message {id}: {other:?}"),
        }
    }
}

/// Collects frames until `quiet` passes with nothing new.
pub async fn drain(ws: &mut WsClient, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(client::Incoming::Frame(v)) = ws.recv(quiet).await {
        out.push(v);
    }
    out
}

// ---------------------------------------------------------------------------
// Helpers for the protocol test suite (frames, errors, privacy, receipts, …).

pub use hubbub::client::{HttpResponse, Incoming};

/// Joins with an optional client id and `since`; returns the socket, `welcome` and `history`.
/// Fails if anything comes between `welcome` and `history`.
pub async fn join_full(
    s: &TestServer,
    acct: &Account,
    room: &str,
    client_id: Option<&str>,
    since: Option<&str>,
) -> (WsClient, Value, Value) {
    let mut ws = client::join(s.addr, acct, room, client_id, since)
        .await
        .unwrap();
    let welcome = next_frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
    let history = next_frame(&mut ws).await;
    assert_eq!(history["type"], "history", "second frame: {history}");
    (ws, welcome, history)
}

/// The very next JSON frame; panics on close or timeout.
pub async fn next_frame(ws: &mut WsClient) -> Value {
    match ws.recv(T).await {
        Some(Incoming::Frame(v)) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next frame for which `pred` holds, skipping others; panics on close or timeout.
pub async fn expect_where(ws: &mut WsClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(v)) if pred(&v) => return v,
            Some(Incoming::Frame(_)) => continue,
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

/// Every frame up to and including the chat/private message with `id`.
/// Frames from one session reach the hub in order and every session's queue
/// is FIFO, so a marker sent after an action proves what that action did not deliver.
pub async fn until_msg(ws: &mut WsClient, id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(v)) => {
                let done = (v["type"] == "chat" || v["type"] == "private") && v["id"] == id;
                out.push(v);
                if done {
                    return out;
                }
            }
            other => panic!("waiting for message {id}: {other:?} after {out:?}"),
        }
    }
}

/// Sends a marker chat from `from` and returns, for each of `watchers`, the
/// frames it got up to that marker (the marker included). `from`'s own frames
/// up to its echo are returned first.
pub async fn marker(from: &mut WsClient, watchers: &mut [&mut WsClient]) -> Vec<Vec<Value>> {
    let id = say(from, "-- marker --").await;
    let mut out = vec![until_msg(from, &id).await];
    for w in watchers.iter_mut() {
        out.push(until_msg(w, &id).await);
    }
    out
}

/// The frames of `frames` whose `type` is `ty`.
pub fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

pub fn private(id: &str, target: &str, content: &str) -> Value {
    json!({"type": "private", "id": id, "target": target, "content": content})
}

/// The next `error` frame.
pub async fn expect_error(ws: &mut WsClient) -> Value {
    expect_where(ws, "an error frame", |v| v["type"] == "error").await
}

/// The next `receipt` for `id` with `status`.
pub async fn expect_receipt(ws: &mut WsClient, id: &str, status: &str) -> Value {
    expect_where(ws, &format!("receipt {status} for {id}"), |v| {
        v["type"] == "receipt" && v["id"] == id && v["status"] == status
    })
    .await
}

/// Sends a chat, waits for its echo and its `saved` receipt; returns the echo.
pub async fn say_saved(ws: &mut WsClient, content: &str) -> Value {
    let id = say(ws, content).await;
    let echo = expect_msg(ws, &id).await;
    expect_receipt(ws, &id, "saved").await;
    echo
}

/// The next `presence` whose user list is exactly `users` (in this order).
pub async fn expect_presence(ws: &mut WsClient, users: &[&str]) -> Value {
    expect_where(ws, &format!("presence {users:?}"), |v| {
        v["type"] == "presence"
            && v["users"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|u| u.as_str())
                    .eq(users.iter().map(|u| Some(*u)))
            })
    })
    .await
}

/// Closes from the client side and waits until the server has closed too.
pub async fn close_and_wait(mut ws: WsClient) {
    let _ = ws.ws.close(None).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(_)) => return,
            None => panic!("server did not finish the close handshake"),
        }
    }
}

/// An HTTP request with `acct`'s cookies (when given).
pub async fn http(
    s: &TestServer,
    method: &str,
    path: &str,
    acct: Option<&Account>,
    body: Option<&str>,
) -> HttpResponse {
    let cookie = acct.map(Account::cookie_header);
    let headers: Vec<(&str, &str)> = match &cookie {
        Some(c) => vec![("cookie", c.as_str())],
        None => vec![],
    };
    client::request(s.addr, method, path, &headers, body)
        .await
        .unwrap()
}

/// `GET /api/rooms/{room}/messages?{query}` as `acct`.
pub async fn http_history(s: &TestServer, acct: &Account, room: &str, query: &str) -> HttpResponse {
    let path = if query.is_empty() {
        format!("/api/rooms/{room}/messages")
    } else {
        format!("/api/rooms/{room}/messages?{query}")
    };
    http(s, "GET", &path, Some(acct), None).await
}

/// The ids of a history page's messages, in order.
pub fn ids_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The contents of a history page's messages, in order.
pub fn contents_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {page}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// An HTTP error body: `{"error":{"code","message"}}` with a non-empty message; returns the code.
pub fn error_code(r: &HttpResponse) -> String {
    let v = r.json();
    let msg = v["error"]["message"].as_str();
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error body without a message: {} {}",
        r.status,
        r.body
    );
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without a code: {} {}", r.status, r.body))
        .to_owned()
}

/// `2026-11-28T08:00:00.123Z` → milliseconds since the epoch; `None` if not exactly that form.
pub fn ts_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ".as_bytes();
    for (c, p) in b.iter().zip(shape) {
        let ok = if *p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        if !ok {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi) * 60 + sec) as u64 * 1000 + ms as u64)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cursor as PROTOCOL.md allows: a non-empty URL-safe string.
pub fn is_cursor(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

// ---------------------------------------------------------------------------
// Helpers for the security suite (tests/security_*.rs).

/// The JWT secret `base_args` gives every test server.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Markers of internal detail that must never reach a client.
pub const LEAKS: &[&str] = &[
    "sled",
    "panicked",
    "Error {",
    "Error(",
    "src/",
    ".rs:",
    "/tmp/",
    "/work/",
    "/home/",
    "backtrace",
    "thread '",
    "::",
];

/// Panics when `text` (a response body or error frame) carries internal detail.
pub fn assert_no_leak(what: &str, text: &str) {
    for l in LEAKS {
        assert!(
            !text.contains(l),
            "{what}: response leaks internal detail {l:?}: {text}"
        );
    }
}

/// A TLS test server (generated CA in `<tempdir>/certs`), plus more flags.
pub async fn tls_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--tls", "on"];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// Signs up (or logs in) over the server's own endpoint (TLS when it is on).
pub async fn user_on(s: &TestServer, name: &str) -> Account {
    client::signup_or_login(s.endpoint(), name, PASSWORD)
        .await
        .unwrap()
}

/// Joins `room` over the server's own endpoint; waits for `welcome` and `history`.
pub async fn join_on(s: &TestServer, acct: &Account, room: &str) -> WsClient {
    let mut ws = client::join(s.endpoint(), acct, room, None, None)
        .await
        .unwrap();
    ws.expect("welcome", T).await.unwrap();
    ws.expect("history", T).await.unwrap();
    ws
}

/// The HTTP status of an upgrade attempt: 101 when it succeeded.
/// Refusals must carry a JSON error body.
pub fn upgrade_status(r: Result<WsClient, client::ConnectError>) -> u16 {
    match r {
        Ok(_) => 101,
        Err(client::ConnectError::Status(code, body)) => {
            let body = body.unwrap_or_default();
            assert_no_leak("upgrade refusal", &body);
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert!(
                v["error"]["code"].is_string(),
                "{code} without a JSON error body: {body:?}"
            );
            code
        }
        Err(e) => panic!("upgrade failed below HTTP: {e}"),
    }
}

/// Sends raw bytes over plain TCP and reads until the server closes (or 5 s pass).
pub async fn raw_http(addr: SocketAddr, req: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A raw `GET path` (sent exactly as given, no normalisation): status and body.
pub async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let resp = raw_http(addr, req.as_bytes()).await;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status for {path}: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (as in JWTs).
pub fn b64url(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url without padding.
pub fn b64url_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| B64.iter().position(|&b| b == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let mut n = 0u32;
        for (i, v) in chunk.iter().enumerate() {
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The hubbub binary as a child process; killed when dropped, even on panic.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Every stdout line after the first.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `hubbub` with `args` (without the program name) and extra environment;
/// returns once it printed `hubbub listening on URL`. A server that prints
/// nothing within `FIRST_LINE` is killed and the test fails (no hang).
pub fn spawn_hubbub(args: &[String], env: &[(&str, &Path)]) -> Proc {
    use std::io::{BufRead, BufReader};
    // Generous: a debug build on a loaded 2-core machine, generating a CA.
    const FIRST_LINE: Duration = Duration::from_secs(60);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CAROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut guard = ChildGuard(Some(cmd.spawn().unwrap()));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    // One thread reads stdout for the child's whole life: the first line goes
    // to `first`, the rest to `lines`, so later prints never hit a closed pipe.
    let (first_tx, first) = std::sync::mpsc::channel();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = first_tx.send(reader.read_line(&mut line).map(|_| line));
        for l in reader.lines() {
            match l {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    // On a panic here `guard` kills the child, which ends the reading thread.
    let line = first
        .recv_timeout(FIRST_LINE)
        .unwrap_or_else(|_| panic!("hubbub printed no address within {FIRST_LINE:?}"))
        .unwrap();
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    Proc {
        child: guard.0.take().unwrap(),
        addr,
        stdout: lines,
    }
}

/// `base_args` for `data` without the program name, with `extra` replacing defaults.
pub fn proc_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base_args_except(data, extra).into_iter().skip(1).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The attributes of the `Set-Cookie` for `name`, without Max-Age/Expires, sorted.
pub fn cookie_attrs(r: &hubbub::client::HttpResponse, name: &str) -> Vec<String> {
    let c = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.set_cookies()));
    let mut attrs: Vec<String> = c
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .filter(|a| {
            let l = a.to_ascii_lowercase();
            !l.starts_with("max-age") && !l.starts_with("expires")
        })
        .collect();
    attrs.sort();
    attrs
}

/// One sample of `/metrics` at `ep`: the value on the line that starts with
/// `series` (exact name and labels as exposed) and a space; `None` when no
/// such line exists. The scrape itself must answer 200.
pub async fn metric_sample(ep: impl Into<Endpoint>, series: &str) -> Option<f64> {
    let r = client::request(ep, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} = {v:?}: {e}"))
        })
}
