//! Every error code a frame can earn, and that the connection stays open after each.

use crate::support::*;
use hubbub_client::WsClient;
use serde_json::{Value, json};

/// Sends `frame` and returns the error it earns; then checks the connection
/// still carries chat both ways.
async fn error_for(a: &mut WsClient, frame: String) -> Value {
    a.send_text(frame.clone()).await.unwrap();
    let e = expect_error(a).await;
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message for {frame}: {e}"
    );
    let echo = say_saved(a, "still open").await;
    assert_eq!(echo["content"], "still open");
    e
}

#[tokio::test]
async fn bad_request_for_every_malformed_frame() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "bad").await;
    let id = uuid();

    let no_id: Vec<String> = vec![
        "hello".into(),
        "{not json".into(),
        "[1,2,3]".into(),
        "42".into(),
        json!({"content": "no type"}).to_string(),
        json!({"type": "chat", "content": "no id"}).to_string(),
        json!({"type": "typing"}).to_string(),
        json!({"type": "typing", "active": "yes"}).to_string(),
        json!({"type": "typing", "active": 1}).to_string(),
        json!({"type": "history", "limit": 0}).to_string(),
        json!({"type": "history", "limit": 101}).to_string(),
        json!({"type": "history", "limit": "ten"}).to_string(),
        json!({"type": "history", "before": "not a cursor!"}).to_string(),
        json!({"type": "history", "after": 17}).to_string(),
        json!({"type": "history", "req": 5}).to_string(),
        json!({"type": "ack", "status": "seen"}).to_string(),
        json!({"type": "ack", "ids": [uuid()], "status": "read"}).to_string(),
        json!({"type": "ack", "ids": [uuid()]}).to_string(),
        json!({"type": "ack", "ids": "not a list", "status": "seen"}).to_string(),
        json!({"type": "ack", "ids": (0..101).map(|_| uuid()).collect::<Vec<_>>(), "status": "seen"})
            .to_string(),
        json!({"type": 7}).to_string(),
    ];
    let frames = no_id.len();
    for f in no_id {
        let e = error_for(&mut a, f.clone()).await;
        assert_eq!(e["code"], "bad_request", "{f}: {e}");
        assert!(e.get("id").is_none(), "{f}: {e}");
    }

    let with_id: Vec<String> = vec![
        json!({"type": "dance", "id": id}).to_string(),
        json!({"type": "chat", "id": id}).to_string(),
        json!({"type": "chat", "id": id, "content": 5}).to_string(),
        json!({"type": "chat", "id": id, "content": null}).to_string(),
        json!({"type": "chat", "id": id, "content": ""}).to_string(),
        json!({"type": "chat", "id": id, "content": " \n\t "}).to_string(),
        json!({"type": "chat", "id": "not-a-uuid", "content": "x"}).to_string(),
        json!({"type": "private", "id": id, "content": "no target"}).to_string(),
        json!({"type": "private", "id": id, "target": 3, "content": "x"}).to_string(),
        json!({"type": "private", "id": id, "target": alice.username}).to_string(),
        json!({"type": "private", "id": id, "target": alice.username, "content": "  "}).to_string(),
    ];
    let frames = frames + with_id.len();
    for f in with_id {
        let e = error_for(&mut a, f.clone()).await;
        assert_eq!(e["code"], "bad_request", "{f}: {e}");
        let sent: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(e["id"], sent["id"], "error echoes the frame's id: {f}: {e}");
    }

    // Nothing of that was stored; only the "still open" lines were, one per frame.
    assert!(frames <= 100, "one page must hold them all");
    let h = http_history(&s, &alice, "bad", "limit=100").await.json();
    assert_eq!(contents_of(&h), vec!["still open"; frames], "{h}");
    s.stop().await;
}

