//! Multi-room connections (`/ws?multi=1`): subscribe and unsubscribe on one
//! socket, frames naming their room, per-room exact resume, the rooms limit,
//! and a connection counted, replaced and closed as one session.

use crate::support::*;
use hubbub_client::{self as client, Account, Incoming, WsClient};
use serde_json::{Value, json};

/// A multi-room connection and its `welcome`.
async fn multi(s: &TestServer, acct: &Account, client_id: Option<&str>) -> (WsClient, Value) {
    let mut ws = client::join_multi(s.addr, acct, client_id).await.unwrap();
    let welcome = next_frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
    (ws, welcome)
}

/// Subscribes and returns `subscribed` and the `history` right behind it
/// (frames of other rooms may come before, nothing between the two).
async fn subscribe(ws: &mut WsClient, room: &str, since: Option<&str>) -> (Value, Value) {
    ws.subscribe(room, since).await.unwrap();
    let sub = expect_where(ws, "subscribed", |v| v["type"] == "subscribed").await;
    assert_eq!(sub["room"], room, "{sub}");
    let history = next_frame(ws).await;
    assert_eq!(
        history["type"], "history",
        "right after subscribed: {history}"
    );
    assert_eq!(history["room"], room, "{history}");
    (sub, history)
}

/// Sends a chat naming `room`; returns its id.
async fn say_in(ws: &mut WsClient, room: &str, content: &str) -> String {
    let id = uuid();
    let f = json!({"type": "chat", "id": id, "content": content, "room": room});
    ws.send_json(&f).await.unwrap();
    id
}

/// The next `error` frame, skipping others.
async fn error_of(ws: &mut WsClient) -> Value {
    expect_where(ws, "an error", |v| v["type"] == "error").await
}

#[tokio::test]
async fn subscribe_route_by_room_and_unsubscribe() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let (mut a, welcome) = multi(&s, &alice, None).await;
    assert!(welcome.get("room").is_none(), "{welcome}");
    let (sub, hist) = subscribe(&mut a, "ra", None).await;
    assert_eq!(sub["resumed"], false);
    assert!(hist["messages"].as_array().unwrap().is_empty());
    subscribe(&mut a, "rb", None).await;
    let mut ba = s.join(&bob, "ra").await;
    let mut bb = s.join(&bob, "rb").await;

    // A message in rb reaches the connection, naming rb.
    let id = say(&mut bb, "to rb").await;
    assert_eq!(expect_msg(&mut a, &id).await["room"], "rb");
    // Alice's message names ra and goes to ra only.
    let id = say_in(&mut a, "ra", "hello ra").await;
    assert_eq!(expect_msg(&mut ba, &id).await["room"], "ra");
    assert_eq!(expect_msg(&mut a, &id).await["room"], "ra");
    let id = say(&mut bb, "marker rb").await;
    let frames = until_msg(&mut bb, &id).await;
    assert!(
        frames.iter().all(|f| f["content"] != "hello ra"),
        "{frames:?}"
    );

    // Unsubscribe: `unsubscribed`, rb sees alice leave, nothing of rb follows.
    a.unsubscribe("rb").await.unwrap();
    let u = expect_where(&mut a, "unsubscribed", |v| v["type"] == "unsubscribed").await;
    assert_eq!(u["room"], "rb");
    let left = expect_where(&mut bb, "alice's leave", |v| v["type"] == "system").await;
    assert!(
        left["content"].as_str().unwrap().ends_with("left"),
        "{left}"
    );
    let late = say(&mut bb, "after unsubscribe").await;
    expect_msg(&mut bb, &late).await;
    let mark = say_in(&mut a, "ra", "ra marker").await;
    let frames = until_msg(&mut a, &mark).await;
    assert!(frames.iter().all(|f| f["room"] != "rb"), "{frames:?}");
    // rb is no longer a room this connection may name.
    say_in(&mut a, "rb", "not mine").await;
    assert_eq!(error_of(&mut a).await["code"], "not_subscribed");
    s.stop().await;
}

