//! Security: who may talk to the server. Origin checks on the upgrade, CORS
//! and CSRF on the API, JWT validation, revocation closing sockets (refresh
//! reuse, logout, admin disable), the admin API and CLI, cookie attributes
//! and security headers. Over real TLS unless a test says otherwise.

use crate::support::*;
use hubbub_client::{self as client, Account, Endpoint};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789abcdef";

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

async fn post(
    ep: &Endpoint,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    client::request(ep, "POST", path, headers, body)
        .await
        .unwrap()
}

async fn get(ep: &Endpoint, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    client::request(ep, "GET", path, headers, None)
        .await
        .unwrap()
}

/// Signs up over TLS; returns the account and the user's id.
async fn signup(ep: &Endpoint, username: &str) -> (Account, String) {
    let r = post(
        ep,
        "/api/auth/signup",
        &[],
        Some(&creds(username, PASSWORD)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["user"]["id"].as_str().unwrap().to_owned();
    let acct = Account {
        username: username.to_owned(),
        access: r.cookie("access_token").unwrap(),
        refresh: r.cookie("refresh_token").unwrap(),
    };
    (acct, id)
}

async fn login(ep: &Endpoint, username: &str) -> HttpResponse {
    post(ep, "/api/auth/login", &[], Some(&creds(username, PASSWORD))).await
}

fn account_from(username: &str, r: &HttpResponse) -> Account {
    Account {
        username: username.to_owned(),
        access: r.cookie("access_token").unwrap(),
        refresh: r.cookie("refresh_token").unwrap(),
    }
}

/// `GET /api/me` with a Bearer token: the status.
async fn me_status(ep: &Endpoint, token: &str) -> u16 {
    let b = format!("Bearer {token}");
    let r = get(ep, "/api/me", &[("authorization", &b)]).await;
    if r.status != 200 {
        assert_no_leak("/api/me", &r.body);
    }
    r.status
}

/// An upgrade with a Bearer token: the status (101 when it succeeded).
async fn ws_status(ep: &Endpoint, token: &str) -> u16 {
    let b = format!("Bearer {token}");
    upgrade_status(client::connect(ep, "room=jwt", &[("authorization", &b)]).await)
}

fn now_s() -> u64 {
    now_ms() / 1000
}

fn sign(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims(id: &str, name: &str) -> Value {
    let now = now_s();
    json!({"sub": id, "name": name, "iss": "hubbub", "aud": "hubbub",
           "iat": now, "nbf": now, "exp": now + 600})
}

// --- Origin, CORS, CSRF ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_origin_must_be_this_server_or_allowed() {
    let s = tls_server(&["--allowed-origin", "https://chat.example.com"]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let cookie = alice.cookie_header();
    let port = s.addr.port();
    let status = |origin: String| {
        let (ep, cookie) = (ep.clone(), cookie.clone());
        async move {
            let h = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
            upgrade_status(client::connect(&ep, "room=origin", &h).await)
        }
    };
    for evil in [
        "https://evil.example".to_owned(),
        format!("https://127.0.0.1:{port}.evil.com"),
        format!("https://127.0.0.1:{port}@evil.com"),
        format!("https://evil.com/https://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{}", port.wrapping_add(1)),
        // TLS is on: the same host over plain http is another origin.
        format!("http://127.0.0.1:{port}"),
        "https://chat.example.com.evil.com".to_owned(),
        "https://evilchat.example.com".to_owned(),
        "null".to_owned(),
    ] {
        assert_eq!(status(evil.clone()).await, 403, "origin {evil}");
    }
    assert_eq!(status(format!("https://127.0.0.1:{port}")).await, 101);
    assert_eq!(status("https://chat.example.com".to_owned()).await, 101);
    // No Origin at all (a non-browser client) is fine.
    let h = [("cookie", cookie.as_str())];
    assert_eq!(
        upgrade_status(client::connect(&ep, "room=origin", &h).await),
        101
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_allowed_origins() {
    let s = tls_server(&["--allowed-origin", "https://chat.example.com"]).await;
    let ep = s.endpoint();
    let preflight = |origin: &'static str| {
        let ep = ep.clone();
        async move {
            client::request(
                &ep,
                "OPTIONS",
                "/api/auth/login",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
                None,
            )
            .await
            .unwrap()
        }
    };
    let ok = preflight("https://chat.example.com").await;
    assert_eq!(ok.status, 204, "preflight answers 204: {}", ok.body);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://chat.example.com"
    );
    assert_eq!(ok.headers["access-control-allow-credentials"], "true");
    for evil in ["https://evil.example", "https://chat.example.com.evil.com"] {
        let r = preflight(evil).await;
        assert_eq!(r.status, 403, "preflight from {evil}: {}", r.body);
        for h in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-allow-methods",
        ] {
            assert!(
                !r.headers.contains_key(h),
                "{evil} got {h}: {:?}",
                r.headers
            );
        }
    }
    // Actual requests: CORS headers for the listed origin only, never a wildcard.
    let alice = user_on(&s, &name("alice")).await;
    let b = format!("Bearer {}", alice.access);
    let r = get(
        &ep,
        "/api/me",
        &[
            ("authorization", &b),
            ("origin", "https://chat.example.com"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://chat.example.com"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    let r = get(
        &ep,
        "/api/me",
        &[("authorization", &b), ("origin", "https://evil.example")],
    )
    .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    assert!(!r.headers.contains_key("access-control-allow-credentials"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_before_any_handler() {
    // One login per minute: if the refused requests reached the handler,
    // they would use it up and the real login would get 429.
    let s = tls_server(&["--logins-per-min", "1"]).await;
    let ep = s.endpoint();
    let n = name("alice");
    let (alice, _) = signup(&ep, &n).await;
    let body = creds(&n, PASSWORD);
    for path in ["/api/auth/login", "/api/auth/refresh", "/api/auth/logout"] {
        for evil in ["https://evil.example", "null"] {
            let refresh = format!("refresh_token={}", alice.refresh);
            let r = post(
                &ep,
                path,
                &[("origin", evil), ("cookie", &refresh)],
                Some(&body),
            )
            .await;
            assert_eq!(r.status, 403, "{path} from {evil}: {}", r.body);
            assert_eq!(error_code(&r), "forbidden");
            assert!(r.set_cookies().is_empty(), "{path}: {:?}", r.set_cookies());
        }
    }
    // The refresh token was neither spent nor revoked, and the login limit is untouched.
    let own = format!("https://127.0.0.1:{}", s.addr.port());
    let r = post(&ep, "/api/auth/login", &[("origin", &own)], Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh = format!("refresh_token={}", alice.refresh);
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &refresh)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}

// --- JWT ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_invalid_jwts_are_refused_on_api_and_upgrade() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let (alice, alice_id) = signup(&ep, &name("alice")).await;
    let (_bob, bob_id) = signup(&ep, &name("bob")).await;
    let bob_name = _bob.username.clone();
    let secret = TEST_JWT_SECRET.as_bytes();

    // Controls: the server's own token, and one we mint with its secret, work.
    assert_eq!(me_status(&ep, &alice.access).await, 200);
    let good = sign(
        Algorithm::HS256,
        secret,
        &claims(&alice_id, &alice.username),
    );
    assert_eq!(me_status(&ep, &good).await, 200);
    assert_eq!(ws_status(&ep, &good).await, 101);

    let mut bad: Vec<(&str, String)> = Vec::new();
    // alg: none, no signature.
    let payload = b64url(claims(&alice_id, &alice.username).to_string().as_bytes());
    for h in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        bad.push(("alg none", format!("{}.{payload}.", b64url(h.as_bytes()))));
    }
    // Another key.
    bad.push((
        "wrong key",
        sign(
            Algorithm::HS256,
            b"some-other-secret-some-other-secret-0123",
            &claims(&alice_id, &alice.username),
        ),
    ));
    // Another HMAC algorithm with the right key.
    bad.push((
        "HS512",
        sign(
            Algorithm::HS512,
            secret,
            &claims(&alice_id, &alice.username),
        ),
    ));
    // Alice's real token with the payload changed to say bob (name and id).
    let parts: Vec<&str> = alice.access.split('.').collect();
    let mut p: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    assert_eq!(p["name"], alice.username.as_str(), "{p}");
    p["name"] = json!(bob_name);
    p["sub"] = json!(bob_id);
    bad.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            b64url(p.to_string().as_bytes()),
            parts[2]
        ),
    ));
    // Only the name changed.
    let mut p: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    p["name"] = json!(bob_name);
    bad.push((
        "tampered name",
        format!(
            "{}.{}.{}",
            parts[0],
            b64url(p.to_string().as_bytes()),
            parts[2]
        ),
    ));
    let now = now_s();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&alice_id, &alice.username);
        f(&mut c);
        sign(Algorithm::HS256, secret, &c)
    };
    bad.push((
        "expired",
        with(&|c| {
            c["iat"] = json!(now - 7200);
            c["nbf"] = json!(now - 7200);
            c["exp"] = json!(now - 3600);
        }),
    ));
    bad.push((
        "not yet valid",
        with(&|c| {
            c["nbf"] = json!(now + 3600);
            c["exp"] = json!(now + 7200);
        }),
    ));
    bad.push(("wrong audience", with(&|c| c["aud"] = json!("not-hubbub"))));
    bad.push(("wrong issuer", with(&|c| c["iss"] = json!("evil"))));
    bad.push((
        "no exp",
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    bad.push((
        "no audience",
        with(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    ));
    for (why, token) in &bad {
        assert_eq!(me_status(&ep, token).await, 401, "{why} on /api/me");
        assert_eq!(ws_status(&ep, token).await, 401, "{why} on the upgrade");
        // As a cookie too.
        let c = format!("access_token={token}");
        let r = get(&ep, "/api/me", &[("cookie", &c)]).await;
        assert_eq!(r.status, 401, "{why} as a cookie");
    }
    s.stop().await;
}

// --- Revocation closes sockets -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_reuse_revokes_the_family_and_closes_its_socket() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let n = name("alice");
    let (a1, _) = signup(&ep, &n).await;
    // A second log-in: another family, which must survive.
    let other = account_from(&n, &login(&ep, &n).await);
    let mut ws = join_on(&s, &a1, "fam").await;
    let mut ws_other = join_on(&s, &other, "fam").await;

    let c1 = format!("refresh_token={}", a1.refresh);
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &c1)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r2 = r.cookie("refresh_token").unwrap();
    // Replaying the spent token.
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &c1)], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(ws.expect_close(T).await.unwrap(), Some(1008));
    // The token it was rotated to is revoked too.
    let c2 = format!("refresh_token={r2}");
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &c2)], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // The other family's socket still chats.
    say_saved(&mut ws_other, "still here").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_socket_with_1008() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let (alice, _) = signup(&ep, &name("alice")).await;
    let mut ws = join_on(&s, &alice, "bye").await;
    let c = format!("refresh_token={}", alice.refresh);
    let r = post(&ep, "/api/auth/logout", &[("cookie", &c)], None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(ws.expect_close(T).await.unwrap(), Some(1008));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_disable_closes_every_socket_and_blocks_login() {
    let s = tls_server(&["--admin-token", ADMIN]).await;
    let ep = s.endpoint();
    let n = name("alice");
    let (alice, _) = signup(&ep, &n).await;
    let second = account_from(&n, &login(&ep, &n).await);
    let (bob, _) = signup(&ep, &name("bob")).await;
    let mut w1 = join_on(&s, &alice, "one").await;
    let mut w2 = join_on(&s, &second, "two").await;
    let mut wb = join_on(&s, &bob, "one").await;

    let admin = format!("Bearer {ADMIN}");
    let path = format!("/api/admin/users/{n}/disable");
    let r = post(&ep, &path, &[("authorization", &admin)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(w1.expect_close(T).await.unwrap(), Some(1008));
    assert_eq!(w2.expect_close(T).await.unwrap(), Some(1008));
    say_saved(&mut wb, "bob is unaffected").await;

    assert_eq!(login(&ep, &n).await.status, 401);
    assert_eq!(me_status(&ep, &alice.access).await, 401);
    assert_eq!(ws_status(&ep, &second.access).await, 401);
    let c = format!("refresh_token={}", second.refresh);
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &c)], None).await;
    assert_eq!(r.status, 401, "a disabled user cannot refresh");

    let r = get(&ep, "/api/admin/users", &[("authorization", &admin)]).await;
    assert_eq!(r.status, 200);
    let users = r.json()["users"].as_array().unwrap().clone();
    let a = users.iter().find(|u| u["username"] == n.as_str()).unwrap();
    assert_eq!(a["disabled"], true);

    let path = format!("/api/admin/users/{n}/enable");
    let r = post(&ep, &path, &[("authorization", &admin)], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(login(&ep, &n).await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_token() {
    let s = tls_server(&["--admin-token", ADMIN]).await;
    let ep = s.endpoint();
    let (alice, _) = signup(&ep, &name("alice")).await;
    let user_bearer = format!("Bearer {}", alice.access);
    let wrong = format!("Bearer {ADMIN}x");
    let short = format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]);
    let path = format!("/api/admin/users/{}/disable", alice.username);
    for h in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", short.as_str())],
        vec![("authorization", ADMIN)],
        vec![("authorization", user_bearer.as_str())],
    ] {
        let r = get(&ep, "/api/admin/users", &h).await;
        assert_eq!(r.status, 401, "{h:?}: {}", r.body);
        assert!(!r.body.contains(&alice.username));
        let r = post(&ep, &path, &h, None).await;
        assert_eq!(r.status, 401, "{h:?}: {}", r.body);
    }
    // Nothing was disabled.
    assert_eq!(login(&ep, &alice.username).await.status, 200);
    s.stop().await;

    // Without --admin-token the routes do not exist, whatever is sent.
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let (alice, _) = signup(&ep, &name("alice")).await;
    let path = format!("/api/admin/users/{}/disable", alice.username);
    for h in [
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("authorization", ADMIN)],
    ] {
        assert_eq!(get(&ep, "/api/admin/users", &h).await.status, 404);
        assert_eq!(post(&ep, &path, &h, None).await.status, 404);
    }
    assert_eq!(login(&ep, &alice.username).await.status, 200);
    s.stop().await;
}

