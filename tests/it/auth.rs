//! The HTTP API: sign-up, log-in, cookies, refresh rotation with reuse
//! detection, log-out, Bearer auth, the upgrade's checks, JSON errors.

use crate::support::*;
use hubbub_client::{self as client, Account, ConnectError};
use serde_json::{Value, json};

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

async fn post(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    client::request(s.addr, "POST", path, headers, body)
        .await
        .unwrap()
}

async fn refresh_with(s: &TestServer, token: &str) -> HttpResponse {
    let c = format!("refresh_token={token}");
    post(s, "/api/auth/refresh", &[("cookie", &c)], None).await
}

async fn me_with(s: &TestServer, headers: &[(&str, &str)]) -> HttpResponse {
    client::request(s.addr, "GET", "/api/me", headers, None)
        .await
        .unwrap()
}

fn check_session_cookies(r: &HttpResponse) {
    assert_eq!(
        cookie_attrs(r, "access_token"),
        ["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]
    );
    assert_eq!(
        cookie_attrs(r, "refresh_token"),
        ["HttpOnly", "Path=/api/auth", "SameSite=Strict", "Secure"]
    );
    let access = r.cookie("access_token").unwrap();
    assert_eq!(access.split('.').count(), 3, "a JWT: {access}");
    let refresh = r.cookie("refresh_token").unwrap();
    assert!(!refresh.is_empty());
}

fn check_user(v: &Value, username: &str) {
    let u = &v["user"];
    assert_eq!(u["username"], username, "{v}");
    assert!(u["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let created = u["created_at"].as_str().unwrap();
    let ms = ts_ms(created).unwrap_or_else(|| panic!("created_at format: {created}"));
    assert!(ms.abs_diff(now_ms()) < 120_000, "{created}");
}

fn account(username: &str, r: &HttpResponse) -> Account {
    Account {
        username: username.to_owned(),
        access: r.cookie("access_token").unwrap(),
        refresh: r.cookie("refresh_token").unwrap(),
    }
}

#[tokio::test]
async fn signup_login_me() {
    let s = TestServer::start().await;
    let n = name("alice");
    let r = post(&s, "/api/auth/signup", &[], Some(&creds(&n, PASSWORD))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    check_session_cookies(&r);
    check_user(&r.json(), &n);
    let id = r.json()["user"]["id"].clone();
    let acct = account(&n, &r);

    let me = http(&s, "GET", "/api/me", Some(&acct), None).await;
    assert_eq!(me.status, 200);
    check_user(&me.json(), &n);
    assert_eq!(me.json()["user"]["id"], id);

    // Taken.
    let r = post(
        &s,
        "/api/auth/signup",
        &[],
        Some(&creds(&n, "another password")),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(error_code(&r), "conflict");
    assert!(r.set_cookies().is_empty());

    // Log-in.
    let r = post(&s, "/api/auth/login", &[], Some(&creds(&n, PASSWORD))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    check_session_cookies(&r);
    check_user(&r.json(), &n);
    assert_eq!(r.json()["user"]["id"], id);
    let acct2 = account(&n, &r);
    let me = http(&s, "GET", "/api/me", Some(&acct2), None).await;
    assert_eq!(me.status, 200);

    // Wrong password and unknown user: 401, same body.
    let wrong = post(
        &s,
        "/api/auth/login",
        &[],
        Some(&creds(&n, "not the password")),
    )
    .await;
    let unknown = post(
        &s,
        "/api/auth/login",
        &[],
        Some(&creds("no_such_user_here", PASSWORD)),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.body, unknown.body, "identical bodies");
    assert_eq!(error_code(&wrong), "unauthorized");
    assert!(wrong.cookie("access_token").is_none_or(|v| v.is_empty()));
    s.stop().await;
}

#[tokio::test]
async fn signup_validation() {
    let s = TestServer::start().await;
    let good = PASSWORD;
    let bad: Vec<(String, &str)> = vec![
        (creds("ab", good), "short name"),
        (creds(&"a".repeat(33), good), "long name"),
        (creds("Alice", good), "upper case"),
        (creds("al ice", good), "space"),
        (creds("al-ice", good), "dash"),
        (creds("élodie", good), "non-ascii"),
        (creds(&name("pw"), "1234567"), "7-byte password"),
        (creds(&name("pw"), &"p".repeat(129)), "129-byte password"),
        (creds(&name("pw"), ""), "empty password"),
        ("not json".to_owned(), "not JSON"),
        ("{}".to_owned(), "empty object"),
        (json!({"username": name("x")}).to_string(), "no password"),
        (json!({"password": good}).to_string(), "no username"),
        (
            json!({"username": 5, "password": good}).to_string(),
            "number name",
        ),
        (
            json!({"username": name("x"), "password": 12345678}).to_string(),
            "number password",
        ),
    ];
    for (body, why) in &bad {
        let r = post(&s, "/api/auth/signup", &[], Some(body)).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
        assert_eq!(error_code(&r), "bad_request", "{why}");
        assert!(r.set_cookies().is_empty(), "{why}");
    }
    // The bounds themselves are fine: 3 and 32 chars; 8 and 128 bytes (multi-byte counts bytes).
    for (u, p) in [
        ("a_1".to_owned(), "12345678".to_owned()),
        ("z".repeat(32), "p".repeat(128)),
        (name("utf8"), "éééé".to_owned()),
    ] {
        let r = post(&s, "/api/auth/signup", &[], Some(&creds(&u, &p))).await;
        assert_eq!(r.status, 201, "{u} / {p}: {}", r.body);
        let r = post(&s, "/api/auth/login", &[], Some(&creds(&u, &p))).await;
        assert_eq!(r.status, 200);
    }
    // 4 two-byte characters = 8 bytes is fine, 3 and a half is not.
    let r = post(
        &s,
        "/api/auth/signup",
        &[],
        Some(&creds(&name("utf8"), "ééé1")),
    )
    .await;
    assert_eq!(r.status, 400, "7 bytes: {}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn me_needs_a_valid_token() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    for headers in [
        vec![],
        vec![("cookie", "access_token=garbage".to_owned())],
        vec![("authorization", "Bearer garbage".to_owned())],
        vec![("authorization", format!("Bearer {}x", alice.access))],
        // A refresh token is not an access token.
        vec![("authorization", format!("Bearer {}", alice.refresh))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = me_with(&s, &h).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert_eq!(error_code(&r), "unauthorized");
    }
    let bearer = format!("Bearer {}", alice.access);
    let r = me_with(&s, &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["username"], alice.username.as_str());
    let cookie = format!("access_token={}", alice.access);
    let r = me_with(&s, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let r1 = alice.refresh.clone();

    let r = refresh_with(&s, &r1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    check_session_cookies(&r);
    let r2 = r.cookie("refresh_token").unwrap();
    let a2 = r.cookie("access_token").unwrap();
    assert_ne!(r2, r1);
    let bearer = format!("Bearer {a2}");
    assert_eq!(me_with(&s, &[("authorization", &bearer)]).await.status, 200);

    // r2 works once.
    let r = refresh_with(&s, &r2).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r3 = r.cookie("refresh_token").unwrap();
    // Reusing r2: 401, and the family (r3 with it) is revoked.
    let r = refresh_with(&s, &r2).await;
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthorized");
    let r = refresh_with(&s, &r3).await;
    assert_eq!(r.status, 401, "the family must be revoked: {}", r.body);

    // Another log-in is another family, unaffected.
    let r = post(
        &s,
        "/api/auth/login",
        &[],
        Some(&creds(&alice.username, PASSWORD)),
    )
    .await;
    let other = r.cookie("refresh_token").unwrap();
    let r = refresh_with(&s, &other).await;
    assert_eq!(r.status, 200);

    // Without a token, or with garbage: 401.
    let r = post(&s, "/api/auth/refresh", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthorized");
    assert_eq!(refresh_with(&s, "garbage").await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn reusing_the_first_token_revokes_its_successor() {
    let s = TestServer::start().await;
    let bob = s.user(&name("bob")).await;
    let r = refresh_with(&s, &bob.refresh).await;
    assert_eq!(r.status, 200);
    let r2 = r.cookie("refresh_token").unwrap();
    assert_eq!(refresh_with(&s, &bob.refresh).await.status, 401);
    assert_eq!(refresh_with(&s, &r2).await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_refresh_token_and_clears_cookies() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let c = format!("refresh_token={}", alice.refresh);
    let r = post(&s, "/api/auth/logout", &[("cookie", &c)], None).await;
    assert_eq!(r.status, 204, "logout answers 204: {}", r.body);
    for name in ["access_token", "refresh_token"] {
        let set = r
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("logout must clear {name}"));
        let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let l = set.to_ascii_lowercase();
        assert!(
            value.is_empty() && (l.contains("max-age=0") || l.contains("expires=thu, 01 jan 1970")),
            "{set}"
        );
    }
    let r = refresh_with(&s, &alice.refresh).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Logging out again (or without a token) does no harm.
    let r = post(&s, "/api/auth/logout", &[], None).await;
    assert_eq!(
        r.status, 204,
        "logout without a token answers 204 too: {}",
        r.body
    );
    s.stop().await;
}

#[tokio::test]
async fn upgrade_checks_happen_before_the_handshake() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let cookie = alice.cookie_header();
    let status = |r: Result<hubbub_client::WsClient, ConnectError>| match r {
        Ok(_) => 101,
        Err(ConnectError::Status(code, body)) => {
            let v: Value =
                serde_json::from_str(body.as_deref().unwrap_or("")).unwrap_or(Value::Null);
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{code} without a JSON error body: {body:?}"
            );
            code
        }
        Err(e) => panic!("{e}"),
    };
    let c: &[(&str, &str)] = &[("cookie", &cookie)];
    assert_eq!(status(client::connect(s.addr, "room=x", &[]).await), 401);
    assert_eq!(
        status(client::connect(s.addr, "room=x", &[("cookie", "access_token=nope")]).await),
        401
    );
    for q in [
        "room=Bad",
        "room=-x",
        "room=a%20b",
        &format!("room={}", "r".repeat(33)),
    ] {
        assert_eq!(status(client::connect(s.addr, q, c).await), 400, "{q}");
    }
    for q in [
        "client=a.b",
        "client=a%20b",
        &format!("client={}", "c".repeat(65)),
    ] {
        assert_eq!(status(client::connect(s.addr, q, c).await), 400, "{q}");
    }
    let evil = [
        ("cookie", cookie.as_str()),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(status(client::connect(s.addr, "room=x", &evil).await), 403);
    let port = s.addr.port();
    let tricky = format!("http://127.0.0.1:{port}.evil.example");
    let h = [("cookie", cookie.as_str()), ("origin", tricky.as_str())];
    assert_eq!(status(client::connect(s.addr, "room=x", &h).await), 403);

    // Same origin is accepted.
    let own = format!("http://127.0.0.1:{port}");
    let h = [("cookie", cookie.as_str()), ("origin", own.as_str())];
    let mut ws = client::connect(s.addr, "room=x&client=ok-1", &h)
        .await
        .unwrap();
    assert_eq!(ws.expect("welcome", T).await.unwrap()["client"], "ok-1");
    // So is Bearer instead of a cookie.
    let bearer = format!("Bearer {}", alice.access);
    let mut ws = client::connect(s.addr, "room=x", &[("authorization", &bearer)])
        .await
        .unwrap();
    let w = ws.expect("welcome", T).await.unwrap();
    assert_eq!(w["user"], alice.username.as_str());
    ws.expect("history", T).await.unwrap();
    say_saved(&mut ws, "bearer works").await;
    s.stop().await;
}

#[tokio::test]
async fn allowed_origin_flag_admits_exactly_that_origin() {
    let s = TestServer::start_with(&["--allowed-origin", "https://chat.example.com"]).await;
    let alice = s.user(&name("alice")).await;
    let cookie = alice.cookie_header();
    let ok = [
        ("cookie", cookie.as_str()),
        ("origin", "https://chat.example.com"),
    ];
    let mut ws = client::connect(s.addr, "room=x", &ok).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    for bad in [
        "https://chat.example.com.evil.example",
        "http://chat.example.com",
        "https://evil.example",
    ] {
        let h = [("cookie", cookie.as_str()), ("origin", bad)];
        match client::connect(s.addr, "room=x", &h).await {
            Err(ConnectError::Status(403, _)) => {}
            Err(e) => panic!("{bad}: {e}"),
            Ok(_) => panic!("{bad} was accepted"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json_errors() {
    let s = TestServer::start().await;
    let r = client::request(s.addr, "GET", "/api/nope", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "not_found");
    let r = client::request(s.addr, "GET", "/no/such/page", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "not_found");
    // A GET on a POST-only route is an error too, as JSON.
    let r = client::request(s.addr, "GET", "/api/auth/login", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(error_code(&r), "method_not_allowed");
    let r = client::request(s.addr, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = client::request(s.addr, "GET", "/readyz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    s.stop().await;
}
