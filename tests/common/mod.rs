//! Test harness: a real hubbub on 127.0.0.1:0 with sled in a temp dir, and
//! logged-in WebSocket clients. No mocks: everything goes over real sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubbub::client::{self, Account, WsClient};
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

/// Flags every test server gets, before the test's own.
pub fn base_args(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "hubbub",
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "test-node",
        "--jwt-secret",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("test-secret-test-secret-test-secret-0123".into());
    v.push("--data-dir".into());
    v.push(data.display().to_string());
    v.push("--msgs-per-sec".into());
    v.push("1000".into());
    v.push("--burst".into());
    v.push("1000".into());
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
        let mut args = base_args(dir.path());
        args.extend(extra.iter().map(|s| s.to_string()));
        let cfg = Config::from_args(args).unwrap();
        let running = server::start(cfg).await.unwrap();
        TestServer {
            addr: running.addr,
            running: Some(running),
            dir,
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
