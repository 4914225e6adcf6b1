//! Security: hostile input. Error bodies never leak internals; static files
//! never escape web/; names with control characters, look-alikes, header
//! injection or excess length are refused and nothing is stored; markup in
//! messages comes back byte-for-byte as inert JSON text.

use crate::support::*;
use hubbub_client::{self as client, Endpoint};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789abcdef";

/// method, path, headers, body
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Option<String>);

fn creds(username: &str, password: &str) -> String {
    json!({"username": username, "password": password}).to_string()
}

async fn req(
    ep: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    client::request(ep, method, path, headers, body)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_response_leaks_internal_detail() {
    let s = tls_server(&["--admin-token", ADMIN]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let c = alice.cookie_header();
    let c = c.as_str();
    let admin = format!("Bearer {ADMIN}");
    let long_token = format!("Bearer {}", "a".repeat(6000));
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<Case> = vec![
        ("POST", "/api/auth/signup", vec![], Some("not json".into())),
        (
            "POST",
            "/api/auth/signup",
            vec![],
            Some("{\"username\":".into()),
        ),
        ("POST", "/api/auth/signup", vec![], Some(String::new())),
        ("POST", "/api/auth/signup", vec![], Some(nested.clone())),
        (
            "POST",
            "/api/auth/signup",
            vec![],
            Some(r#"{"username":["x"],"password":{"a":1}}"#.into()),
        ),
        (
            "POST",
            "/api/auth/signup",
            vec![],
            Some(creds(&alice.username, PASSWORD)),
        ),
        (
            "POST",
            "/api/auth/signup",
            vec![],
            Some(creds("x\u{0}y", PASSWORD)),
        ),
        ("POST", "/api/auth/signup", vec![], Some("x".repeat(20_000))),
        (
            "POST",
            "/api/auth/login",
            vec![],
            Some(creds("nobody_here", PASSWORD)),
        ),
        ("POST", "/api/auth/login", vec![], Some("[]".into())),
        ("POST", "/api/auth/refresh", vec![], None),
        (
            "POST",
            "/api/auth/refresh",
            vec![("cookie", "refresh_token=%00%ff")],
            None,
        ),
        (
            "GET",
            "/api/me",
            vec![("authorization", "Bearer x.y.z")],
            None,
        ),
        ("GET", "/api/me", vec![("authorization", &long_token)], None),
        ("GET", "/api/me", vec![("cookie", "access_token=..")], None),
        ("GET", "/api/rooms/Bad/messages", vec![("cookie", c)], None),
        (
            "GET",
            "/api/rooms/x/messages?before=zzz",
            vec![("cookie", c)],
            None,
        ),
        (
            "GET",
            "/api/rooms/x/messages?before=fffffffffffffffffffffffffffffffg",
            vec![("cookie", c)],
            None,
        ),
        (
            "GET",
            "/api/rooms/x/messages?limit=abc",
            vec![("cookie", c)],
            None,
        ),
        (
            "GET",
            "/api/rooms/x/messages?limit=99999999999999999999999",
            vec![("cookie", c)],
            None,
        ),
        (
            "GET",
            "/api/rooms/x/messages?limit=-1",
            vec![("cookie", c)],
            None,
        ),
        ("PUT", "/api/auth/login", vec![], Some("{}".into())),
        ("DELETE", "/api/me", vec![("cookie", c)], None),
        ("GET", "/api/nope", vec![], None),
        ("GET", "/nope/nope", vec![], None),
        ("GET", "/ws", vec![("cookie", c)], None),
        ("GET", "/ws?room=%ff", vec![("cookie", c)], None),
        ("GET", "/ws?client=%00", vec![("cookie", c)], None),
        ("GET", "/api/admin/users", vec![], None),
        (
            "POST",
            "/api/admin/users/Bad%20Name/disable",
            vec![("authorization", &admin)],
            None,
        ),
        (
            "POST",
            "/api/admin/users/nobody_here/disable",
            vec![("authorization", &admin)],
            None,
        ),
        (
            "POST",
            "/api/admin/users/nobody_here/explode",
            vec![("authorization", &admin)],
            None,
        ),
    ];
    for (method, path, headers, body) in &cases {
        let r = req(&ep, method, path, headers, body.as_deref()).await;
        let what = format!("{method} {path}");
        assert!(
            r.status >= 400,
            "{what}: expected an error, got {}",
            r.status
        );
        assert!(r.status < 500, "{what}: {} {}", r.status, r.body);
        assert_no_leak(&what, &r.body);
        error_code(&r);
        assert!(
            r.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: {:?}",
            r.headers.get("content-type")
        );
    }

    // Error frames on a socket.
    let mut ws = join_on(&s, &alice, "errs").await;
    let frames = [
        "not json".to_owned(),
        "{\"type\":\"nope\"}".to_owned(),
        "{\"type\":\"chat\",\"id\":\"not-a-uuid\",\"content\":\"x\"}".to_owned(),
        json!({"type":"chat","id":uuid(),"content":"x".repeat(4001)}).to_string(),
        json!({"type":"chat","id":uuid(),"content":"/nope"}).to_string(),
        json!({"type":"private","id":uuid(),"target":"nobody_here","content":"x"}).to_string(),
        json!({"type":"history","before":"zz","after":"yy"}).to_string(),
        json!({"type":"ack","ids":[1,2,3],"status":"seen"}).to_string(),
        format!("{}{}", "[".repeat(3000), "]".repeat(3000)),
    ];
    for f in &frames {
        ws.send_text(f.clone()).await.unwrap();
        let e = expect_error(&mut ws).await;
        assert_no_leak(&format!("error frame for {f:.40}"), &e.to_string());
    }

    // `before` and `after` together are bad_request even when both are valid
    // cursors with a message between them (garbage cursors fail for another reason).
    let mut cursors = Vec::new();
    for i in 0..3 {
        let echo = say_saved(&mut ws, &format!("cursor {i}")).await;
        cursors.push(echo["cursor"].as_str().unwrap().to_owned());
    }
    let f = json!({"type":"history","after":cursors[0],"before":cursors[2],"req":"both"});
    ws.send_json(&f).await.unwrap();
    let answer = expect_where(&mut ws, "history or error", |v| {
        v["type"] == "history" || v["type"] == "error"
    })
    .await;
    assert_eq!(answer["type"], "error", "{f} got {answer}");
    assert_eq!(answer["code"], "bad_request", "{f} got {answer}");
    assert_no_leak("error frame for before+after", &answer.to_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_malformed_requests_get_clean_answers() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let host = addr.to_string();
    let bodies: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n").into_bytes(),
        // Invalid UTF-8 in a JSON body.
        {
            let body: &[u8] = b"{\"username\":\"\xff\xfe\",\"password\":\"12345678\"}";
            let mut v = format!(
                "POST /api/auth/signup HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            v.extend_from_slice(body);
            v
        },
        // Chunked body over the limit, without Content-Length.
        {
            let mut v = format!(
                "POST /api/auth/signup HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            for _ in 0..20 {
                v.extend_from_slice(b"400\r\n");
                v.extend_from_slice(&[b'x'; 0x400]);
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            v
        },
    ];
    for b in &bodies {
        let resp = raw_http(addr, b).await;
        let what = String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned();
        assert!(resp.starts_with("HTTP/1.1 4"), "{what}: {resp:.200}");
        assert_no_leak(&what, &resp);
    }
    s.stop().await;
}

#[tokio::test]
async fn static_files_never_escape_the_web_dir() {
    let s = TestServer::start().await;
    // Controls: the web UI is served, and these files do exist outside web/.
    let (st, body) = raw_get(s.addr, "/index.html").await;
    assert_eq!(st, 200);
    assert!(body.to_ascii_lowercase().contains("<html"), "{body:.200}");
    assert!(std::path::Path::new("Cargo.toml").is_file());
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%2FCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/..%5cCargo.toml",
        "/.%2e/Cargo.toml",
        "/web/../../etc/passwd",
        "/web/..%2f..%2fetc%2fpasswd",
        "/index.html/../../Cargo.toml",
        "/./../Cargo.toml",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%252e%252e/Cargo.toml",
        "/..%c0%afCargo.toml",
        "/%2fetc%2fpasswd",
        "//etc/passwd",
        "/../src/main.rs",
        "/..\\Cargo.toml",
    ] {
        let (st, body) = raw_get(s.addr, path).await;
        assert!(st == 404 || st == 400, "{path}: {st} {body:.200}");
        assert!(!body.contains("[package]"), "{path} served Cargo.toml");
        assert!(!body.contains("root:"), "{path} served /etc/passwd");
        assert!(!body.contains("fn main"), "{path} served source");
        assert_no_leak(path, &body);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_usernames_are_refused_and_nothing_is_stored() {
    let s = tls_server(&["--admin-token", ADMIN]).await;
    let ep = s.endpoint();
    let alice = name("alice");
    user_on(&s, &alice).await;
    let lookalike = alice.replacen('a', "\u{0430}", 1); // Cyrillic а
    let bad = [
        lookalike.clone(),
        "b\u{043e}b_lookalike".to_owned(), // Cyrillic о
        "ｆｕｌｌｗｉｄｔｈ".to_owned(),
        format!("{alice}\u{200b}"),
        format!("\u{202e}{alice}"),
        "ctl\u{0}name".to_owned(),
        "ctl\u{7}name".to_owned(),
        "tab\tname".to_owned(),
        "crlf\r\nname".to_owned(),
        "evil\r\nSet-Cookie: injected=1".to_owned(),
        "evil\nX-Injected: 1".to_owned(),
        "u".repeat(33),
        "u".repeat(5000),
        "../../etc".to_owned(),
        "<script>".to_owned(),
    ];
    for n in &bad {
        let r = req(
            &ep,
            "POST",
            "/api/auth/signup",
            &[],
            Some(&creds(n, PASSWORD)),
        )
        .await;
        assert_eq!(r.status, 400, "{n:?}: {}", r.body);
        assert_eq!(error_code(&r), "bad_request", "{n:?}");
        assert!(r.set_cookies().is_empty(), "{n:?}");
        assert!(!r.headers.contains_key("x-injected"), "{n:?}");
        let r = req(
            &ep,
            "POST",
            "/api/auth/login",
            &[],
            Some(&creds(n, PASSWORD)),
        )
        .await;
        assert_ne!(r.status, 200, "{n:?} logged in");
        assert!(r.set_cookies().is_empty(), "{n:?}");
        assert!(!r.headers.contains_key("x-injected"), "{n:?}");
    }
    // Through the admin URL too.
    let admin = format!("Bearer {ADMIN}");
    for enc in [
        "%D0%B0lice",
        "ali%0D%0Ace",
        "ali%00ce",
        "Alice",
        "%2e%2e",
        &"u".repeat(33),
    ] {
        let r = req(
            &ep,
            "POST",
            &format!("/api/admin/users/{enc}/disable"),
            &[("authorization", &admin)],
            None,
        )
        .await;
        assert!(
            r.status == 400 || r.status == 404,
            "{enc}: {} {}",
            r.status,
            r.body
        );
    }
    // Exactly one account exists, unchanged.
    let r = req(
        &ep,
        "GET",
        "/api/admin/users",
        &[("authorization", &admin)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let users: Vec<String> = r.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, std::slice::from_ref(&alice));
    assert_eq!(r.json()["users"][0]["disabled"], false);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_room_names_are_refused() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let cookie = alice.cookie_header();
    let rooms = [
        "a%0D%0Ab",
        "lobby%0D%0ASet-Cookie:%20injected=1",
        "%00x",
        "lob%07by",
        "lob%09by",
        "%D0%B0lobby", // Cyrillic а + "lobby"
        "l%D0%BEbby",  // Cyrillic о
        "%E2%80%AElobby",
        "lobby%E2%80%8B",
        "Lobby",
        "%20lobby",
        "..",
        "%2e%2e",
        "a%2Fb",
        "-lobby",
        "_lobby",
        &"r".repeat(33),
        &"r".repeat(3000),
    ];
    for room in rooms {
        let r = client::connect(&ep, &format!("room={room}"), &[("cookie", &cookie)]).await;
        assert_eq!(upgrade_status(r), 400, "upgrade to room {room:.40}");
        let r = req(
            &ep,
            "GET",
            &format!("/api/rooms/{room}/messages"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
        assert!(
            r.status == 400 || r.status == 404,
            "history of {room:.40}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.headers.contains_key("injected"));
        assert_no_leak(room, &r.body);
    }
    // The valid neighbour is untouched: empty, and joinable.
    let r = req(
        &ep,
        "GET",
        "/api/rooms/lobby/messages",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"], json!([]));
    let mut ws = join_on(&s, &alice, "lobby").await;
    say_saved(&mut ws, "hello").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_messages_is_stored_and_returned_byte_for_byte() {
    let s = tls_server(&[]).await;
    let ep = s.endpoint();
    let alice = user_on(&s, &name("alice")).await;
    let bob = user_on(&s, &name("bob")).await;
    let mut wa = join_on(&s, &alice, "xss").await;
    let mut wb = join_on(&s, &bob, "xss").await;
    let payloads = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<img src=\"x\" onerror=\"alert(document.cookie)\">",
        "\"><svg/onload=alert(1)>",
        "</script><script>alert(1)</script>",
        "javascript:alert(1)",
        "{{constructor.constructor('alert(1)')()}}",
        "&lt;b&gt; &amp; &#60;script&#62; \\u003cscript\\u003e",
        "line\u{2028}sep\u{2029}end \u{0}nul",
        "<a href=\"javascript:alert(1)\">x</a> 'single' \"double\" `back`",
    ];
    let mut ids = Vec::new();
    for p in payloads {
        let id = say(&mut wa, p).await;
        let echo = expect_msg(&mut wa, &id).await;
        assert_eq!(echo["content"].as_str(), Some(p), "echo of {p:?}");
        let seen = expect_msg(&mut wb, &id).await;
        assert_eq!(seen["content"].as_str(), Some(p), "delivery of {p:?}");
        expect_receipt(&mut wa, &id, "saved").await;
        ids.push(id);
    }
    // Over HTTP: JSON, nosniff, the same strings.
    let r = req(
        &ep,
        "GET",
        "/api/rooms/xss/messages?limit=100",
        &[("cookie", &alice.cookie_header())],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(contents_of(&r.json()), payloads);
    // And in WebSocket history after a re-join.
    let mut wc = client::join(&ep, &bob, "xss", None, None).await.unwrap();
    let h: Value = wc.expect("history", T).await.unwrap();
    assert_eq!(contents_of(&h), payloads);
    s.stop().await;
}
