//! Security: whose budget a request uses. Behind a trusted proxy
//! (`--trusted-proxy`) each forwarded client gets its own limits, keyed by
//! the rightmost untrusted hop; headers from any other peer are ignored; IPv6
//! clients are keyed by /64; a password guesser cannot lock the owner out.
//! Plain HTTP, as behind a TLS-terminating proxy.

use crate::support::*;
use hubbub_client::{self as client, Endpoint};
use serde_json::json;

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

/// A log-in attempt for `user` as a request carrying `headers`.
async fn login_via(ep: &Endpoint, headers: &[(&str, &str)], user: &str, pw: &str) -> u16 {
    let r = client::request(
        ep,
        "POST",
        "/api/auth/login",
        headers,
        Some(&creds(user, pw)),
    )
    .await
    .unwrap();
    if r.status == 429 {
        assert_eq!(error_code(&r), "rate_limited");
        assert!(r.headers.contains_key("retry-after"), "no Retry-After");
    }
    r.status
}

/// A log-in of an unknown user with `X-Forwarded-For: xff`: 401, or 429 once limited.
async fn attempt_xff(ep: &Endpoint, xff: &str) -> u16 {
    login_via(ep, &[("x-forwarded-for", xff)], &name("nobody"), PASSWORD).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_untrusted_peers_are_ignored() {
    // No trusted proxy at all, and one that is not the peer (127.0.0.1).
    for extra in [&[][..], &["--trusted-proxy", "10.0.0.0/8"][..]] {
        let mut args = vec!["--logins-per-min", "2"];
        args.extend_from_slice(extra);
        let s = TestServer::start_with(&args).await;
        let ep = s.endpoint();
        assert_eq!(attempt_xff(&ep, "198.51.100.1").await, 401);
        let fwd = [("forwarded", "for=198.51.100.2")];
        assert_eq!(login_via(&ep, &fwd, &name("x"), PASSWORD).await, 401);
        // A third "client" is the same peer: the budget of 2 is spent.
        assert_eq!(attempt_xff(&ep, "198.51.100.3").await, 429, "{extra:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forwarded_client_gets_its_own_login_budget() {
    let s =
        TestServer::start_with(&["--trusted-proxy", "127.0.0.1/32", "--logins-per-min", "2"]).await;
    let ep = s.endpoint();
    let alice = name("alice");
    s.user(&alice).await;
    for _ in 0..2 {
        assert_eq!(attempt_xff(&ep, "198.51.100.1").await, 401);
    }
    assert_eq!(attempt_xff(&ep, "198.51.100.1").await, 429);
    // Another client behind the same proxy still logs in.
    let b = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(login_via(&ep, &b, &alice, PASSWORD).await, 200);
    // `Forwarded: for=` names a client too (RFC 7239, quoted, with a port).
    let c = [("forwarded", "for=\"198.51.100.3:4711\";proto=https")];
    for _ in 0..2 {
        assert_eq!(login_via(&ep, &c, &alice, PASSWORD).await, 200);
    }
    assert_eq!(login_via(&ep, &c, &alice, PASSWORD).await, 429);
    // The proxy's own requests (no header) have their own budget.
    assert_eq!(login_via(&ep, &[], &alice, PASSWORD).await, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_hop_left_of_the_real_one_does_not_help() {
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32,10.0.0.0/8",
        "--logins-per-min",
        "3",
    ])
    .await;
    let ep = s.endpoint();
    // The client writes anything on the left; our proxy appends what it saw.
    assert_eq!(attempt_xff(&ep, "1.1.1.1, 198.51.100.9").await, 401);
    assert_eq!(attempt_xff(&ep, "2.2.2.2, 198.51.100.9").await, 401);
    // Through a second trusted proxy (10.x) it is still the same client.
    assert_eq!(
        attempt_xff(&ep, "3.3.3.3, 198.51.100.9, 10.0.0.7").await,
        401
    );
    assert_eq!(attempt_xff(&ep, "4.4.4.4, 198.51.100.9").await, 429);
    assert_eq!(attempt_xff(&ep, "198.51.100.10").await, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_budget_per_slash_64() {
    let s =
        TestServer::start_with(&["--trusted-proxy", "127.0.0.1/32", "--logins-per-min", "2"]).await;
    let ep = s.endpoint();
    assert_eq!(attempt_xff(&ep, "2001:db8:1:2::1").await, 401);
    assert_eq!(attempt_xff(&ep, "[2001:db8:1:2:ffff::77]:443").await, 401);
    // Rotating through the /64 gives no fresh budget; the next /64 has its own.
    assert_eq!(attempt_xff(&ep, "2001:db8:1:2:abcd::9").await, 429);
    assert_eq!(attempt_xff(&ep, "2001:db8:1:3::1").await, 401);
    // An IPv4-mapped IPv6 address is its IPv4 address.
    assert_eq!(attempt_xff(&ep, "198.51.100.20").await, 401);
    assert_eq!(attempt_xff(&ep, "::ffff:198.51.100.20").await, 401);
    assert_eq!(attempt_xff(&ep, "198.51.100.20").await, 429);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forwarding_from_a_trusted_proxy_counts_as_the_proxy() {
    let s =
        TestServer::start_with(&["--trusted-proxy", "127.0.0.1/32", "--logins-per-min", "2"]).await;
    let ep = s.endpoint();
    assert_eq!(attempt_xff(&ep, "not-an-address").await, 401);
    let fwd = [("forwarded", "for=unknown")];
    assert_eq!(login_via(&ep, &fwd, &name("x"), PASSWORD).await, 401);
    // Both fell back to the peer (127.0.0.1), whose budget is now spent; so
    // does a list whose hop on the way to the client is garbage (a client
    // address left of it is not believed).
    assert_eq!(attempt_xff(&ep, "198.51.100.7, junk").await, 429);
    assert_eq!(login_via(&ep, &[], &name("x"), PASSWORD).await, 429);
    assert_eq!(attempt_xff(&ep, "198.51.100.1").await, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_cannot_lock_the_owner_out() {
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--logins-per-user-per-min",
        "3",
    ])
    .await;
    let ep = s.endpoint();
    let bob = name("bob");
    s.user(&bob).await;
    let guesser = [("x-forwarded-for", "203.0.113.66")];
    for i in 0..3 {
        let pw = format!("guess {i}!");
        assert_eq!(login_via(&ep, &guesser, &bob, &pw).await, 401);
    }
    // The guesser is limited, even with the right password...
    assert_eq!(login_via(&ep, &guesser, &bob, PASSWORD).await, 429);
    // ...while bob, from elsewhere, gets in.
    let home = [("x-forwarded-for", "198.51.100.5")];
    assert_eq!(login_via(&ep, &home, &bob, PASSWORD).await, 200);
    // And the guesser is still limited afterwards.
    assert_eq!(login_via(&ep, &guesser, &bob, "another guess").await, 429);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_from_many_addresses_meets_the_global_per_username_limit() {
    // Per (user, address) 1/min; per user from anywhere 10 times that.
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--logins-per-user-per-min",
        "1",
    ])
    .await;
    let ep = s.endpoint();
    let carol = name("carol");
    s.user(&carol).await;
    for i in 0..10 {
        let xff = format!("203.0.113.{i}");
        let h = [("x-forwarded-for", xff.as_str())];
        assert_eq!(
            login_via(&ep, &h, &carol, "wrong password").await,
            401,
            "{i}"
        );
    }
    let h = [("x-forwarded-for", "203.0.113.200")];
    assert_eq!(login_via(&ep, &h, &carol, "wrong password").await, 429);
    // Other accounts are not affected.
    let dave = name("dave");
    s.user(&dave).await;
    assert_eq!(login_via(&ep, &h, &dave, PASSWORD).await, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_per_address_count_forwarded_clients() {
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--max-connections-per-address",
        "1",
    ])
    .await;
    let ep = s.endpoint();
    let alice = s.user(&name("alice")).await;
    let cookie = alice.cookie_header();
    let open = |xff: &'static str| {
        let (ep, cookie) = (ep.clone(), cookie.clone());
        async move {
            let h = [("cookie", cookie.as_str()), ("x-forwarded-for", xff)];
            client::connect(&ep, "room=caps", &h).await
        }
    };
    let mut first = open("198.51.100.1").await.unwrap();
    first.expect("welcome", T).await.unwrap();
    assert_eq!(upgrade_status(open("198.51.100.1").await), 429);
    let mut other = open("198.51.100.2").await.unwrap();
    other.expect("welcome", T).await.unwrap();
    s.stop().await;
}

/// A trusted proxy's one address stands for every client behind it: the
/// per-address cap on open HTTP connections does not apply to it (the total
/// cap still does), while an untrusted address is still capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_not_held_to_the_per_address_http_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(&[
        "--trusted-proxy",
        "127.0.0.1/32",
        "--max-http-connections-per-address",
        "2",
        "--request-timeout-secs",
        "60",
    ])
    .await;
    // Held idle connections from the proxy, twice the per-address cap.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    // The proxy can still forward a request on a fifth connection.
    let mut fifth = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr
    );
    fifth.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(T, fifth.read_to_string(&mut resp))
        .await
        .expect("the proxy's fifth connection got no answer")
        .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "the proxy's fifth connection was refused: {resp:?}"
    );
    drop(held);
    s.stop().await;

    // Without --trusted-proxy the same address is capped at two.
    let s = TestServer::start_with(&[
        "--max-http-connections-per-address",
        "2",
        "--request-timeout-secs",
        "60",
    ])
    .await;
    let _held = [
        tokio::net::TcpStream::connect(s.addr).await.unwrap(),
        tokio::net::TcpStream::connect(s.addr).await.unwrap(),
    ];
    let mut third = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(T, third.read(&mut buf))
        .await
        .expect("the third connection was neither answered nor closed");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "an untrusted address got past the per-address cap"
    );
    s.stop().await;
}
