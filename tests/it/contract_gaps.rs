//! Black-box tests for parts of the wire contract (docs/PROTOCOL.md, "What
//! hubbub chose") that no other test file pins down.

use std::time::Duration;

use crate::support::*;
use hubbub_client as client;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rate_limited_error_per_limited_stretch() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start_with(&["--msgs-per-sec", "1", "--burst", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let mut ws = s.join(&alice, &name("room")).await;
    // Ten frames in one write: they reach the server together, well inside
    // one limited stretch (the first dropped frame's retry_after_ms).
    for i in 0..10 {
        let m = chat(&uuid(), &format!("flood {i}")).to_string();
        ws.ws.feed(Message::text(m)).await.unwrap();
    }
    ws.ws.flush().await.unwrap();
    let frames = drain(&mut ws, Duration::from_secs(3)).await;
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "errors: {errors:?}");
    let e = errors[0];
    assert_eq!(e["code"], "rate_limited", "{e}");
    assert!(e["retry_after_ms"].as_u64().is_some(), "{e}");
    assert!(e.get("id").is_none(), "rate_limited carries no id: {e}");
    // The burst got through: two echoes.
    assert_eq!(of_type(&frames, "chat").len(), 2, "{frames:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_to_oneself_reaches_only_the_senders_sessions() {
    let s = TestServer::start().await;
    let room = name("room");
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, &room).await;
    let (mut a1, _, _) = join_full(&s, &alice, &room, Some("tab-1"), None).await;
    let (mut a2, _, _) = join_full(&s, &alice, &room, Some("tab-2"), None).await;
    let id = uuid();
    a1.send_json(&private(&id, &alice.username, "note to self"))
        .await
        .unwrap();
    let m1 = expect_msg(&mut a1, &id).await;
    let m2 = expect_msg(&mut a2, &id).await;
    for m in [&m1, &m2] {
        assert_eq!(m["type"], "private", "{m}");
        assert_eq!(m["content"], "note to self", "{m}");
    }
    // Frames from a1 reach the hub in order: bob's frames up to a later
    // marker show everything the private could have given him.
    let seen = marker(&mut a1, &mut [&mut b]).await;
    assert!(
        seen[1].iter().all(|f| f["id"] != id.as_str()),
        "bob saw alice's note: {:?}",
        seen[1]
    );
    assert!(of_type(&seen[1], "private").is_empty(), "{:?}", seen[1]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_from_a_user_who_never_joined_the_room_is_ignored() {
    let s = TestServer::start().await;
    let room = name("room");
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a = s.join(&alice, &room).await;
    let mut b = s.join(&bob, &room).await;
    let mut c = s.join(&carol, &name("elsewhere")).await;
    let id = say(&mut a, "hello room").await;
    expect_msg(&mut a, &id).await;
    expect_receipt(&mut a, &id, "saved").await;
    expect_msg(&mut b, &id).await;

    // Carol, who never joined `room`, acks seen from her other room; her
    // next chat's echo proves the hub has handled the ack.
    c.send_json(&json!({"type": "ack", "id": id, "status": "seen"}))
        .await
        .unwrap();
    let after = say(&mut c, "sync").await;
    expect_msg(&mut c, &after).await;
    // Bob, a member, acks delivered: the receipt alice must get.
    b.send_json(&json!({"type": "ack", "id": id, "status": "delivered"}))
        .await
        .unwrap();
    let before: Vec<Value> = {
        let mut out = Vec::new();
        loop {
            let f = next_frame(&mut a).await;
            let done = f["type"] == "receipt" && f["id"] == id.as_str() && f["by"] == bob.username;
            out.push(f);
            if done {
                break out;
            }
        }
    };
    let last = before.last().unwrap();
    assert_eq!(last["status"], "delivered", "{last}");
    assert!(
        of_type(&before, "receipt")
            .iter()
            .all(|r| r["by"] != carol.username.as_str() && r["status"] != "seen"),
        "carol's ack counted: {before:?}"
    );
    // History keeps bob's `delivered`, not carol's `seen`.
    let r = http_history(&s, &alice, &room, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    let m = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {page}"))
        .clone();
    assert_eq!(m["status"], "delivered", "{m}");
    s.stop().await;
}

/// Reads server frames (unmasked) from a raw socket until a close frame;
/// returns the opcodes seen before it and the close code. Panics after 30 s.
async fn raw_frames_until_close(
    tcp: &mut tokio::net::TcpStream,
    mut buf: Vec<u8>,
) -> (Vec<u8>, u16) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ops = Vec::new();
    loop {
        // Parse every complete frame in `buf`.
        while buf.len() >= 2 {
            let op = buf[0] & 0x0f;
            let (len, hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            let payload = buf[hdr..hdr + len].to_vec();
            buf.drain(..hdr + len);
            if op == 0x8 {
                assert!(payload.len() >= 2, "close without a code after {ops:?}");
                return (ops, u16::from_be_bytes([payload[0], payload[1]]));
            }
            ops.push(op);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no close within 30 s; frames so far {ops:?}"))
            .unwrap();
        assert!(
            n > 0,
            "connection ended without a close frame after {ops:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_closed_with_1000() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(&["--ping-secs", "1", "--idle-secs", "3"]).await;
    let alice = s.user(&name("alice")).await;
    let room = name("room");
    // A real upgrade, then silence: this socket never sends a byte again
    // (no pong), unlike tungstenite, which answers pings while it reads.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws?room={room} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nCookie: {}\r\n\r\n",
        s.addr,
        alice.cookie_header()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(T, tcp.read(&mut chunk))
            .await
            .expect("upgrade response")
            .unwrap();
        assert!(
            n > 0,
            "closed during upgrade: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let rest = buf.split_off(head_end);
    let (ops, code) = raw_frames_until_close(&mut tcp, rest).await;
    assert_eq!(code, 1000, "frames before the close: {ops:?}");
    assert!(
        ops.contains(&0x9),
        "the server pinged before giving up: {ops:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_open_past_the_idle_timeout() {
    let s = TestServer::start_with(&["--ping-secs", "1", "--idle-secs", "3"]).await;
    let alice = s.user(&name("alice")).await;
    let mut ws = s.join(&alice, &name("room")).await;
    // Keep reading (tungstenite answers each ping) for three idle timeouts
    // without sending anything of our own.
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while tokio::time::Instant::now() < until {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            None => break,
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(c)) => panic!("closed with {c:?} while answering pings"),
        }
    }
    // Still open and served.
    let id = say(&mut ws, "still here").await;
    expect_msg(&mut ws, &id).await;
    s.stop().await;
}

/// The `error.code` of a JSON error body.
fn body_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_gets_forbidden_on_upgrade_and_on_api_posts() {
    // `forbidden` is an HTTP answer only (src: the upgrade's Origin check and
    // the cross-site guard on state-changing /api requests); no frame carries it.
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let room = name("room");
    let cookie = alice.cookie_header();
    let evil = [
        ("cookie", cookie.as_str()),
        ("origin", "http://evil.example"),
    ];
    match client::connect(s.addr, &format!("room={room}"), &evil).await {
        Err(client::ConnectError::Status(403, Some(body))) => {
            assert_eq!(body_code(&body), "forbidden", "{body}")
        }
        Err(e) => panic!("upgrade from a foreign origin: {e} {e:?}"),
        Ok(_) => panic!("upgrade from a foreign origin was accepted"),
    }

    // A cross-site logout is refused before it can log alice out: her open
    // socket is not closed (a real logout closes it with 1008).
    let mut ws = s.join(&alice, &room).await;
    let r = client::request(s.addr, "POST", "/api/auth/logout", &evil, None)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(error_code(&r), "forbidden");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    say_saved(&mut ws, "still logged in").await;
    let r = http(&s, "GET", "/api/me", Some(&alice), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await;
}
