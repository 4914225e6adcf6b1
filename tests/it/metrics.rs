//! `/metrics` moves when its events happen: every family is scraped before and
//! after a real action over real sockets, and the difference is asserted.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::support::*;
use hubbub_client::{self as client, Account};
use serde_json::json;

/// One scrape: `name{k="v",…}` (labels sorted by name) → value.
#[derive(Debug, Clone)]
struct Scrape(HashMap<String, f64>);

/// The series key for `name` and `labels`, labels sorted by name.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut l: Vec<_> = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Parses the text exposition simply: no escapes in our label values, one
/// sample per line, comments skipped.
fn parse(text: &str) -> Scrape {
    let mut m = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let k = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let labels: Vec<(&str, &str)> = rest
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap();
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                key(name, &labels)
            }
        };
        m.insert(k, value);
    }
    Scrape(m)
}

impl Scrape {
    /// A series' value; 0 when absent (a labelled counter appears on first use).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0
            .keys()
            .any(|k| k == name || k.starts_with(&format!("{name}{{")))
    }
}

async fn scrape_at(addr: SocketAddr) -> Scrape {
    let r = client::request(addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    parse(&r.body)
}

async fn scrape(s: &TestServer) -> Scrape {
    scrape_at(s.addr).await
}

/// Scrapes until `pred` holds (events land asynchronously: a session's end,
/// the hub's turn); panics with the last scrape after a few seconds.
async fn scrape_until(s: &TestServer, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    scrape_until_at(s.addr, what, pred).await
}

/// `scrape_until` on the metrics endpoint at `addr`.
async fn scrape_until_at(addr: SocketAddr, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let m = scrape_at(addr).await;
        if pred(&m) {
            return m;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("metric never moved: {what}\n{:#?}", m.0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `name{labels}` grew by at least `by` over `before`.
async fn grows(
    s: &TestServer,
    before: &Scrape,
    name: &str,
    labels: &[(&str, &str)],
    by: f64,
) -> Scrape {
    let was = before.get(name, labels);
    let what = format!("{} should grow by {by} from {was}", key(name, labels));
    scrape_until(s, &what, |m| m.get(name, labels) >= was + by).await
}

async fn post(
    s: &TestServer,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> client::HttpResponse {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    client::request(s.addr, "POST", path, &headers, Some(body))
        .await
        .unwrap()
}

fn creds(user: &str, password: &str) -> String {
    json!({"username": user, "password": password}).to_string()
}

#[tokio::test]
async fn connections_go_up_then_down_and_upgrades_count_accepted() {
    let s = TestServer::start().await;
    let alice = s.user(&name("conn")).await;
    let before = scrape(&s).await;
    assert_eq!(before.get("hubbub_connections", &[]), 0.0);

    let ws = s.join(&alice, "lobby").await;
    let up = scrape_until(&s, "hubbub_connections == 1", |m| {
        m.get("hubbub_connections", &[]) == 1.0
    })
    .await;
    assert_eq!(
        up.get("hubbub_upgrades_total", &[("result", "accepted")]),
        before.get("hubbub_upgrades_total", &[("result", "accepted")]) + 1.0
    );
    let up = scrape_until(&s, "one active session, one room", |m| {
        m.get("hubbub_sessions", &[("state", "active")]) == 1.0
            && m.get("hubbub_rooms_active", &[]) == 1.0
    })
    .await;
    assert_eq!(up.get("hubbub_sessions", &[("state", "joining")]), 0.0);
    // welcome and history went out.
    assert!(
        up.get("hubbub_frames_out_total", &[("type", "welcome")])
            > before.get("hubbub_frames_out_total", &[("type", "welcome")])
    );
    assert!(
        up.get("hubbub_history_seconds_count", &[("kind", "join")])
            > before.get("hubbub_history_seconds_count", &[("kind", "join")])
    );

    close_and_wait(ws).await;
    let down = scrape_until(&s, "hubbub_connections back to 0", |m| {
        m.get("hubbub_connections", &[]) == 0.0
            && m.get("hubbub_sessions", &[("state", "active")]) == 0.0
    })
    .await;
    assert_eq!(
        down.get("hubbub_closes_total", &[("code", "1000")]),
        before.get("hubbub_closes_total", &[("code", "1000")]) + 1.0,
        "a client close counts as 1000"
    );
    scrape_until(&s, "hubbub_rooms_active back to 0", |m| {
        m.get("hubbub_rooms_active", &[]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn refused_upgrades_count_by_reason() {
    let s = TestServer::start().await;
    let alice = s.user(&name("refused")).await;
    let before = scrape(&s).await;
    let cookie = alice.cookie_header();

    // No token.
    let r = client::connect(s.addr, "room=lobby", &[]).await;
    assert_eq!(upgrade_status(r), 401);
    // A foreign origin (default rules: only the server's own).
    let r = client::connect(
        s.addr,
        "room=lobby",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(upgrade_status(r), 403);
    // An invalid room name.
    let r = client::connect(s.addr, "room=Not%20A%20Room", &[("cookie", &cookie)]).await;
    assert_eq!(upgrade_status(r), 400);

    let after = scrape(&s).await;
    for reason in ["auth", "origin", "room"] {
        assert_eq!(
            after.get("hubbub_upgrades_total", &[("result", reason)]),
            before.get("hubbub_upgrades_total", &[("result", reason)]) + 1.0,
            "hubbub_upgrades_total{{result={reason:?}}}"
        );
    }
    assert_eq!(
        after.get("hubbub_upgrades_total", &[("result", "accepted")]),
        before.get("hubbub_upgrades_total", &[("result", "accepted")])
    );
    assert_eq!(
        after.get(
            "hubbub_http_requests_total",
            &[("route", "ws"), ("class", "4xx")]
        ),
        before.get(
            "hubbub_http_requests_total",
            &[("route", "ws"), ("class", "4xx")]
        ) + 3.0
    );
}

#[tokio::test]
async fn a_chat_moves_frames_deliveries_and_storage() {
    let s = TestServer::start().await;
    let alice = s.user(&name("send")).await;
    let bob = s.user(&name("send")).await;
    let mut a = s.join(&alice, "lobby").await;
    let mut b = s.join(&bob, "lobby").await;
    // Let join noise (presence, system) settle before the baseline, and a
    // first message become durable (its storage metrics land before `saved`).
    let settle = say_saved(&mut a, "settle").await;
    expect_msg(&mut b, settle["id"].as_str().unwrap()).await;
    let before = scrape(&s).await;

    let echo = say_saved(&mut a, "hello metrics").await;
    expect_msg(&mut b, echo["id"].as_str().unwrap()).await;

    let after = grows(&s, &before, "hubbub_deliveries_total", &[], 2.0).await;
    let d =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(d("hubbub_frames_in_total", &[("type", "chat")]), 1.0);
    assert_eq!(
        d("hubbub_frames_out_total", &[("type", "chat")]),
        2.0,
        "echo to the sender and one delivery to bob"
    );
    assert_eq!(d("hubbub_deliveries_total", &[]), 2.0);
    assert_eq!(d("hubbub_messages_stored_total", &[]), 1.0);
    assert!(
        d("hubbub_stored_bytes_total", &[]) >= "hello metrics".len() as f64,
        "stored bytes grew by {}",
        d("hubbub_stored_bytes_total", &[])
    );
    assert_eq!(d("hubbub_send_to_durable_seconds_count", &[]), 1.0);
    assert!(d("hubbub_send_to_durable_seconds_sum", &[]) > 0.0);
    assert!(
        after.get("hubbub_send_to_durable_seconds_bucket", &[("le", "+Inf")])
            == after.get("hubbub_send_to_durable_seconds_count", &[])
    );
    assert!(d("hubbub_storage_batch_size_count", &[]) >= 1.0);
    assert!(d("hubbub_storage_flush_seconds_count", &[]) >= 1.0);
    assert!(d("hubbub_frames_out_total", &[("type", "receipt")]) >= 1.0);
    assert_eq!(after.get("hubbub_storage_errors_total", &[]), 0.0);
    // Queue depths are sampled per scrape and idle now.
    assert_eq!(after.get("hubbub_storage_queue_depth", &[]), 0.0);
    assert_eq!(after.get("hubbub_hub_queue_depth", &[]), 0.0);
}

#[tokio::test]
async fn hub_turns_are_timed() {
    let s = TestServer::start().await;
    let alice = s.user(&name("turn")).await;
    let before = scrape(&s).await;
    let mut a = s.join(&alice, "lobby").await;
    say_saved(&mut a, "tick").await;
    let after = grows(&s, &before, "hubbub_hub_turn_seconds_count", &[], 2.0).await;
    assert!(after.get("hubbub_hub_turn_seconds_sum", &[]) > 0.0);
}

#[tokio::test]
async fn error_frames_count_by_code() {
    let s = TestServer::start().await;
    let alice = s.user(&name("err")).await;
    let mut a = s.join(&alice, "lobby").await;
    let before = scrape(&s).await;
    a.send_text("this is not json".into()).await.unwrap();
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "bad_request");
    let after = grows(
        &s,
        &before,
        "hubbub_errors_sent_total",
        &[("code", "bad_request")],
        1.0,
    )
    .await;
    assert_eq!(
        after.get("hubbub_errors_sent_total", &[("code", "bad_request")]),
        before.get("hubbub_errors_sent_total", &[("code", "bad_request")]) + 1.0
    );
    assert_eq!(
        after.get("hubbub_frames_in_total", &[("type", "invalid")]),
        before.get("hubbub_frames_in_total", &[("type", "invalid")]) + 1.0
    );
    assert_eq!(
        after.get("hubbub_frames_out_total", &[("type", "error")]),
        before.get("hubbub_frames_out_total", &[("type", "error")]) + 1.0
    );
}

#[tokio::test]
async fn rate_limited_frames_are_counted() {
    let s = TestServer::start_with(&["--msgs-per-sec", "1", "--burst", "1"]).await;
    let alice = s.user(&name("rate")).await;
    let mut a = s.join(&alice, "lobby").await;
    let before = scrape(&s).await;
    for i in 0..5 {
        say(&mut a, &format!("flood {i}")).await;
    }
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "rate_limited");
    let after = grows(&s, &before, "hubbub_rate_limited_frames_total", &[], 1.0).await;
    assert!(
        after.get("hubbub_errors_sent_total", &[("code", "rate_limited")])
            >= before.get("hubbub_errors_sent_total", &[("code", "rate_limited")]) + 1.0
    );
    // Each of the 5 frames is counted exactly once: as a received chat or as
    // dropped (a dropped frame also counted as a chat would make this 6+).
    let counted = |m: &Scrape| {
        let limited = m.get("hubbub_rate_limited_frames_total", &[])
            - before.get("hubbub_rate_limited_frames_total", &[]);
        let chats = m.get("hubbub_frames_in_total", &[("type", "chat")])
            - before.get("hubbub_frames_in_total", &[("type", "chat")]);
        (limited, chats)
    };
    let m = scrape_until(&s, "all 5 frames counted", |m| {
        let (l, c) = counted(m);
        l + c >= 5.0
    })
    .await;
    let (limited, chats) = counted(&m);
    assert_eq!(limited + chats, 5.0, "limited {limited} + chats {chats}");
    assert!(
        limited >= 1.0 && chats >= 1.0,
        "limited {limited}, chats {chats}"
    );
}

#[tokio::test]
async fn replaced_sessions_count_as_evictions_and_closes() {
    let s = TestServer::start().await;
    let alice = s.user(&name("evict")).await;
    let before = scrape(&s).await;
    let mut first = client::join(s.addr, &alice, "lobby", Some("laptop"), None)
        .await
        .unwrap();
    first.expect("history", T).await.unwrap();
    let mut second = client::join(s.addr, &alice, "lobby", Some("laptop"), None)
        .await
        .unwrap();
    second.expect("history", T).await.unwrap();
    assert_eq!(first.expect_close(T).await.unwrap(), Some(4001));

    let after = grows(&s, &before, "hubbub_closes_total", &[("code", "4001")], 1.0).await;
    assert_eq!(
        after.get("hubbub_evictions_total", &[("reason", "replaced")]),
        before.get("hubbub_evictions_total", &[("reason", "replaced")]) + 1.0
    );
    assert_eq!(
        after.get("hubbub_closes_total", &[("code", "4001")]),
        before.get("hubbub_closes_total", &[("code", "4001")]) + 1.0
    );
    scrape_until(&s, "one connection left", |m| {
        m.get("hubbub_connections", &[]) == 1.0
    })
    .await;
}

#[tokio::test]
async fn auth_counters_move() {
    let s = TestServer::start().await;
    let user = name("authm");
    let before = scrape(&s).await;

    let r = post(&s, "/api/auth/signup", None, &creds(&user, PASSWORD)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(&s, "/api/auth/login", None, &creds(&user, PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first_refresh = r.cookie("refresh_token").unwrap();
    let r = post(
        &s,
        "/api/auth/login",
        None,
        &creds(&user, "wrong password!!"),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);

    let cookie = format!("refresh_token={first_refresh}");
    let r = post(&s, "/api/auth/refresh", Some(&cookie), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The spent token again: reuse, the family is revoked.
    let r = post(&s, "/api/auth/refresh", Some(&cookie), "").await;
    assert_eq!(r.status, 401, "{}", r.body);

    let after = scrape(&s).await;
    let d =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(d("hubbub_signups_total", &[]), 1.0);
    assert_eq!(d("hubbub_logins_total", &[("result", "ok")]), 1.0);
    assert_eq!(d("hubbub_logins_total", &[("result", "failed")]), 1.0);
    assert_eq!(d("hubbub_refreshes_total", &[("result", "ok")]), 1.0);
    assert_eq!(d("hubbub_refreshes_total", &[("result", "failed")]), 1.0);
    assert_eq!(d("hubbub_refresh_reuse_total", &[]), 1.0);
    assert_eq!(
        d(
            "hubbub_http_requests_total",
            &[("route", "signup"), ("class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        d(
            "hubbub_http_requests_total",
            &[("route", "login"), ("class", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        d(
            "hubbub_http_requests_total",
            &[("route", "refresh"), ("class", "2xx")]
        ),
        1.0
    );
}

#[tokio::test]
async fn http_requests_count_by_route_and_class() {
    let s = TestServer::start().await;
    let before = scrape(&s).await;
    let addr = s.addr;
    let get = |path: &'static str| async move {
        client::request(addr, "GET", path, &[], None)
            .await
            .unwrap()
            .status
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/api/nothing-here").await, 404);
    assert_eq!(get("/api/me").await, 401);
    let after = scrape(&s).await;
    let d = |route: &str, class: &str| {
        after.get(
            "hubbub_http_requests_total",
            &[("route", route), ("class", class)],
        ) - before.get(
            "hubbub_http_requests_total",
            &[("route", route), ("class", class)],
        )
    };
    assert_eq!(d("healthz", "2xx"), 2.0);
    assert_eq!(d("api_other", "4xx"), 1.0);
    assert_eq!(d("me", "4xx"), 1.0);
    // The first scrape itself was counted (the second is counted after it renders).
    assert!(d("metrics", "2xx") >= 1.0);
}

#[tokio::test]
async fn process_metrics_are_present_and_nonzero() {
    let s = TestServer::start().await;
    // Some CPU work first (argon2 on sign-up).
    let _acct: Account = s.user(&name("proc")).await;
    let m = scrape(&s).await;
    for name in [
        "hubbub_process_resident_memory_bytes",
        "hubbub_process_open_fds",
        "hubbub_process_cpu_seconds_total",
    ] {
        assert!(m.has(name), "{name} missing");
        assert!(m.get(name, &[]) > 0.0, "{name} is {}", m.get(name, &[]));
    }
    assert!(m.get("hubbub_process_resident_memory_bytes", &[]) > 1_000_000.0);
    let build =
        m.0.iter()
            .find(|(k, _)| k.starts_with("hubbub_build_info{version="))
            .map(|(_, v)| *v);
    assert_eq!(build, Some(1.0), "hubbub_build_info");
    // Every family is exposed from the start, even before it moves.
    for name in [
        "hubbub_connections",
        "hubbub_sessions",
        "hubbub_rooms_active",
        "hubbub_frames_in_total",
        "hubbub_frames_out_total",
        "hubbub_deliveries_total",
        "hubbub_rate_limited_frames_total",
        "hubbub_storage_queue_depth",
        "hubbub_storage_batch_size_count",
        "hubbub_storage_flush_seconds_count",
        "hubbub_send_to_durable_seconds_count",
        "hubbub_messages_stored_total",
        "hubbub_stored_bytes_total",
        "hubbub_storage_errors_total",
        "hubbub_hub_queue_depth",
        "hubbub_hub_turn_seconds_count",
        "hubbub_signups_total",
        "hubbub_refresh_reuse_total",
    ] {
        assert!(m.has(name), "{name} missing from a fresh server");
    }
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_port_only() {
    // Port 0: the server binds it and says where (`Running::metrics_addr`,
    // also printed at start), so no free port is probed and raced for.
    let s = TestServer::start_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let maddr: SocketAddr = s
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("Running::metrics_addr");
    assert!(maddr.ip().is_loopback() && maddr.port() != 0, "{maddr}");
    assert_ne!(maddr, s.addr, "the metrics port is a port of its own");

    // The server's own registry, not an empty one: both families are there
    // (the events reaching it are checked at the end).
    let m = scrape_at(maddr).await;
    for family in [
        "hubbub_connections",
        "hubbub_upgrades_total",
        "hubbub_frames_in_total",
    ] {
        assert!(m.has(family), "{family} missing on the metrics port");
    }
    let r = client::request(maddr, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Nothing else on the metrics port.
    let r = client::request(maddr, "GET", "/api/me", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);

    let r = client::request(s.addr, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(
        r.status, 404,
        "main port must not serve /metrics: {}",
        r.body
    );
    assert!(!r.body.contains("hubbub_connections"));
    // The metrics port sees what happens on the main port.
    let alice = s.user(&name("ml")).await;
    let _ws = s.join(&alice, "lobby").await;
    let m = scrape_at(maddr).await;
    assert_eq!(m.get("hubbub_signups_total", &[]), 1.0);
    assert_eq!(m.get("hubbub_connections", &[]), 1.0);
}

#[tokio::test]
async fn readyz_is_200_when_running() {
    let s = TestServer::start().await;
    let r = client::request(s.addr, "GET", "/readyz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client::request(s.addr, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let m = scrape(&s).await;
    assert_eq!(
        m.get(
            "hubbub_http_requests_total",
            &[("route", "readyz"), ("class", "2xx")]
        ),
        1.0
    );
}
