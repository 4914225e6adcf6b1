//! A real hubbub in this process on 127.0.0.1:0 with sled in a temp dir, and
//! logged-in users on it (plain or TLS).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubbub::config::Config;
use hubbub::server::{self, Running};
use hubbub_client::{self as client, Account, Endpoint, WsClient};

pub const T: Duration = Duration::from_secs(5);
pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub addr: SocketAddr,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
}

/// Flags every test server gets, except those in `extra` (the test gives them
/// itself): plain HTTP, limits high enough for many users from 127.0.0.1, a
/// temp data dir. The first item is the program name.
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

/// The JWT secret `base_args_except` gives every test server.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

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

/// Opens a stopped server's database from the test. sled lets go of its file
/// lock a moment after the last handle drops (its I/O threads finish their
/// writes), so, like the server's own `open_store`, this retries for a while.
pub fn reopen<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(x) => return x,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("could not reopen the database: {e:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
