//! Receipts (`saved`, `delivered`, `seen`), ignored acks, and idempotent resends.
//!
//! "Nothing happened" is checked with a later ack that does produce a receipt:
//! acks are applied in order, so a receipt the ignored ack wrongly caused would
//! arrive before the sentinel's.

use crate::support::*;
use hubbub_client::WsClient;
use serde_json::{Value, json};

fn ack(id: &str, status: &str) -> Value {
    json!({"type": "ack", "id": id, "status": status})
}

/// Frames up to the receipt (`status`, `by`) for `id`, that receipt included.
async fn until_receipt(ws: &mut WsClient, id: &str, status: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let f = expect_where(ws, &format!("receipt {status} for {id}"), |_| true).await;
        let done = f["type"] == "receipt" && f["id"] == id && f["status"] == status;
        out.push(f);
        if done {
            return out;
        }
    }
}

/// Waits until the server's reader for `ws` has handled every frame sent
/// before: frames of one connection are handled in order, and a `history`
/// request is answered by that reader.
async fn sync(ws: &mut WsClient) {
    let req = uuid();
    ws.send_json(&json!({"type": "history", "limit": 1, "req": req}))
        .await
        .unwrap();
    expect_where(ws, "history sync", |v| {
        v["type"] == "history" && v["req"] == req.as_str()
    })
    .await;
}

/// The receipts among `frames` other than `saved`.
fn acks_in(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "receipt" && f["status"] != "saved")
        .collect()
}

async fn history_status(
    s: &TestServer,
    acct: &hubbub_client::Account,
    room: &str,
    id: &str,
) -> String {
    let h = http_history(s, acct, room, "limit=100").await.json();
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in history: {h}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn delivered_then_seen_reach_the_sender_only() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a = s.join(&alice, "rc").await;
    let mut b = s.join(&bob, "rc").await;
    let mut c = s.join(&carol, "rc").await;

    let id = say(&mut a, "did you get this").await;
    let saved = expect_receipt(&mut a, &id, "saved").await;
    assert_eq!(
        saved,
        json!({"type": "receipt", "id": id, "status": "saved"}),
        "saved has no `by`"
    );
    assert_eq!(history_status(&s, &alice, "rc", &id).await, "saved");
    expect_msg(&mut b, &id).await;

    b.send_json(&ack(&id, "delivered")).await.unwrap();
    let r = expect_receipt(&mut a, &id, "delivered").await;
    assert_eq!(
        r,
        json!({"type": "receipt", "id": id, "status": "delivered", "by": bob.username})
    );
    assert_eq!(history_status(&s, &carol, "rc", &id).await, "delivered");

    b.send_json(&ack(&id, "seen")).await.unwrap();
    let r = expect_receipt(&mut a, &id, "seen").await;
    assert_eq!(r["by"], bob.username.as_str());
    assert_eq!(history_status(&s, &bob, "rc", &id).await, "seen");

    // Nobody but the sender got a receipt (they were routed before this marker).
    let seen = marker(&mut a, &mut [&mut b, &mut c]).await;
    for frames in &seen[1..] {
        assert!(
            of_type(frames, "receipt").is_empty(),
            "a receipt went to a non-sender: {frames:?}"
        );
    }
    // carol acks too: a receipt per recipient.
    c.send_json(&ack(&id, "delivered")).await.unwrap();
    let r = expect_receipt(&mut a, &id, "delivered").await;
    assert_eq!(r["by"], carol.username.as_str());
    // The message's status stays the highest any recipient reached.
    assert_eq!(history_status(&s, &alice, "rc", &id).await, "seen");
    s.stop().await;
}

#[tokio::test]
async fn a_late_delivered_after_seen_is_ignored() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "late").await;
    let mut b = s.join(&bob, "late").await;
    let id = say(&mut a, "one").await;
    let sentinel = say(&mut a, "two").await;
    expect_receipt(&mut a, &sentinel, "saved").await;

    b.send_json(&ack(&id, "seen")).await.unwrap();
    let r = expect_receipt(&mut a, &id, "seen").await;
    assert_eq!(r["by"], bob.username.as_str());
    b.send_json(&ack(&id, "delivered")).await.unwrap();
    b.send_json(&ack(&id, "seen")).await.unwrap();
    b.send_json(&ack(&sentinel, "delivered")).await.unwrap();
    let frames = until_receipt(&mut a, &sentinel, "delivered").await;
    let acks = acks_in(&frames);
    assert_eq!(
        acks.len(),
        1,
        "a backwards or repeated ack made a receipt: {frames:?}"
    );
    assert_eq!(history_status(&s, &alice, "late", &id).await, "seen");
    s.stop().await;
}

