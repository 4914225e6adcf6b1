//! Sessions and close codes: 1003, 1009, 4001 (same client id, too many
//! sessions), 1008 (token expiry), 1001 (shutdown); several sessions per user.

use crate::support::*;
use hubbub_client as client;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "bin").await;
    a.send_raw(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(a.expect_close(T).await.unwrap(), Some(1003));
    // The user can connect again.
    let mut a2 = s.join(&alice, "bin").await;
    say_saved(&mut a2, "back").await;
    s.stop().await;
}

#[tokio::test]
async fn frame_over_max_frame_closes_with_1009() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "big").await;
    let mut b = s.join(&bob, "big").await;

    // Exactly max_frame (8192 bytes) is still a frame like any other.
    let id = uuid();
    let base = json!({"type": "chat", "id": id, "content": "fits", "pad": ""}).to_string();
    let pad = 8192 - base.len();
    let f =
        json!({"type": "chat", "id": id, "content": "fits", "pad": "p".repeat(pad)}).to_string();
    assert_eq!(f.len(), 8192);
    a.send_text(f).await.unwrap();
    let m = expect_msg(&mut b, &id).await;
    assert_eq!(m["content"], "fits");

    // One byte more closes the connection with 1009.
    let id2 = uuid();
    let f = json!({"type": "chat", "id": id2, "content": "fits", "pad": "p".repeat(pad + 1)})
        .to_string();
    assert_eq!(f.len(), 8193);
    a.send_text(f).await.unwrap();
    assert_eq!(a.expect_close(T).await.unwrap(), Some(1009));
    let seen = marker(&mut b, &mut []).await;
    assert!(seen[0].iter().all(|f| f["id"] != id2.as_str()));

    // A much larger one too.
    let mut a = s.join(&alice, "big").await;
    a.send_text(chat(&uuid(), &"x".repeat(20_000)).to_string())
        .await
        .unwrap();
    assert_eq!(a.expect_close(T).await.unwrap(), Some(1009));
    s.stop().await;
}

#[tokio::test]
async fn max_frame_is_configurable() {
    let s = TestServer::start_with(&["--max-frame", "1024"]).await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "small").await;
    say_saved(&mut a, &"y".repeat(900)).await;
    a.send_text(chat(&uuid(), &"y".repeat(1100)).to_string())
        .await
        .unwrap();
    assert_eq!(a.expect_close(T).await.unwrap(), Some(1009));
    s.stop().await;
}

#[tokio::test]
async fn same_client_id_replaces_the_old_session_with_4001() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "tabs").await;
    let (mut old, _, _) = join_full(&s, &alice, "tabs", Some("tab-1"), None).await;
    expect_where(&mut b, "alice's join line", |v| v["type"] == "system").await;
    let (mut new, w, _) = join_full(&s, &alice, "tabs", Some("tab-1"), None).await;
    assert_eq!(w["client"], "tab-1");
    assert_eq!(old.expect_close(T).await.unwrap(), Some(4001));

    // The new one keeps working, and a replacement makes no join/leave line.
    let id = say(&mut new, "still me").await;
    let m = expect_msg(&mut new, &id).await;
    assert_eq!(m["sender"], alice.username.as_str());
    let frames = until_msg(&mut b, &id).await;
    assert!(
        of_type(&frames, "system").is_empty(),
        "replacing a session made a line: {frames:?}"
    );

    // Another user's identical client id replaces nothing.
    let (mut bobs_tab, _, _) = join_full(&s, &bob, "tabs", Some("tab-1"), None).await;
    let id = say(&mut new, "after bob's tab-1").await;
    expect_msg(&mut new, &id).await;
    expect_msg(&mut bobs_tab, &id).await;
    s.stop().await;
}

