//! Read positions and room membership in a three-node cluster (issue 14):
//! both go through the replicated log, so a mention of a member whose
//! connection is on another node counts, and a position moved on one node
//! is the user's position on every node (`GET /api/rooms` anywhere).

use std::time::Duration;

use hubbub_client::{self as client, Account};
use serde_json::{Value, json};

use crate::support::*;

/// `acct`'s entry for `room` in `GET /api/rooms` at `node`, if listed.
async fn room_at(node: &Node, acct: &Account, room: &str) -> Option<Value> {
    let cookie = acct.cookie_header();
    let r = client::request(
        node.addr(),
        "GET",
        "/api/rooms",
        &[("cookie", &cookie)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["room"] == room)
        .cloned()
}

/// Waits (bounded) until `acct`'s entry for `room` at `node` is `want`:
/// a node applies the log a moment after the one that proposed.
async fn wait_for_entry(node: &Node, acct: &Account, room: &str, want: &Value) {
    let what = format!("{}: {room} is {want}", node.name);
    wait_for(&what, Duration::from_secs(30), || async move {
        room_at(node, acct, room).await.as_ref() == Some(want)
    })
    .await;
}

#[tokio::test]
async fn mentions_and_read_positions_hold_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let (nb, na, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    let room = name("rl");
    let bob_name = name("bob");
    let alice = user_at(na.addr(), &name("alice")).await;
    let bob = user_at(nb.addr(), &bob_name).await;
    // Bob on one node, alice on another: neither node saw the other's join.
    let mut b = join_at(nb.addr(), &bob, &room).await;
    let mut a = join_at(na.addr(), &alice, &room).await;
    // Bob's first join was proposed before his message, by the same node's
    // proposer: once alice's node shows the message, it knows bob's join.
    let hello = say(&mut b, "hello").await;
    expect_msg(&mut a, &hello).await;

    let id = say(&mut a, &format!("hi @{bob_name}")).await;
    let mine = expect_msg(&mut a, &id).await;
    assert_eq!(
        mine["mentions"],
        json!([bob_name]),
        "a member joined on another node is mentioned: {mine}"
    );
    let got = expect_msg(&mut b, &id).await;
    assert_eq!(got["mentions"], json!([bob_name]), "{got}");
    let cursor = got["cursor"].as_str().unwrap().to_owned();

    // Bob's room list is the same on a node he never joined on.
    let before = json!({"room": room, "last_cursor": cursor, "read_cursor": null, "unread": 1, "mentions": 1});
    wait_for_entry(nc, &bob, &room, &before).await;

    // Bob reads on his node: his connection hears it with the counts after it ...
    b.read(None, &cursor).await.unwrap();
    let read = expect_where(&mut b, "a read frame", |v| v["type"] == "read").await;
    assert_eq!(
        read,
        json!({"type": "read", "room": room, "cursor": cursor, "unread": 0, "mentions": 0})
    );
    // ... and the position is his on every node.
    let after = json!({"room": room, "last_cursor": cursor, "read_cursor": cursor, "unread": 0, "mentions": 0});
    for n in [na, nc] {
        wait_for_entry(n, &bob, &room, &after).await;
    }
}
