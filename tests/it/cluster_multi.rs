//! A multi-room connection (`/ws?multi=1`) in a three-node cluster: its
//! rooms' messages come from users on other nodes through the same replicated
//! log and links as single-room sessions, what it sends reaches them, and each
//! subscription resumes exactly with its own `since` after a reconnect.

use hubbub_client::{self as client, Account, WsClient};
use serde_json::{Value, json};

use crate::support::*;

/// The node the ring makes `acct`'s home (multi-room connections are routed
/// like any other: a client opens them at home).
async fn home_of<'a>(nodes: &'a [Node], acct: &Account) -> &'a Node {
    let (home, _) = client::route(nodes[0].addr(), acct)
        .await
        .unwrap()
        .expect("a cluster answers /api/cluster/route");
    nodes
        .iter()
        .find(|n| n.name == home)
        .unwrap_or_else(|| panic!("home {home} is one of the nodes"))
}

/// Subscribes `room` and returns the `history` behind its `subscribed`.
async fn subscribe(ws: &mut WsClient, room: &str, since: Option<&str>) -> Value {
    ws.subscribe(room, since).await.unwrap();
    let sub = expect_where(ws, "subscribed", |v| {
        v["type"] == "subscribed" && v["room"] == room
    })
    .await;
    let history = next_frame(ws).await;
    assert_eq!(history["type"], "history", "after {sub}: {history}");
    assert_eq!(history["room"], room, "{history}");
    history
}

/// A node other than `home` (an index different from `home`'s).
fn other<'a>(nodes: &'a [Node], home: &Node, skip: usize) -> &'a Node {
    nodes
        .iter()
        .filter(|n| n.name != home.name)
        .nth(skip)
        .expect("three nodes")
}

#[tokio::test]
async fn a_multi_room_connection_hears_every_node_and_resumes_each_room() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let (ra, rb) = (name("ra"), name("rb"));
    let alice = user_at(nodes[0].addr(), &name("alice")).await;
    let home = home_of(&nodes, &alice).await;
    // Bob and carol sit on the two other nodes, one room each.
    let (nb, nc) = (other(&nodes, home, 0), other(&nodes, home, 1));
    let bob = user_at(nb.addr(), &name("bob")).await;
    let carol = user_at(nc.addr(), &name("carol")).await;
    let mut b = join_at(nb.addr(), &bob, &ra).await;
    let mut c = join_at(nc.addr(), &carol, &rb).await;

    let mut a = client::join_multi(home.addr(), &alice, Some("tab"))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut a).await["type"], "welcome");
    subscribe(&mut a, &ra, None).await;
    subscribe(&mut a, &rb, None).await;

    // Each room's message reaches alice from another node, naming its room.
    let id = say(&mut b, "from bob").await;
    let got = expect_msg(&mut a, &id).await;
    assert_eq!(got["room"], ra.as_str(), "{got}");
    let id = say(&mut c, "from carol").await;
    let got = expect_msg(&mut a, &id).await;
    assert_eq!(got["room"], rb.as_str(), "{got}");
    let last_rb = got["cursor"].as_str().unwrap().to_owned();
    // What alice sends in ra reaches bob's node, and only ra.
    let id = uuid();
    let f = json!({"type": "chat", "id": id, "content": "to ra", "room": ra});
    a.send_json(&f).await.unwrap();
    let got = expect_msg(&mut b, &id).await;
    assert_eq!(got["room"], ra.as_str(), "{got}");
    let last_ra = expect_msg(&mut a, &id).await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();

    // Alice goes away; both rooms move on; each subscription resumes exactly.
    drop(a);
    let mut missed_ra = Vec::new();
    let mut missed_rb = Vec::new();
    for i in 0..3 {
        missed_ra.push(say(&mut b, &format!("ra {i}")).await);
        missed_rb.push(say(&mut c, &format!("rb {i}")).await);
    }
    // Both writers saw their own last message: it is in the log.
    expect_msg(&mut b, missed_ra.last().unwrap()).await;
    expect_msg(&mut c, missed_rb.last().unwrap()).await;
    let mut a = client::join_multi(home.addr(), &alice, Some("tab"))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut a).await["type"], "welcome");
    for (room, since, missed) in [(&ra, &last_ra, &missed_ra), (&rb, &last_rb, &missed_rb)] {
        let page = wait_for_page(&mut a, room, since, missed.len()).await;
        let ids: Vec<&str> = page.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let want: Vec<&str> = missed.iter().map(String::as_str).collect();
        assert_eq!(ids, want, "{room}: exactly what was missed, in order");
    }
}

/// Subscribes with `since` and returns the resumed page's messages. The
/// home node may apply the log a moment after the writers' nodes did, so a
/// short page is unsubscribed and asked again (bounded).
async fn wait_for_page(ws: &mut WsClient, room: &str, since: &str, want: usize) -> Vec<Value> {
    for _ in 0..50 {
        let page = subscribe(ws, room, Some(since)).await;
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        if msgs.len() >= want {
            return msgs;
        }
        ws.unsubscribe(room).await.unwrap();
        expect_where(ws, "unsubscribed", |v| {
            v["type"] == "unsubscribed" && v["room"] == room
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{room}: the resumed page never held {want} messages");
}