/// `hubbub user …` with the binary; stdout, and whether it succeeded.
fn cli(args: &[&str], data: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cli_lists_disables_and_enables_on_a_stopped_server() {
    let data = tempfile::tempdir().unwrap();
    let start = || spawn_hubbub(&proc_args(data.path(), &[]), &[]);
    let p = start();
    let ep = Endpoint::from(p.addr);
    signup(&ep, "cli_alice").await;
    signup(&ep, "cli_bob").await;
    drop(p); // killed and waited: the database lock is free

    let (ok, out) = cli(&["list"], data.path());
    assert!(ok);
    let line = |who: &str| {
        out.lines()
            .find(|l| l.split('\t').next() == Some(who))
            .unwrap_or_else(|| panic!("{who} not listed: {out}"))
            .to_owned()
    };
    assert!(line("cli_alice").ends_with("enabled"), "{out}");
    assert!(line("cli_bob").ends_with("enabled"), "{out}");
    assert!(cli(&["disable", "cli_alice"], data.path()).0);
    let (_, out) = cli(&["list"], data.path());
    assert!(
        out.lines()
            .any(|l| l.starts_with("cli_alice\t") && l.ends_with("\tdisabled")),
        "{out}"
    );
    assert!(!cli(&["disable", "no_such_user"], data.path()).0);
    assert!(!cli(&["disable", "Bad Name"], data.path()).0);

    let p = start();
    let ep = Endpoint::from(p.addr);
    assert_eq!(login(&ep, "cli_alice").await.status, 401);
    assert_eq!(login(&ep, "cli_bob").await.status, 200);
    drop(p);

    assert!(cli(&["enable", "cli_alice"], data.path()).0);
    let p = start();
    let ep = Endpoint::from(p.addr);
    assert_eq!(login(&ep, "cli_alice").await.status, 200);
    drop(p);
}

// --- Cookies and headers ------------------------------------------------------

fn check_cookies(what: &str, r: &HttpResponse) {
    assert_eq!(
        cookie_attrs(r, "access_token"),
        ["HttpOnly", "Path=/", "SameSite=Lax", "Secure"],
        "{what}"
    );
    assert_eq!(
        cookie_attrs(r, "refresh_token"),
        ["HttpOnly", "Path=/api/auth", "SameSite=Strict", "Secure"],
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_have_exactly_the_protocol_attributes_over_tls() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let n = name("alice");
    let r = post(&ep, "/api/auth/signup", &[], Some(&creds(&n, PASSWORD))).await;
    assert_eq!(r.status, 201);
    check_cookies("signup", &r);
    let r = login(&ep, &n).await;
    check_cookies("login", &r);
    let c = format!("refresh_token={}", r.cookie("refresh_token").unwrap());
    let r = post(&ep, "/api/auth/refresh", &[("cookie", &c)], None).await;
    assert_eq!(r.status, 200);
    check_cookies("refresh", &r);
    let c = format!("refresh_token={}", r.cookie("refresh_token").unwrap());
    let r = post(&ep, "/api/auth/logout", &[("cookie", &c)], None).await;
    check_cookies("logout", &r);
    s.stop().await;
}

fn check_security_headers(what: &str, r: &HttpResponse, tls: bool) {
    let h = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let csp = h("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert!(!csp.contains('*'), "{what}: {csp}");
    assert_eq!(
        h("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        h("referrer-policy").as_deref(),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{what}");
    let hsts = h("strict-transport-security");
    if tls {
        let hsts = hsts.unwrap_or_else(|| panic!("{what}: no HSTS over TLS"));
        let age: u64 = hsts
            .split(';')
            .find_map(|p| p.trim().strip_prefix("max-age="))
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        assert!(age >= 86_400, "{what}: {hsts}");
    } else {
        assert!(hsts.is_none(), "{what}: HSTS without TLS: {hsts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_pages_and_api() {
    for tls in [true, false] {
        let s = if tls {
            tls_server(&[]).await
        } else {
            TestServer::start().await
        };
        let ep = s.endpoint();
        let n = name("alice");
        let signup_r = post(&ep, "/api/auth/signup", &[], Some(&creds(&n, PASSWORD))).await;
        assert_eq!(signup_r.status, 201);
        let refresh = format!(
            "refresh_token={}",
            signup_r.cookie("refresh_token").unwrap()
        );
        let mut checks = vec![
            ("GET /", get(&ep, "/", &[]).await),
            ("GET /index.html", get(&ep, "/index.html", &[]).await),
            ("GET /nope (404)", get(&ep, "/nope", &[]).await),
            ("GET /api/me (401)", get(&ep, "/api/me", &[]).await),
            (
                "GET /api/rooms/x/messages (401)",
                get(&ep, "/api/rooms/x/messages", &[]).await,
            ),
            ("POST /api/auth/login", login(&ep, &n).await),
            (
                "POST /api/auth/login (bad)",
                post(&ep, "/api/auth/login", &[], Some("{}")).await,
            ),
            (
                "POST /api/auth/refresh",
                post(&ep, "/api/auth/refresh", &[("cookie", &refresh)], None).await,
            ),
            (
                "POST /api/auth/logout",
                post(&ep, "/api/auth/logout", &[], None).await,
            ),
        ];
        checks.push(("POST /api/auth/signup", signup_r));
        for (what, r) in &checks {
            check_security_headers(what, r, tls);
            if what.contains("/api/auth/") {
                let cc = r
                    .headers
                    .get("cache-control")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert!(cc.contains("no-store"), "{what}: Cache-Control {cc:?}");
            }
        }
        s.stop().await;
    }
}
