//! Security: refresh tokens as a resource. Rotation is rate limited per
//! client address, and a background purge deletes the rows that can never
//! matter again (expired tokens, tokens of revoked families, old revocation
//! markers) while keeping what reuse detection and revocation still need.

use std::time::Duration;

use crate::support::*;
use hubbub::storage::Store;
use hubbub_client::{self as client, Account, Endpoint};
use serde_json::json;

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

/// `POST /api/auth/refresh` with `token` as the cookie, plus `headers`.
async fn refresh(ep: &Endpoint, token: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let cookie = format!("refresh_token={token}");
    let mut h = vec![("cookie", cookie.as_str())];
    h.extend_from_slice(headers);
    client::request(ep, "POST", "/api/auth/refresh", &h, None)
        .await
        .unwrap()
}

async fn login(ep: &Endpoint, user: &str) -> Account {
    let r = client::request(
        ep,
        "POST",
        "/api/auth/login",
        &[],
        Some(&creds(user, PASSWORD)),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    account(user, &r)
}

fn account(user: &str, r: &HttpResponse) -> Account {
    Account {
        username: user.into(),
        access: r.cookie("access_token").unwrap(),
        refresh: r.cookie("refresh_token").unwrap(),
    }
}

/// The value of the metric line starting with `series ` (name and labels).
async fn metric(ep: &Endpoint, series: &str) -> u64 {
    metric_sample(ep, series)
        .await
        .unwrap_or_else(|| panic!("no {series} in /metrics")) as u64
}

fn rows(table: &str) -> String {
    format!("hubbub_refresh_token_rows{{table=\"{table}\"}}")
}

fn purged(table: &str) -> String {
    format!("hubbub_refresh_tokens_purged_total{{table=\"{table}\"}}")
}

/// Polls `/metrics` until `series` reads `want` (30 s at most).
async fn wait_metric(ep: &Endpoint, series: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = metric(ep, series).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows in the refresh-token and family tables of a stopped server's data directory.
fn table_rows(dir: &tempfile::TempDir) -> (usize, usize) {
    let store = reopen(|| Store::open(&dir.path().join("db"), 8 << 20));
    store.refresh_rows()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_rate_limited_per_client_address() {
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--refreshes-per-min",
        "3",
    ])
    .await;
    let ep = s.endpoint();
    let mut token = s.user(&name("alice")).await.refresh;
    let a = [("x-forwarded-for", "198.51.100.1")];
    for i in 0..3 {
        let r = refresh(&ep, &token, &a).await;
        assert_eq!(r.status, 200, "refresh {i}: {}", r.body);
        token = r.cookie("refresh_token").unwrap();
    }
    let r = refresh(&ep, &token, &a).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(error_code(&r), "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    // The refused request did not spend the token: another address may use it.
    let r = refresh(&ep, &token, &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_refresh_rows_are_purged() {
    // Tokens live 8 s: each step below that needs a live token comes right
    // after the request that made it.
    let s = TestServer::start_with(&["--refresh-ttl-secs", "8"]).await;
    let ep = s.endpoint();
    let alice = name("alice");
    s.user(&alice).await; // a session that simply expires
    let one = login(&ep, &alice).await;
    let r = refresh(&ep, &one.refresh, &[]).await; // `one` spent, a successor stored
    assert_eq!(r.status, 200, "{}", r.body);
    let r = refresh(&ep, &one.refresh, &[]).await; // reuse: that family is revoked
    assert_eq!(r.status, 401, "{}", r.body);
    let two = login(&ep, &alice).await;
    let cookie = format!("refresh_token={}", two.refresh);
    let r = client::request(
        &ep,
        "POST",
        "/api/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.body); // `two`'s family revoked
    let dir = s.stop().await;
    assert_eq!(table_rows(&dir), (4, 2), "tokens, revoked families");

    // Restarted with a purge every second and short lifetimes (a marker
    // stays for the longest lifetime plus 10 s): the tokens go once expired
    // or revoked, the markers once every token they could refuse has expired.
    let s = TestServer::start_in(
        dir,
        &[
            "--refresh-ttl-secs",
            "1",
            "--access-ttl-secs",
            "1",
            "--refresh-purge-secs",
            "1",
        ],
    )
    .await;
    let ep = s.endpoint();
    wait_metric(&ep, &purged("tokens"), 4).await;
    wait_metric(&ep, &purged("families"), 2).await;
    assert_eq!(metric(&ep, &rows("tokens")).await, 0);
    assert_eq!(metric(&ep, &rows("families")).await, 0);
    let dir = s.stop().await;
    assert_eq!(table_rows(&dir), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_keeps_what_reuse_detection_and_revocation_need() {
    let s = TestServer::start_with(&["--refresh-purge-secs", "1"]).await;
    let ep = s.endpoint();
    let alice = name("alice");
    let first = s.user(&alice).await;
    let stolen = login(&ep, &alice).await;
    let r = refresh(&ep, &stolen.refresh, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let successor = account(&alice, &r);
    // A purge has counted all three rows (one spent) and deleted none.
    wait_metric(&ep, &rows("tokens"), 3).await;
    assert_eq!(metric(&ep, &purged("tokens")).await, 0);

    // The spent token is still known: replaying it is reuse, and revokes the family.
    let r = refresh(&ep, &stolen.refresh, &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(metric(&ep, "hubbub_refresh_reuse_total").await, 1);
    assert_eq!(refresh(&ep, &successor.refresh, &[]).await.status, 401);

    // The revoked family's tokens go; its marker stays and still refuses
    // the family's unexpired access token; the other session lives on.
    wait_metric(&ep, &rows("tokens"), 1).await;
    assert_eq!(metric(&ep, &rows("families")).await, 1);
    let bearer = format!("Bearer {}", successor.access);
    let me = client::request(&ep, "GET", "/api/me", &[("authorization", &bearer)], None)
        .await
        .unwrap();
    assert_eq!(me.status, 401, "{}", me.body);
    let r = refresh(&ep, &first.refresh, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}
