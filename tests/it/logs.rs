//! The real binary's logs: no secret ever reaches them, even at `trace`;
//! `--log-format json` writes one JSON object per line, and a session's lines
//! carry its span (session, user, room).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use hubbub_client::{self as client, HttpResponse};
use serde_json::{Value, json};

/// A password nobody would log by accident, so any hit is a real leak.
const SECRET_PASSWORD: &str = "pw-Zebra-Quartz-7731-do-not-log";
const JWT_SECRET: &str = "jwt-secret-Walrus-Tangerine-0042-never-logged";

/// The binary as a process, stdout and stderr in files; killed when dropped.
struct Logged {
    child: Child,
    addr: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(dir: &Path, rust_log: &str, extra: &[&str]) -> Logged {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let stdout = dir.join("stdout.log");
    let stderr = dir.join("stderr.log");
    let mut extra: Vec<&str> = extra.to_vec();
    extra.extend(["--jwt-secret", JWT_SECRET]);
    let child = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(proc_args(&data, &extra))
        .env("RUST_LOG", rust_log)
        .env_remove("HUBBUB_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut p = Logged {
        child,
        addr: "127.0.0.1:1".parse().unwrap(),
        stdout,
        stderr,
    };
    // The announce line may come after log lines: look for it anywhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(&p.stdout).unwrap_or_default();
        if let Some(url) = out
            .lines()
            .find_map(|l| l.strip_prefix("hubbub listening on "))
        {
            p.addr = url.trim().rsplit("://").next().unwrap().parse().unwrap();
            return p;
        }
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "hubbub exited with {status}: {out}\n{}",
                std::fs::read_to_string(&p.stderr).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `hubbub listening on` line: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Logged {
    /// SIGTERM, wait for a clean exit, return everything it wrote (stdout, stderr).
    async fn stop(mut self) -> (String, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::task::block_in_place(|| self.child.wait().unwrap());
        assert!(exit.success(), "exit status {exit:?}");
        (
            std::fs::read_to_string(&self.stdout).unwrap(),
            std::fs::read_to_string(&self.stderr).unwrap(),
        )
    }
}

async fn post(addr: SocketAddr, path: &str, cookie: Option<&str>, body: &str) -> HttpResponse {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    client::request(addr, "POST", path, &headers, Some(body))
        .await
        .unwrap()
}

fn tokens(r: &HttpResponse) -> (String, String) {
    (
        r.cookie("access_token")
            .unwrap_or_else(|| panic!("no access_token: {} {}", r.status, r.body)),
        r.cookie("refresh_token")
            .unwrap_or_else(|| panic!("no refresh_token: {} {}", r.status, r.body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_logged(dir.path(), "trace", &[]);
    let addr = p.addr;
    let user = "logwatcher";
    let body = json!({"username": user, "password": SECRET_PASSWORD}).to_string();
    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), SECRET_PASSWORD.into()),
        ("--jwt-secret".into(), JWT_SECRET.into()),
    ];

    let r = post(addr, "/api/auth/signup", None, &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (a1, r1) = tokens(&r);
    let r = post(addr, "/api/auth/login", None, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (a2, r2) = tokens(&r);
    // A failed login carries a password too.
    let wrong = json!({"username": user, "password": "wrong-Pelican-9981-pass"}).to_string();
    let r = post(addr, "/api/auth/login", None, &wrong).await;
    assert_eq!(r.status, 401, "{}", r.body);
    secrets.push(("wrong password".into(), "wrong-Pelican-9981-pass".into()));

    // WebSocket chat with the login's cookies.
    let acct = client::Account {
        username: user.into(),
        access: a2.clone(),
        refresh: r2.clone(),
    };
    let mut ws = client::join(addr, &acct, "lobby", Some("logs-client"), None)
        .await
        .unwrap();
    ws.expect("history", T).await.unwrap();
    say_saved(&mut ws, "a message that may be logged").await;
    // HTTP with the cookie header and a bearer token.
    let cookie = acct.cookie_header();
    let r = client::request(addr, "GET", "/api/me", &[("cookie", &cookie)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer = format!("Bearer {a2}");
    let r = client::request(addr, "GET", "/api/me", &[("authorization", &bearer)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Refresh, then log out with the rotated tokens.
    let r = post(
        addr,
        "/api/auth/refresh",
        Some(&format!("refresh_token={r2}")),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (a3, r3) = tokens(&r);
    let r = post(
        addr,
        "/api/auth/logout",
        Some(&format!("access_token={a3}; refresh_token={r3}")),
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // The refresh kept the login's family, so this logout revoked the family
    // the socket was opened with: it closes at once with 1008.
    assert_eq!(ws.expect_close(T).await.unwrap(), Some(1008));
    drop(ws);

    for (what, v) in [
        ("signup access token", a1),
        ("signup refresh token", r1),
        ("login access token", a2),
        ("login refresh token", r2),
        ("refreshed access token", a3),
        ("refreshed refresh token", r3),
    ] {
        // A JWT's signature alone is secret enough to look for on its own.
        if let Some(sig) = v.rsplit('.').next().filter(|s| s.len() >= 16 && *s != v) {
            secrets.push((format!("{what} (signature)"), sig.to_owned()));
        }
        secrets.push((what.into(), v));
    }
    secrets.push(("cookie header".into(), cookie));

    let (out, err) = p.stop().await;
    let all = format!("{out}\n{err}");
    // The log really is at trace level (else this test proves nothing).
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "expected trace/debug lines in the log:\n{all}"
    );
    assert!(all.lines().count() > 20, "suspiciously short log:\n{all}");
    for (what, secret) in &secrets {
        if let Some(line) = all.lines().find(|l| l.contains(secret.as_str())) {
            panic!("the log contains the {what}: {line}");
        }
    }
}

/// Lines that are not logs: what `announce` prints on stdout.
fn is_announce(l: &str) -> bool {
    l.starts_with("hubbub listening on ") || l.starts_with("metrics on ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_session_span_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_logged(dir.path(), "hubbub=debug", &["--log-format", "json"]);
    let addr = p.addr;
    let user = "jsonlogger";
    let acct = client::signup_or_login(addr, user, PASSWORD).await.unwrap();
    let mut ws = client::join(addr, &acct, "jsonroom", None, None)
        .await
        .unwrap();
    let welcome = ws.expect("welcome", T).await.unwrap();
    let session = welcome["session"].as_str().unwrap().to_owned();
    ws.expect("history", T).await.unwrap();
    say_saved(&mut ws, "json please").await;
    close_and_wait(ws).await;
    // The session logs `session ended` after its close completes: wait for it
    // in the file rather than racing the shutdown.
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&p.stdout)
        .unwrap_or_default()
        .contains("session ended")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (out, err) = p.stop().await;

    let mut objects = Vec::new();
    for (i, line) in out.lines().chain(err.lines()).enumerate() {
        if line.trim().is_empty() || is_announce(line) {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line {i} is not JSON ({e}): {line:?}"));
        assert!(v.is_object(), "log line {i} is not a JSON object: {line}");
        assert!(v["level"].is_string(), "no level in {line}");
        assert!(v["timestamp"].is_string(), "no timestamp in {line}");
        objects.push(v);
    }
    assert!(
        !objects.is_empty(),
        "no JSON log lines at all:\n{out}\n{err}"
    );

    for msg in ["joined", "session ended"] {
        let line = objects
            .iter()
            .find(|v| v["fields"]["message"] == msg && v["span"]["session"] == session.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "no {msg:?} line in session {session}'s span: {:#?}",
                    objects
                        .iter()
                        .filter(|v| v["fields"]["message"] == msg)
                        .collect::<Vec<_>>()
                )
            });
        assert_eq!(line["span"]["name"], "session", "{line}");
        assert_eq!(line["span"]["user"], user, "{line}");
        assert_eq!(line["span"]["room"], "jsonroom", "{line}");
    }
    let ended = objects
        .iter()
        .find(|v| v["fields"]["message"] == "session ended")
        .unwrap();
    assert_eq!(ended["fields"]["close"], "1000", "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_stderr_and_stdout_starts_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_logged(dir.path(), "debug", &[]);
    let acct = client::signup_or_login(p.addr, "stderrlogger", PASSWORD)
        .await
        .unwrap();
    let mut ws = client::join(p.addr, &acct, "lobby", None, None)
        .await
        .unwrap();
    ws.expect("history", T).await.unwrap();
    close_and_wait(ws).await;
    let (out, err) = p.stop().await;
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.starts_with("hubbub listening on ")),
        "stdout must start with the URL line: {out}"
    );
    let strays: Vec<&str> = out.lines().filter(|l| !is_announce(l)).collect();
    assert!(strays.is_empty(), "log lines on stdout: {strays:#?}");
    assert!(err.contains("DEBUG"), "no debug logs on stderr: {err}");
}