#[tokio::test]
async fn oldest_session_over_the_cap_gets_4001() {
    let s = TestServer::start_with(&["--max-sessions-per-user", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let (mut s1, _, _) = join_full(&s, &alice, "cap", Some("one"), None).await;
    let (mut s2, _, _) = join_full(&s, &alice, "cap", Some("two"), None).await;
    // Both live: s2's message reaches s1.
    let id = say(&mut s2, "two is here").await;
    expect_msg(&mut s1, &id).await;
    let (mut s3, _, _) = join_full(&s, &alice, "other-room", Some("three"), None).await;
    assert_eq!(s1.expect_close(T).await.unwrap(), Some(4001));
    let id = say(&mut s2, "two still works").await;
    expect_msg(&mut s2, &id).await;
    let id = say(&mut s3, "three works").await;
    expect_msg(&mut s3, &id).await;
    s.stop().await;
}

#[tokio::test]
async fn every_session_of_a_user_gets_messages() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a1 = s.join(&alice, "multi").await;
    let mut a2 = s.join(&alice, "multi").await;
    let mut b = s.join(&bob, "multi").await;
    // Presence lists a user once however many sessions it has. Read first:
    // a joiner gets its list right after its history, before later messages.
    let mut names = [alice.username.as_str(), bob.username.as_str()];
    names.sort();
    let p = expect_presence(&mut b, &names).await;
    assert_eq!(p["count"], 2);
    let id = say(&mut a1, "from tab one").await;
    for ws in [&mut a1, &mut a2, &mut b] {
        let m = expect_msg(ws, &id).await;
        assert_eq!(m["content"], "from tab one");
    }
    s.stop().await;
}

#[tokio::test]
async fn expired_access_token_closes_with_1008() {
    // 3 s: long enough for bob to log in and send during alice's gap on a busy machine.
    let s = TestServer::start_with(&["--access-ttl-secs", "3"]).await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "ttl").await;
    let echo = say_saved(&mut a, "before expiry").await;
    let mut last_cursor = echo["cursor"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match a.recv(left).await {
            Some(Incoming::Frame(v)) => {
                if let Some(c) = v["cursor"].as_str() {
                    last_cursor = c.to_owned();
                }
            }
            Some(Incoming::Closed(c)) => break c,
            None => panic!("socket still open after the token expired"),
        }
    };
    assert_eq!(code, Some(1008));

    // While alice is away, bob writes; each one is durable before she comes back.
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "ttl").await;
    let mut gap = Vec::new();
    for i in 0..5 {
        gap.push(say_saved(&mut b, &format!("gap {i}")).await["id"].clone());
    }
    drop(b);

    // After a refresh over HTTP, reconnecting with `since` loses nothing.
    let r = client::request(
        s.addr,
        "POST",
        "/api/auth/refresh",
        &[("cookie", &format!("refresh_token={}", alice.refresh))],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = client::Account {
        username: alice.username.clone(),
        access: r.cookie("access_token").unwrap(),
        refresh: r.cookie("refresh_token").unwrap(),
    };
    let (mut back, w, h) = join_full(&s, &fresh, "ttl", None, Some(&last_cursor)).await;
    assert_eq!(w["resumed"], true, "{w}");
    // Exactly the gap, each once, in order: nothing from before the cursor again.
    let got: Vec<_> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, gap, "history after `since`: {h}");
    assert_eq!(h["more"], false, "{h}");
    // And the live stream does not repeat them either.
    let m = say(&mut back, "after refresh").await;
    let live = until_msg(&mut back, &m).await;
    let again: Vec<_> = of_type(&live, "chat")
        .into_iter()
        .filter(|c| gap.contains(&c["id"]))
        .collect();
    assert!(again.is_empty(), "gap messages delivered twice: {again:?}");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "bye").await;
    let mut b = s.join(&bob, "other").await;
    let _dir = s.stop().await;
    assert_eq!(a.expect_close(T).await.unwrap(), Some(1001));
    assert_eq!(b.expect_close(T).await.unwrap(), Some(1001));
}

#[tokio::test]
async fn same_client_id_in_another_room_replaces_too() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let (mut old, _, _) = join_full(&s, &alice, "room-a", Some("laptop"), None).await;
    let (mut new, w, _) = join_full(&s, &alice, "room-b", Some("laptop"), None).await;
    assert_eq!(w["room"], "room-b");
    assert_eq!(old.expect_close(T).await.unwrap(), Some(4001));
    say_saved(&mut new, "moved rooms").await;
    s.stop().await;
}

#[tokio::test]
async fn logout_and_refresh_reuse_close_that_login_with_1008() {
    let s = TestServer::start().await;
    let n = name("alice");
    let first = s.user(&n).await;
    // A second, independent log-in (another refresh-token family).
    let second = s.user(&n).await;
    let (mut a1, _, _) = join_full(&s, &first, "revoke", Some("one"), None).await;
    let (mut a2, _, _) = join_full(&s, &second, "revoke", Some("two"), None).await;

    let c = format!("refresh_token={}", first.refresh);
    let r = client::request(s.addr, "POST", "/api/auth/logout", &[("cookie", &c)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 204, "logout answers 204: {}", r.body);
    assert_eq!(a1.expect_close(T).await.unwrap(), Some(1008));
    // The other log-in is untouched.
    say_saved(&mut a2, "still logged in").await;

    // Replaying a spent refresh token revokes its family: its sockets close too.
    let c = format!("refresh_token={}", second.refresh);
    let r = client::request(s.addr, "POST", "/api/auth/refresh", &[("cookie", &c)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = client::request(s.addr, "POST", "/api/auth/refresh", &[("cookie", &c)], None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(a2.expect_close(T).await.unwrap(), Some(1008));
    s.stop().await;
}