#[tokio::test]
async fn too_large_above_4000_chars_and_4000_accepted() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "size").await;
    let mut b = s.join(&bob, "size").await;

    // Two-byte characters: the limit counts characters, not bytes.
    let id = uuid();
    let e = error_for(&mut a, chat(&id, &"é".repeat(4001)).to_string()).await;
    assert_eq!(e["code"], "too_large");
    assert_eq!(e["id"], id.as_str());
    let id = uuid();
    let e = error_for(&mut a, chat(&id, &"x".repeat(4001)).to_string()).await;
    assert_eq!(e["code"], "too_large");
    let id = uuid();
    let e = error_for(
        &mut a,
        private(&id, &bob.username, &"y".repeat(4001)).to_string(),
    )
    .await;
    assert_eq!(e["code"], "too_large");
    assert_eq!(e["id"], id.as_str());

    // Exactly 4000 (after trimming) is fine.
    let id = uuid();
    let content = "é".repeat(4000);
    a.send_json(&chat(&id, &format!("  {content}  ")))
        .await
        .unwrap();
    let m = expect_msg(&mut b, &id).await;
    assert_eq!(m["content"].as_str().unwrap().chars().count(), 4000);
    assert_eq!(m["content"], content.as_str());
    expect_receipt(&mut a, &id, "saved").await;

    // A command whose result grows past 4000 is too_large too.
    let id = uuid();
    let e = error_for(
        &mut a,
        chat(&id, &format!("/shrug {}", "z".repeat(3995))).to_string(),
    )
    .await;
    assert_eq!(e["code"], "too_large");
    assert_eq!(e["id"], id.as_str());
    s.stop().await;
}

#[tokio::test]
async fn rate_limited_without_id_then_recovers() {
    let s = TestServer::start_with(&["--msgs-per-sec", "1", "--burst", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let (mut a, w, _) = join_full(&s, &alice, "slow", None, None).await;
    assert_eq!(w["limits"]["msgs_per_sec"], 1);
    assert_eq!(w["limits"]["burst"], 2);
    let mut b = s.join(&bob, "slow").await;

    let ids: Vec<String> = (0..6).map(|_| uuid()).collect();
    for (i, id) in ids.iter().enumerate() {
        a.send_json(&chat(id, &format!("burst {i}"))).await.unwrap();
    }
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "rate_limited");
    assert!(e.get("id").is_none(), "rate_limited carries no id: {e}");
    let wait = e["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms must be an integer: {e}"));
    assert!(wait > 0 && wait <= 2000, "{e}");
    // The first two went through; the limited ones were dropped.
    let m = expect_msg(&mut b, &ids[0]).await;
    assert_eq!(m["content"], "burst 0");
    expect_msg(&mut b, &ids[1]).await;

    // After waiting as told, the connection works again.
    tokio::time::sleep(std::time::Duration::from_millis(wait + 1100)).await;
    let id = say(&mut a, "after the pause").await;
    let m = expect_msg(&mut b, &id).await;
    assert_eq!(m["content"], "after the pause");
    let h = http_history(&s, &bob, "slow", "").await.json();
    assert_eq!(contents_of(&h), ["burst 0", "burst 1", "after the pause"]);
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_counts_every_frame_before_parsing() {
    let s = TestServer::start_with(&["--msgs-per-sec", "1", "--burst", "2"]).await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "slow2").await;
    // Garbage and typing frames use up the burst too.
    a.send_text("garbage".into()).await.unwrap();
    a.send_json(&json!({"type": "typing", "active": true}))
        .await
        .unwrap();
    let id = uuid();
    a.send_json(&chat(&id, "third")).await.unwrap();
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "bad_request", "the garbage frame first: {e}");
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "rate_limited");
    assert!(e.get("id").is_none(), "{e}");
    assert!(e["retry_after_ms"].is_u64(), "{e}");
    // The limited chat was dropped: once tokens are back, a marker goes
    // through with no "third" before it, and history holds only the marker.
    let frames = marker_when_allowed(&mut a, e["retry_after_ms"].as_u64().unwrap()).await;
    assert!(
        !frames.iter().any(|f| f["id"] == id.as_str()),
        "the rate-limited chat was delivered: {frames:?}"
    );
    let h = http_history(&s, &alice, "slow2", "").await.json();
    assert_eq!(contents_of(&h), vec!["-- marker --"], "{h}");
    s.stop().await;
}

