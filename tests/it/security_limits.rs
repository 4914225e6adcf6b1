//! Security: abuse limits. Log-in guessing per username and per address,
//! sign-ups per address, upgrade floods, connection caps per address and in
//! total, oversized bodies and frames. Over real TLS.

use crate::support::*;
use hubbub_client::{self as client, Endpoint, Incoming};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

async fn post(ep: &Endpoint, path: &str, body: &str) -> HttpResponse {
    client::request(ep, "POST", path, &[], Some(body))
        .await
        .unwrap()
}

/// A 429 with `Retry-After` in whole seconds (1..=60 for per-minute limits).
fn assert_limited(what: &str, r: &HttpResponse) {
    assert_eq!(r.status, 429, "{what}: {}", r.body);
    assert_eq!(error_code(r), "rate_limited", "{what}");
    assert_no_leak(what, &r.body);
    let ra = r
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .to_str()
        .unwrap();
    let secs: u64 = ra
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {ra:?} is not whole seconds"));
    assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
    assert!(r.set_cookies().is_empty(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_guessing_is_limited_per_username() {
    let s = tls_server(&["--logins-per-user-per-min", "3"]).await;
    let ep = s.endpoint();
    let victim = name("victim");
    let other = name("other");
    user_on(&s, &victim).await;
    user_on(&s, &other).await;
    for i in 0..3 {
        let r = post(
            &ep,
            "/api/auth/login",
            &creds(&victim, &format!("guess {i}!")),
        )
        .await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    // The 4th attempt is refused, even with the right password.
    let r = post(&ep, "/api/auth/login", &creds(&victim, PASSWORD)).await;
    assert_limited("4th attempt for one user", &r);
    // Upper case does not make it another user.
    let r = post(
        &ep,
        "/api/auth/login",
        &creds(&victim.to_uppercase(), PASSWORD),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    // Another user from the same address is not affected.
    let r = post(&ep, "/api/auth/login", &creds(&other, PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_limited_per_address() {
    let s = tls_server(&["--logins-per-min", "3"]).await;
    let ep = s.endpoint();
    let alice = name("alice");
    user_on(&s, &alice).await;
    for i in 0..3 {
        let r = post(&ep, "/api/auth/login", &creds(&name("nobody"), PASSWORD)).await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    // Different usernames do not help, and neither does the right password.
    let r = post(&ep, "/api/auth/login", &creds(&alice, PASSWORD)).await;
    assert_limited("4th log-in from one address", &r);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_are_limited_per_address() {
    let s = tls_server(&["--signups-per-min", "2"]).await;
    let ep = s.endpoint();
    for _ in 0..2 {
        let r = post(&ep, "/api/auth/signup", &creds(&name("new"), PASSWORD)).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let n = name("new");
    let r = post(&ep, "/api/auth/signup", &creds(&n, PASSWORD)).await;
    assert_limited("3rd sign-up", &r);
    // Nothing was created.
    let r = post(&ep, "/api/auth/login", &creds(&n, PASSWORD)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_flood_from_one_address_gets_429() {
    let s = tls_server(&["--upgrades-per-min", "5"]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let cookie = alice.cookie_header();
    let h = [("cookie", cookie.as_str())];
    let mut open = Vec::new();
    for i in 0..5 {
        let mut ws = client::connect(&ep, "room=flood", &h)
            .await
            .unwrap_or_else(|e| panic!("upgrade {i}: {e}"));
        ws.expect("welcome", T).await.unwrap();
        open.push(ws);
    }
    match client::connect(&ep, "room=flood", &h).await {
        Err(client::ConnectError::Status(429, body)) => {
            let body = body.unwrap_or_default();
            assert_no_leak("upgrade flood", &body);
            assert!(body.contains("rate_limited"), "{body}");
        }
        Err(e) => panic!("6th upgrade: {e}"),
        Ok(_) => panic!("6th upgrade within a minute was accepted"),
    }
    // The refusal carries Retry-After: ask with a plain request for its headers.
    let r = client::request(&ep, "GET", "/ws?room=flood", &[("cookie", &cookie)], None)
        .await
        .unwrap();
    assert_limited("upgrade flood", &r);
    // Closing sockets does not give the budget back.
    drop(open);
    assert_eq!(
        upgrade_status(client::connect(&ep, "room=flood", &h).await),
        429
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let s = tls_server(&["--max-connections-per-address", "2"]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let bob = user_on(&s, &name("bob")).await;
    let w1 = join_on(&s, &alice, "cap").await;
    let _w2 = join_on(&s, &bob, "cap").await;
    let c = alice.cookie_header();
    let r = client::connect(&ep, "room=cap", &[("cookie", &c)]).await;
    assert_eq!(upgrade_status(r), 429, "third socket from one address");
    // A closed socket frees its place.
    close_and_wait(w1).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match client::connect(&ep, "room=cap", &[("cookie", &c)]).await {
            Ok(_) => break,
            Err(client::ConnectError::Status(429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after a close: {e}"),
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections_are_capped() {
    let s = tls_server(&["--max-connections", "2"]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let bob = user_on(&s, &name("bob")).await;
    let _w1 = join_on(&s, &alice, "full").await;
    let _w2 = join_on(&s, &bob, "full").await;
    let c = bob.cookie_header();
    let r = client::connect(&ep, "room=full", &[("cookie", &c)]).await;
    assert_eq!(upgrade_status(r), 503, "third socket on a full server");
    // HTTP still works while the socket cap is reached.
    let r = client::request(&ep, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_api_bodies_get_413() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let big = json!({"username": "big_body", "password": "x".repeat(16 * 1024)}).to_string();
    assert!(big.len() > 16 * 1024);
    for path in ["/api/auth/signup", "/api/auth/login"] {
        let c = alice.cookie_header();
        let r = client::request(&ep, "POST", path, &[("cookie", &c)], Some(&big))
            .await
            .unwrap();
        assert_eq!(r.status, 413, "{path}: {}", r.body);
        assert_eq!(error_code(&r), "too_large", "{path}");
        assert!(r.set_cookies().is_empty(), "{path}");
        assert_no_leak(path, &r.body);
    }
    // One byte over the limit is refused; at the limit the body is read (and judged).
    let pad = |n: usize| {
        let base = json!({"username": "edge_case", "password": PASSWORD, "p": ""}).to_string();
        json!({"username": "edge_case", "password": PASSWORD, "p": "x".repeat(n - base.len())})
            .to_string()
    };
    let at = pad(16 * 1024);
    assert_eq!(at.len(), 16 * 1024);
    let r = post(&ep, "/api/auth/signup", &pad(16 * 1024 + 1)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = post(&ep, "/api/auth/signup", &at).await;
    assert_eq!(r.status, 201, "16 KiB exactly: {}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_on_every_api_route() {
    let s = tls_server(&["--admin-token", "admin-token-0123456789abcdef"]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let big = "x".repeat(16 * 1024 + 1);
    let c = alice.cookie_header();
    let mut accepted = Vec::new();
    for path in [
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/admin/users/nobody_here/disable",
    ] {
        let r = client::request(
            &ep,
            "POST",
            path,
            &[
                ("cookie", &c),
                ("authorization", "Bearer admin-token-0123456789abcdef"),
            ],
            Some(&big),
        )
        .await
        .unwrap();
        if r.status != 413 {
            accepted.push(format!("{path}: {} {}", r.status, r.body));
        }
    }
    assert!(
        accepted.is_empty(),
        "bodies over 16 KiB not refused: {accepted:#?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_1009() {
    let s = tls_server(&[]).await;
    let alice = user_on(&s, &name("alice")).await;
    let mut ws = join_on(&s, &alice, "big").await;
    // Just under the limit is fine (content too long is an error frame, not a close).
    let id = uuid();
    let near = json!({"type": "chat", "id": id, "content": "y".repeat(8000)}).to_string();
    assert!(near.len() < 8192);
    ws.send_text(near).await.unwrap();
    let e = expect_error(&mut ws).await;
    assert_eq!(e["code"], "too_large", "{e}");
    // Over 8 KiB: closed with 1009.
    let big = json!({"type": "chat", "id": uuid(), "content": "z".repeat(9000)}).to_string();
    ws.send_text(big).await.unwrap();
    assert_eq!(ws.expect_close(T).await.unwrap(), Some(1009));

    // A binary frame closes with 1003.
    let mut ws = join_on(&s, &alice, "big").await;
    ws.send_raw(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    loop {
        match ws.recv(T).await {
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(c)) => {
                assert_eq!(c, Some(1003));
                break;
            }
            None => panic!("binary frame did not close the socket"),
        }
    }
    s.stop().await;
}