#[tokio::test]
async fn ignored_acks_make_no_receipt_and_no_error() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a = s.join(&alice, "ign").await;
    let mut b = s.join(&bob, "ign").await;
    let mut c = s.join(&carol, "ign").await;

    let public = say(&mut a, "public").await;
    let secret = uuid();
    a.send_json(&private(&secret, &bob.username, "for bob"))
        .await
        .unwrap();
    let sentinel = say(&mut a, "sentinel").await;
    expect_receipt(&mut a, &sentinel, "saved").await;
    expect_msg(&mut c, &sentinel).await;

    // The sender acking its own message.
    a.send_json(&ack(&public, "seen")).await.unwrap();
    a.send_json(&ack(&secret, "seen")).await.unwrap();
    sync(&mut a).await;
    // Unknown ids.
    b.send_json(&ack(&uuid(), "delivered")).await.unwrap();
    b.send_json(&json!({"type": "ack", "ids": [uuid(), uuid()], "status": "seen"}))
        .await
        .unwrap();
    sync(&mut b).await;
    // A private addressed to someone else.
    c.send_json(&ack(&secret, "delivered")).await.unwrap();
    c.send_json(&ack(&secret, "seen")).await.unwrap();
    // The sentinel: carol's valid ack, queued after all of the above.
    c.send_json(&ack(&sentinel, "seen")).await.unwrap();

    let frames = until_receipt(&mut a, &sentinel, "seen").await;
    let acks = acks_in(&frames);
    assert_eq!(acks.len(), 1, "an ignored ack made a receipt: {frames:?}");
    assert_eq!(acks[0]["by"], carol.username.as_str());
    // No error to anyone, and no receipt to anyone but the sender.
    let seen = marker(&mut a, &mut [&mut b, &mut c]).await;
    assert!(of_type(&seen[0], "error").is_empty(), "{:?}", seen[0]);
    for frames in &seen[1..] {
        assert!(
            frames
                .iter()
                .all(|f| f["type"] != "error" && f["type"] != "receipt"),
            "{frames:?}"
        );
    }
    assert_eq!(history_status(&s, &alice, "ign", &public).await, "saved");
    assert_eq!(history_status(&s, &alice, "ign", &secret).await, "saved");

    // The target's own ack of the private does count.
    b.send_json(&ack(&secret, "delivered")).await.unwrap();
    let r = expect_receipt(&mut a, &secret, "delivered").await;
    assert_eq!(r["by"], bob.username.as_str());
    s.stop().await;
}

#[tokio::test]
async fn batch_ack_with_ids() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "batch").await;
    let mut b = s.join(&bob, "batch").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(say(&mut a, &format!("m{i}")).await);
    }
    expect_msg(&mut b, ids.last().unwrap()).await;
    b.send_json(&json!({"type": "ack", "ids": ids, "status": "seen"}))
        .await
        .unwrap();
    let mut got = std::collections::HashSet::new();
    while got.len() < ids.len() {
        let r = expect_where(&mut a, "seen receipts", |v| {
            v["type"] == "receipt" && v["status"] == "seen"
        })
        .await;
        assert_eq!(r["by"], bob.username.as_str());
        assert!(ids.contains(&r["id"].as_str().unwrap().to_owned()), "{r}");
        assert!(
            got.insert(r["id"].as_str().unwrap().to_owned()),
            "duplicate {r}"
        );
    }
    // 100 ids is the maximum and allowed (unknown ones are skipped).
    let last = say(&mut a, "m5").await;
    expect_msg(&mut b, &last).await;
    let mut many: Vec<String> = (0..99).map(|_| uuid()).collect();
    many.push(last.clone());
    b.send_json(&json!({"type": "ack", "ids": many, "status": "seen"}))
        .await
        .unwrap();
    let r = expect_receipt(&mut a, &last, "seen").await;
    assert_eq!(r["by"], bob.username.as_str());
    let seen = marker(&mut b, &mut []).await;
    assert!(of_type(&seen[0], "error").is_empty(), "{:?}", seen[0]);
    let h = http_history(&s, &alice, "batch", "").await.json();
    for m in h["messages"].as_array().unwrap() {
        if m["content"] != "-- marker --" {
            assert_eq!(m["status"], "seen", "{m}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn resending_a_stored_id_is_idempotent() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "idem").await;
    let mut b = s.join(&bob, "idem").await;
    let id = say(&mut a, "only once").await;
    expect_msg(&mut b, &id).await;
    expect_receipt(&mut a, &id, "saved").await;

    // Same session, same content.
    a.send_json(&chat(&id, "only once")).await.unwrap();
    expect_receipt(&mut a, &id, "saved").await;
    // A new session (the reconnect case), different content: still the old message.
    let mut a2 = s.join(&alice, "idem").await;
    a2.send_json(&chat(&id, "changed my mind")).await.unwrap();
    let r = expect_receipt(&mut a2, &id, "saved").await;
    assert!(r.get("by").is_none(), "{r}");

    let seen = marker(&mut a2, &mut [&mut b, &mut a]).await;
    for frames in &seen {
        assert!(
            frames
                .iter()
                .all(|f| !((f["type"] == "chat" || f["type"] == "private")
                    && f["id"] == id.as_str())),
            "a resend was delivered again: {frames:?}"
        );
        assert!(of_type(frames, "error").is_empty(), "{frames:?}");
    }
    let h = http_history(&s, &bob, "idem", "").await.json();
    let copies: Vec<_> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == id.as_str())
        .collect();
    assert_eq!(copies.len(), 1, "{h}");
    assert_eq!(copies[0]["content"], "only once");

    // A private resent is idempotent too.
    let pid = uuid();
    a.send_json(&private(&pid, &bob.username, "dm"))
        .await
        .unwrap();
    expect_msg(&mut b, &pid).await;
    expect_receipt(&mut a, &pid, "saved").await;
    a.send_json(&private(&pid, &bob.username, "dm"))
        .await
        .unwrap();
    expect_receipt(&mut a, &pid, "saved").await;
    let seen = marker(&mut a, &mut [&mut b]).await;
    assert!(
        seen[1].iter().all(|f| f["id"] != pid.as_str()),
        "{:?}",
        seen[1]
    );
    s.stop().await;
}