/// After `wait_ms` (a `retry_after_ms`: frames before then are dropped without
/// an error), sends a marker chat, retrying (bounded) while it is rate
/// limited; returns every frame up to its echo.
async fn marker_when_allowed(a: &mut WsClient, wait_ms: u64) -> Vec<Value> {
    tokio::time::sleep(std::time::Duration::from_millis(wait_ms + 50)).await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let id = say(a, "-- marker --").await;
        loop {
            let v = next_frame(a).await;
            let done = v["id"] == id.as_str() && v["type"] == "chat";
            let limited = v["type"] == "error" && v["code"] == "rate_limited";
            if limited {
                let wait = v["retry_after_ms"].as_u64().unwrap_or(1000);
                tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
            }
            seen.push(v);
            if done {
                return seen;
            }
            if limited {
                break;
            }
        }
    }
    panic!("the marker was rate limited 20 times: {seen:?}");
}

#[tokio::test]
async fn not_found_for_a_private_to_someone_never_in_the_room() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let elsewhere = s.user(&name("elsewhere")).await;
    let gone = s.user(&name("gone")).await;
    let mut a = s.join(&alice, "nf").await;
    let _e = s.join(&elsewhere, "other-room").await;

    for target in [
        elsewhere.username.clone(),
        "nobody_has_this_name".to_owned(),
    ] {
        let id = uuid();
        let e = error_for(&mut a, private(&id, &target, "hi").to_string()).await;
        assert_eq!(e["code"], "not_found", "{target}: {e}");
        assert_eq!(e["id"], id.as_str());
    }

    // Someone who joined before and left is a member: the private is stored for them.
    let g = s.join(&gone, "nf").await;
    close_and_wait(g).await;
    let id = uuid();
    a.send_json(&private(&id, &gone.username, "for later"))
        .await
        .unwrap();
    let m = expect_msg(&mut a, &id).await;
    assert_eq!(m["type"], "private");
    expect_receipt(&mut a, &id, "saved").await;
    let (_g, _, h) = join_full(&s, &gone, "nf", None, None).await;
    let last = h["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["id"], id.as_str());
    assert_eq!(last["content"], "for later");
    assert_eq!(last["target"], gone.username.as_str());
    s.stop().await;
}

#[tokio::test]
async fn conflict_when_an_id_names_another_message() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "c1").await;
    let mut b = s.join(&bob, "c1").await;
    let mut a_other = s.join(&alice, "c2").await;

    // Durable id reused by another user.
    let id = say(&mut a, "mine").await;
    expect_msg(&mut b, &id).await;
    expect_receipt(&mut a, &id, "saved").await;
    let e = error_for(&mut b, chat(&id, "taken").to_string()).await;
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["id"], id.as_str());
    // ... as a private too.
    let e = error_for(&mut b, private(&id, &alice.username, "taken").to_string()).await;
    assert_eq!(e["code"], "conflict");

    // The same user, the same id, another room.
    let e = error_for(&mut a_other, chat(&id, "other room").to_string()).await;
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["id"], id.as_str());

    // An id seen live (maybe not yet durable) reused by another user.
    let id2 = say(&mut a, "second").await;
    expect_msg(&mut b, &id2).await;
    let e = error_for(&mut b, chat(&id2, "quick reuse").to_string()).await;
    assert_eq!(e["code"], "conflict");
    assert_eq!(e["id"], id2.as_str());

    // Nothing was overwritten or leaked into c2.
    let h = http_history(&s, &alice, "c1", "").await.json();
    let msgs = h["messages"].as_array().unwrap();
    let m1 = msgs.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(m1["content"], "mine");
    assert_eq!(m1["sender"], alice.username.as_str());
    let m2 = msgs.iter().find(|m| m["id"] == id2.as_str()).unwrap();
    assert_eq!(m2["content"], "second");
    assert_eq!(
        msgs.iter()
            .filter(|m| m["id"] == id.as_str() || m["id"] == id2.as_str())
            .count(),
        2
    );
    let h2 = http_history(&s, &alice, "c2", "").await.json();
    assert!(!ids_of(&h2).contains(&id));
    s.stop().await;
}