#[tokio::test]
async fn each_room_resumes_exactly_on_one_socket() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut ba = s.join(&bob, "ra").await;
    let mut bb = s.join(&bob, "rb").await;
    let cursor = |v: Value| v["cursor"].as_str().unwrap().to_owned();
    let a1 = say(&mut ba, "a1").await;
    let a1 = cursor(expect_msg(&mut ba, &a1).await);
    let b1 = say(&mut bb, "b1").await;
    let b1 = cursor(expect_msg(&mut bb, &b1).await);
    let mut sent_a = Vec::new();
    for i in 0..3 {
        sent_a.push(say(&mut ba, &format!("a{}", i + 2)).await);
    }
    let b2 = say(&mut bb, "b2").await;
    expect_msg(&mut bb, &b2).await;
    expect_msg(&mut ba, sent_a.last().unwrap()).await;

    // rb resumes after b1: exactly b2.
    let (mut a, _) = multi(&s, &alice, None).await;
    let (sub, hist) = subscribe(&mut a, "rb", Some(&b1)).await;
    assert_eq!(sub["resumed"], true);
    assert_eq!(ids_of(&hist), [b2]);

    // ra resumes after a1 while bob keeps writing to ra: every message after
    // a1 exactly once and in order, across the history and the live stream.
    let writer = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..60 {
            ids.push(say(&mut ba, &format!("live {i}")).await);
            tokio::task::yield_now().await;
        }
        (ids, ba)
    });
    tokio::task::yield_now().await;
    let (sub, hist) = subscribe(&mut a, "ra", Some(&a1)).await;
    assert_eq!(sub["resumed"], true);
    let (live, _ba) = writer.await.unwrap();
    sent_a.extend(live);
    let mut seen = ids_of(&hist);
    let last = sent_a.last().unwrap();
    let in_history = seen.len();
    if !seen.contains(last) {
        let frames = until_msg(&mut a, last).await;
        seen.extend(
            frames
                .iter()
                .filter(|f| f["type"] == "chat" && f["room"] == "ra")
                .map(|f| f["id"].as_str().unwrap().to_owned()),
        );
    }
    eprintln!(
        "ra: {in_history} in history, {} live",
        seen.len() - in_history
    );
    assert_eq!(seen, sent_a, "ra on the multi-room socket");
    s.stop().await;
}

#[tokio::test]
async fn frames_name_a_subscribed_room_on_multi_but_not_on_v1() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let (mut a, _) = multi(&s, &alice, None).await;
    subscribe(&mut a, "ra", None).await;
    // No room: bad_request, the id echoed.
    let id = uuid();
    a.send_json(&chat(&id, "where?")).await.unwrap();
    let e = error_of(&mut a).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_request"), Some(id.as_str()))
    );
    a.send_json(&json!({"type": "typing", "active": true}))
        .await
        .unwrap();
    assert_eq!(error_of(&mut a).await["code"], "bad_request");
    a.send_json(&json!({"type": "history", "room": 5}))
        .await
        .unwrap();
    assert_eq!(error_of(&mut a).await["code"], "bad_request");
    // A room it did not subscribe: not_subscribed.
    say_in(&mut a, "rz", "elsewhere").await;
    assert_eq!(error_of(&mut a).await["code"], "not_subscribed");
    a.send_json(&json!({"type": "history", "room": "rz"}))
        .await
        .unwrap();
    assert_eq!(error_of(&mut a).await["code"], "not_subscribed");
    // Its own room: fine, and a history page names the room.
    let id = say_in(&mut a, "ra", "here").await;
    expect_msg(&mut a, &id).await;
    let q = json!({"type": "history", "room": "ra", "req": "q1"});
    a.send_json(&q).await.unwrap();
    let page = expect_where(&mut a, "page", |v| v["type"] == "history").await;
    assert_eq!(
        (page["room"].as_str(), page["req"].as_str()),
        (Some("ra"), Some("q1"))
    );
    assert_eq!(ids_of(&page), [id]);

    // v1: no room needed, a room sent is ignored, subscribe is refused.
    let mut v1 = s.join(&alice, "rv").await;
    let id = uuid();
    let f = json!({"type": "chat", "id": id, "content": "v1", "room": "ra"});
    v1.send_json(&f).await.unwrap();
    assert_eq!(expect_msg(&mut v1, &id).await["room"], "rv");
    v1.subscribe("ra", None).await.unwrap();
    assert_eq!(error_of(&mut v1).await["code"], "bad_request");
    s.stop().await;
}

