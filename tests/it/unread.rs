//! Read positions, unread and mention counts (issue 14): `GET /api/rooms`,
//! the `read` frame synced to every connection of a user, `mentions` on
//! chat frames and in history.

use crate::support::*;
use hubbub_client::{self as client, Account, WsClient};
use serde_json::{Value, json};

/// A multi-room connection subscribed to `rooms` (each `subscribed` and its
/// `history` read).
async fn multi_in(s: &TestServer, acct: &Account, rooms: &[&str]) -> WsClient {
    let mut ws = client::join_multi(s.addr, acct, None).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    for room in rooms {
        ws.subscribe(room, None).await.unwrap();
        expect_where(&mut ws, "subscribed", |v| v["type"] == "subscribed").await;
        expect_where(&mut ws, "its history", |v| v["type"] == "history").await;
    }
    ws
}

/// `GET /api/rooms` as `acct`: the list.
async fn rooms_of(s: &TestServer, acct: &Account) -> Vec<Value> {
    let r = http(s, "GET", "/api/rooms", Some(acct), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["rooms"].as_array().unwrap().clone()
}

/// The entry of `room` in `acct`'s room list.
async fn room_entry(s: &TestServer, acct: &Account, room: &str) -> Value {
    let list = rooms_of(s, acct).await;
    list.into_iter()
        .find(|r| r["room"] == room)
        .unwrap_or_else(|| panic!("{room} not in the room list"))
}

/// The next `read` frame.
async fn next_read(ws: &mut WsClient) -> Value {
    expect_where(ws, "a read frame", |v| v["type"] == "read").await
}

#[tokio::test]
async fn unread_and_mentions_sync_across_one_users_connections() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob_name = name("bob");
    let bob = s.user(&bob_name).await;
    // Carol exists but never joins the room: a mention of her is just text.
    let carol_name = name("carol");
    s.user(&carol_name).await;
    let mut v1 = s.join(&bob, "ur").await;
    let mut multi = multi_in(&s, &bob, &["ur", "quiet"]).await;
    let mut a = s.join(&alice, "ur").await;

    let m1 = say_saved(&mut a, "one").await;
    let m2 = say_saved(&mut a, &format!("hey @{bob_name} and @{carol_name}")).await;
    let m3 = say_saved(&mut a, &format!("@{carol_name} three")).await;
    let c = |m: &Value| m["cursor"].as_str().unwrap().to_owned();
    assert_eq!(m2["mentions"], json!([bob_name]), "{m2}");
    assert!(m1.get("mentions").is_none() && m3.get("mentions").is_none());
    for ws in [&mut v1, &mut multi] {
        let live = expect_msg(ws, m2["id"].as_str().unwrap()).await;
        assert_eq!(live["mentions"], json!([bob_name]), "{live}");
        let live = expect_msg(ws, m3["id"].as_str().unwrap()).await;
        assert!(live.get("mentions").is_none(), "{live}");
    }
    let page = http_history(&s, &bob, "ur", "").await.json();
    let stored: Vec<&Value> = page["messages"].as_array().unwrap().iter().collect();
    assert_eq!(stored[1]["mentions"], json!([bob_name]), "{page}");
    assert!(stored[2].get("mentions").is_none(), "{page}");

    // Newest activity first; a room without messages last.
    let list = rooms_of(&s, &bob).await;
    assert_eq!(
        list,
        [
            json!({"room": "ur", "last_cursor": c(&m3), "read_cursor": null, "unread": 3, "mentions": 1}),
            json!({"room": "quiet", "last_cursor": null, "read_cursor": null, "unread": 0, "mentions": 0}),
        ]
    );

    // A read on the v1 session reaches both connections, the multi-room one
    // once although it has two subscriptions.
    v1.read(None, &c(&m1)).await.unwrap();
    let want = json!({"type": "read", "room": "ur", "cursor": c(&m1), "unread": 2, "mentions": 1});
    assert_eq!(next_read(&mut v1).await, want);
    assert_eq!(next_read(&mut multi).await, want);
    // A read on the multi-room connection, the same way.
    multi.read(Some("ur"), &c(&m2)).await.unwrap();
    let want = json!({"type": "read", "room": "ur", "cursor": c(&m2), "unread": 1, "mentions": 0});
    assert_eq!(next_read(&mut multi).await, want);
    assert_eq!(next_read(&mut v1).await, want);
    let e = room_entry(&s, &bob, "ur").await;
    assert_eq!(
        (e["read_cursor"].as_str(), &e["unread"], &e["mentions"]),
        (Some(c(&m2).as_str()), &json!(1), &json!(0))
    );

    // Backwards: ignored (no frame, position kept). The marker proves no
    // `read` came for it: frames of one connection arrive in order.
    v1.read(None, &c(&m1)).await.unwrap();
    let [_, to_v1, to_multi] = &marker(&mut a, &mut [&mut v1, &mut multi]).await[..] else {
        unreachable!()
    };
    assert!(of_type(to_v1, "read").is_empty(), "{to_v1:?}");
    assert!(of_type(to_multi, "read").is_empty(), "{to_multi:?}");
    assert_eq!(room_entry(&s, &bob, "ur").await["read_cursor"], c(&m2));

    // Own messages never count, and sending does not move the position.
    let own = say_saved(&mut v1, "my own").await;
    let e = room_entry(&s, &bob, "ur").await;
    assert_eq!(e["last_cursor"], c(&own));
    assert_eq!(e["read_cursor"], c(&m2));
    assert_eq!(e["unread"], 2, "m3 and the marker, not bob's own: {e}");
    let e = room_entry(&s, &alice, "ur").await;
    assert_eq!(e["unread"], 1, "only bob's message: {e}");
    s.stop().await;
}

#[tokio::test]
async fn read_frame_errors_and_unauthenticated_room_list() {
    let s = TestServer::start().await;
    let bob = s.user(&name("bob")).await;
    let mut v1 = s.join(&bob, "er").await;
    let mut multi = multi_in(&s, &bob, &["er"]).await;
    for bad in [
        json!({"type": "read", "cursor": "nope"}),
        json!({"type": "read"}),
    ] {
        v1.send_json(&bad).await.unwrap();
        assert_eq!(expect_error(&mut v1).await["code"], "bad_request", "{bad}");
    }
    let bad = json!({"type": "read", "room": "er", "cursor": "0".repeat(31)});
    multi.send_json(&bad).await.unwrap();
    assert_eq!(expect_error(&mut multi).await["code"], "bad_request");
    let cursor = "0".repeat(31) + "1";
    multi
        .send_json(&json!({"type": "read", "cursor": cursor}))
        .await
        .unwrap();
    assert_eq!(expect_error(&mut multi).await["code"], "bad_request");
    multi.read(Some("elsewhere"), &cursor).await.unwrap();
    assert_eq!(expect_error(&mut multi).await["code"], "not_subscribed");

    let r = client::request(s.addr, "GET", "/api/rooms", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn counts_stop_at_one_hundred() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob_name = name("bob");
    let bob = s.user(&bob_name).await;
    drop(s.join(&bob, "busy").await);
    let mut a = s.join(&alice, "busy").await;
    let mut last = String::new();
    for i in 0..105 {
        last = say(&mut a, &format!("{i} @{bob_name}")).await;
    }
    expect_receipt(&mut a, &last, "saved").await;
    let e = room_entry(&s, &bob, "busy").await;
    assert_eq!(
        (&e["unread"], &e["mentions"]),
        (&json!(100), &json!(100)),
        "{e}"
    );
    s.stop().await;
}
