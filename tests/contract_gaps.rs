//! Black-box tests for parts of the wire contract (docs/PROTOCOL.md, "What
//! hubbub chose") that no other test file pins down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hubbub::client;
use serde_json::{Value, json};

/// `access_expires_at` of a body: a `ts` within 2 s of now + `ttl_secs`.
fn assert_expiry(what: &str, body: &Value, ttl_secs: u64) {
    let raw = body["access_expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no access_expires_at string in {body}"));
    let at = ts_ms(raw).unwrap_or_else(|| panic!("{what}: not a ts: {raw:?}"));
    let want = now_ms() + ttl_secs * 1000;
    assert!(
        at.abs_diff(want) <= 2000,
        "{what}: access_expires_at {raw} is {} ms from now + {ttl_secs} s",
        at as i64 - want as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_expires_at_is_now_plus_access_ttl_in_every_auth_body() {
    // Not the default (900 s), so a hard-coded lifetime would show.
    let ttl = 600;
    let s = TestServer::start_with(&["--access-ttl-secs", "600"]).await;
    let n = name("alice");
    let creds = json!({"username": n, "password": PASSWORD}).to_string();

    let r = client::request(s.addr, "POST", "/api/auth/signup", &[], Some(&creds))
        .await
        .unwrap();
    assert!(r.status == 200 || r.status == 201, "signup: {}", r.body);
    assert_expiry("signup", &r.json(), ttl);

    let r = client::request(s.addr, "POST", "/api/auth/login", &[], Some(&creds))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "login: {}", r.body);
    assert_expiry("login", &r.json(), ttl);
    let refresh = r.cookie("refresh_token").unwrap();

    let cookie = format!("refresh_token={refresh}");
    let r = client::request(
        s.addr,
        "POST",
        "/api/auth/refresh",
        &[("cookie", &cookie)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "refresh: {}", r.body);
    assert_expiry("refresh", &r.json(), ttl);
    let access = r.cookie("access_token").unwrap();

    let cookie = format!("access_token={access}");
    let r = client::request(s.addr, "GET", "/api/me", &[("cookie", &cookie)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "me: {}", r.body);
    assert_expiry("me", &r.json(), ttl);
    s.stop().await;
}

/// True when a `Set-Cookie` value clears its cookie: an empty value and
/// `Max-Age=0` (or less) or an `Expires` in 1970.
fn clears(set_cookie: &str) -> bool {
    let empty = set_cookie
        .split(';')
        .next()
        .is_some_and(|kv| kv.split_once('=').is_some_and(|(_, v)| v.trim().is_empty()));
    empty
        && set_cookie.split(';').skip(1).any(|a| {
        let a = a.trim();
        let l = a.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("max-age=") {
            return v.trim().parse::<i64>().is_ok_and(|n| n <= 0);
        }
        // An Expires date in the past: hubbub has no clock-skew reason to use
        // anything but the epoch, so only 1970 is accepted here.
        if let Some(v) = l.strip_prefix("expires=") {
            return v.contains("1970");
        }
        false
    })
}

fn assert_both_cleared(what: &str, r: &HttpResponse) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert_eq!(error_code(r), "unauthorized", "{what}");
    let set = r.set_cookies();
    for name in ["access_token", "refresh_token"] {
        let c = set
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{what}: no Set-Cookie for {name} in {set:?}"));
        assert!(clears(c), "{what}: {name} not cleared: {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_is_401_and_clears_both_cookies() {
    let s = TestServer::start().await;
    let acct = s.user(&name("alice")).await;
    let post = |token: String| async move {
        let cookie = format!("refresh_token={token}");
        client::request(
            s.addr,
            "POST",
            "/api/auth/refresh",
            &[("cookie", &cookie)],
            None,
        )
        .await
        .unwrap()
    };

    let r = post("garbage-not-a-token".into()).await;
    assert_both_cleared("garbage token", &r);

    // Spend the real token once, then present it again.
    let r = post(acct.refresh.clone()).await;
    assert_eq!(r.status, 200, "first use: {}", r.body);
    let r = post(acct.refresh.clone()).await;
    assert_both_cleared("spent token", &r);
    s.stop().await;
}