#[tokio::test]
async fn rooms_per_connection_are_limited_and_the_connection_stays() {
    let s = TestServer::start_with(&["--max-rooms-per-connection", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let (mut a, _) = multi(&s, &alice, None).await;
    subscribe(&mut a, "r1", None).await;
    subscribe(&mut a, "r2", None).await;
    a.subscribe("r3", None).await.unwrap();
    assert_eq!(error_of(&mut a).await["code"], "too_many_rooms");
    // Twice the same room: refused, the subscription stands.
    a.subscribe("r1", None).await.unwrap();
    assert_eq!(error_of(&mut a).await["code"], "bad_request");
    let id = say_in(&mut a, "r1", "still open").await;
    expect_msg(&mut a, &id).await;
    // A room left frees its place.
    a.unsubscribe("r2").await.unwrap();
    expect_where(&mut a, "unsubscribed", |v| v["type"] == "unsubscribed").await;
    subscribe(&mut a, "r3", None).await;
    s.stop().await;
}

#[tokio::test]
async fn same_client_id_replaces_the_whole_multi_connection() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let (mut old, _) = multi(&s, &alice, Some("tab-1")).await;
    // Its own subscriptions, one client id, never replace each other.
    subscribe(&mut old, "ra", None).await;
    subscribe(&mut old, "rb", None).await;
    let mut bb = s.join(&bob, "rb").await;
    let id = say(&mut bb, "both live").await;
    expect_msg(&mut old, &id).await;

    let (mut new, _) = multi(&s, &alice, Some("tab-1")).await;
    subscribe(&mut new, "rb", None).await;
    assert_eq!(old.expect_close(T).await.unwrap(), Some(4001));
    let id = say(&mut bb, "to the new one").await;
    expect_msg(&mut new, &id).await;
    // A v1 connection with that client id replaces the multi-room one too.
    let (_v1, _, _) = join_full(&s, &alice, "rc", Some("tab-1"), None).await;
    assert_eq!(new.expect_close(T).await.unwrap(), Some(4001));
    s.stop().await;
}

#[tokio::test]
async fn a_multi_connection_counts_once_against_the_session_cap() {
    let s = TestServer::start_with(&["--max-sessions-per-user", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let (mut m, _) = multi(&s, &alice, Some("multi")).await;
    for r in ["r1", "r2", "r3"] {
        subscribe(&mut m, r, None).await;
    }
    // Three rooms, one session: a second connection fits under the cap of 2.
    let (mut two, _, _) = join_full(&s, &alice, "r1", Some("two"), None).await;
    let id = say(&mut two, "two joined").await;
    expect_msg(&mut m, &id).await;
    let id = say_in(&mut m, "r1", "multi still here").await;
    expect_msg(&mut two, &id).await;
    // A third connection: the oldest (the multi-room one, whole) goes.
    let (_three, _, _) = join_full(&s, &alice, "r2", Some("three"), None).await;
    assert_eq!(m.expect_close(T).await.unwrap(), Some(4001));
    let id = say(&mut two, "two stays").await;
    expect_msg(&mut two, &id).await;
    s.stop().await;
}

#[tokio::test]
async fn the_upgrade_checks_multi() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let cookie = alice.cookie_header();
    for q in ["multi=2", "multi=1&room=ra", "multi=1&since=x"] {
        let r = client::connect(s.addr, q, &[("cookie", &cookie)]).await;
        assert_eq!(upgrade_status(r), 400, "{q}");
    }
    // multi=0 is a single-room connection to `general`, as without it.
    let mut ws = client::connect(s.addr, "multi=0", &[("cookie", &cookie)])
        .await
        .unwrap();
    let w = next_frame(&mut ws).await;
    assert_eq!(w["room"], "general");
    match ws.recv(T).await {
        Some(Incoming::Frame(h)) => assert_eq!(h["type"], "history"),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

/// Subscribes are frames like any other: a flood of them is rate limited
/// before parsing (one `rate_limited` for the stretch), only the burst gets
/// in, and the connection stays usable once the limit allows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_flood_is_rate_limited_like_other_frames() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start_with(&["--msgs-per-sec", "1", "--burst", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let (mut a, _) = multi(&s, &alice, None).await;
    for i in 0..10 {
        let f = json!({"type": "subscribe", "room": format!("flood{i}")}).to_string();
        a.ws.feed(Message::text(f)).await.unwrap();
    }
    a.ws.flush().await.unwrap();
    let frames = drain(&mut a, std::time::Duration::from_secs(3)).await;
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "errors: {errors:?}");
    assert_eq!(errors[0]["code"], "rate_limited", "{}", errors[0]);
    let retry = errors[0]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert_eq!(of_type(&frames, "subscribed").len(), 2, "{frames:?}");
    // After the limited stretch the same connection subscribes again.
    tokio::time::sleep(std::time::Duration::from_millis(retry + 1100)).await;
    subscribe(&mut a, "after", None).await;
    s.stop().await;
}

/// A user already in a room subscribing to it again on another connection
/// (a second device) changes nobody's presence list: the others get neither
/// a join line nor a presence, the new subscription gets its own presence.
#[tokio::test]
async fn a_second_device_subscribing_sends_presence_to_itself_only() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "devices").await;
    let mut a1 = s.join(&alice, "devices").await;
    let mut both = [alice.username.as_str(), bob.username.as_str()];
    both.sort();
    expect_presence(&mut b, &both).await;
    expect_presence(&mut a1, &both).await;
    let (mut a2, _) = multi(&s, &alice, Some("second-device")).await;
    subscribe(&mut a2, "devices", None).await;
    let p = expect_presence(&mut a2, &both).await;
    assert_eq!((&p["room"], &p["count"]), (&json!("devices"), &json!(2)));
    // Over twice the 500 ms presence window: a presence for the others
    // would have been queued before the marker.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let id = say(&mut a1, "marker").await;
    for ws in [&mut b, &mut a1] {
        let frames = until_msg(ws, &id).await;
        assert!(
            frames
                .iter()
                .all(|f| f["type"] != "presence" && f["type"] != "system"),
            "{frames:?}"
        );
    }
    s.stop().await;
}
