//! Issue 12, routing: users homed by the ring, a 307 before the upgrade at
//! any other node, the loop shield, `/api/cluster/route`, and users moved
//! when membership changes. Three real processes per test.

use std::net::SocketAddr;
use std::time::Duration;

use hubbub::cluster::ring::{Home, Ring};
use hubbub_client::{self as client, ConnectError, Endpoint};
use serde_json::Value;

use crate::support::{
    Node, T, closed_code, formed, join_at, metric_sample, signal, spawn_cluster, spawn_node,
    user_at, wait_for,
};

/// Bound on a membership change reaching the ring plus its 2 s settling.
const MOVE_BOUND: Duration = Duration::from_secs(20);
const ACTIVE: &str = "hubbub_sessions{state=\"active\"}";

/// The ring the nodes build over these names (URLs do not place anyone).
fn ring(names: &[&str]) -> Ring {
    Ring::new(names.iter().map(|n| Home {
        node: (*n).to_owned(),
        url: String::new(),
    }))
}

/// The first name `prefix<i>` for which `want` holds.
fn name_where(prefix: &str, want: impl Fn(&str) -> bool) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| want(n))
        .expect("no such name in 10 000")
}

/// `/api/cluster/route` at `addr` for `acct`: (node, url).
async fn route(addr: SocketAddr, acct: &client::Account) -> (String, String) {
    client::route(addr, acct)
        .await
        .unwrap()
        .expect("not a cluster")
}

fn cookie(acct: &client::Account) -> String {
    acct.cookie_header()
}

/// One upgrade of `target` at `addr`, a 307 not followed.
async fn upgrade_once(
    addr: SocketAddr,
    target: &str,
    acct: &client::Account,
) -> Result<client::WsClient, ConnectError> {
    let c = cookie(acct);
    client::ws::upgrade(&Endpoint::from(addr), target, &[("cookie", &c)]).await
}

/// Sessions welcomed at the node at `addr`.
async fn active(addr: SocketAddr) -> f64 {
    metric_sample(addr, ACTIVE).await.unwrap_or(0.0)
}

fn by_name<'a>(nodes: &'a [Node], name: &str) -> &'a Node {
    nodes.iter().find(|n| n.name == name).unwrap()
}

/// The path and query of a `Location` (`ws://host:port/ws?…`).
fn target_of(location: &str) -> &str {
    let rest = location.split_once("://").unwrap().1;
    &rest[rest.find('/').unwrap()..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_away_from_home_is_redirected_home_and_every_node_agrees() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let (n1, addrs) = (
        nodes[0].addr(),
        nodes.iter().map(Node::addr).collect::<Vec<_>>(),
    );

    // Every node names the same home, the ring's, for every user.
    let full = ring(&["n1", "n2", "n3"]);
    for i in 0..6 {
        let acct = user_at(n1, &format!("routed{i}")).await;
        let want = full.home(&acct.username).unwrap().node.clone();
        for a in &addrs {
            assert_eq!(route(*a, &acct).await.0, want, "{} at {a}", acct.username);
        }
    }

    // A user homed on n2 or n3, at n1: 307 to its home with `from=n1`.
    let away = name_where("away", |n| full.home(n).unwrap().node != "n1");
    let acct = user_at(n1, &away).await;
    let (home, url) = route(n1, &acct).await;
    let location = match upgrade_once(n1, "/ws?room=lobby&client=c1", &acct).await {
        Err(ConnectError::Redirect(to)) => to,
        Err(e) => panic!("not a redirect: {e}"),
        Ok(_) => panic!("served away from home"),
    };
    println!("307 at n1 for {away} (home {home}): Location {location}");
    assert!(
        location.starts_with(&format!("{url}?")),
        "{location} is not at {url}"
    );
    for part in ["room=lobby", "client=c1", "from=n1"] {
        assert!(location.contains(part), "{location} lacks {part}");
    }
    // Following it: served at the home node.
    let home_addr = by_name(&nodes, &home).addr();
    let before = active(home_addr).await;
    let mut ws = client::join(n1, &acct, "lobby", None, None).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    wait_for("the session counted at its home", T, || async {
        active(home_addr).await > before
    })
    .await;
    drop(ws);

    // `from` naming the ring's choice: served here (the loop shield).
    let before = active(n1).await;
    let mut here = upgrade_once(n1, &format!("/ws?room=lobby&from={home}"), &acct)
        .await
        .unwrap_or_else(|e| panic!("from={home} at n1: {e}"));
    here.expect("welcome", T).await.unwrap();
    wait_for("the session counted at n1", T, || async {
        active(n1).await > before
    })
    .await;

    // A user homed on n1 is served at n1 without a redirect.
    let at_home = name_where("home", |n| full.home(n).unwrap().node == "n1");
    let acct = user_at(n1, &at_home).await;
    let mut ws = upgrade_once(n1, "/ws?room=lobby", &acct)
        .await
        .unwrap_or_else(|e| panic!("{at_home} at its home: {e}"));
    ws.expect("welcome", T).await.unwrap();
}

/// Test 2: n1 leaves n3 off its ring (`--ring-exclude`, as if it had not
/// heard n3 join), n2 and n3 count it. A user whose home is n3 on the full
/// ring and n2 on n1's is redirected by n1 to n2, and n2 serves it although
/// its own ring says n3: never a second redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_different_rings_redirect_a_client_at_most_once() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    let first = spawn_node("n1", &p.join("n1"), &[], &["--ring-exclude", "n3"]);
    let seed = [first.cluster];
    let nodes = vec![
        first,
        spawn_node("n2", &p.join("n2"), &seed, &[]),
        spawn_node("n3", &p.join("n3"), &seed, &[]),
    ];
    formed(&nodes).await;
    let (n1, n2) = (nodes[0].addr(), nodes[1].addr());
    let (full, partial) = (ring(&["n1", "n2", "n3"]), ring(&["n1", "n2"]));
    let name = name_where("split", |n| {
        full.home(n).unwrap().node == "n3" && partial.home(n).unwrap().node == "n2"
    });
    let acct = user_at(n1, &name).await;
    assert_eq!(route(n1, &acct).await.0, "n2", "n1's view");
    assert_eq!(route(n2, &acct).await.0, "n3", "n2's view");

    let location = match upgrade_once(n1, "/ws?room=lobby", &acct).await {
        Err(ConnectError::Redirect(to)) => to,
        Err(e) => panic!("n1: not a redirect: {e}"),
        Ok(_) => panic!("n1 served a user it homes on n2"),
    };
    assert!(location.contains(&format!(":{}/", n2.port())), "{location}");
    let before = active(n2).await;
    let mut ws = match upgrade_once(n2, target_of(&location), &acct).await {
        Ok(ws) => ws,
        Err(ConnectError::Redirect(to)) => panic!("redirected a second time, to {to}"),
        Err(e) => panic!("n2 refused the redirected client: {e}"),
    };
    ws.expect("welcome", T).await.unwrap();
    wait_for("the session counted at n2", T, || async {
        active(n2).await > before
    })
    .await;
    println!("{name}: n1 → 307 → n2, served there although n2's ring says n3");
}

/// `content` of the chat frames among `frames`, in order.
fn chats(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "chat")
        .map(|f| f["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads `ws` until a chat with `content` arrives; returns its cursor.
async fn cursor_of(ws: &mut client::WsClient, content: &str) -> String {
    loop {
        let f = ws.expect("chat", T).await.unwrap();
        if f["content"] == content {
            return f["cursor"].as_str().unwrap().to_owned();
        }
    }
}

/// Joins with `since` at `addr` (following the redirect home); the chats
/// of its history and then live ones, until `want` of them arrived (those
/// sent just before may still be on their way through the log: they come
/// live, after the history).
async fn resume(
    addr: SocketAddr,
    acct: &client::Account,
    since: &str,
    want: usize,
) -> (client::WsClient, Vec<String>) {
    let mut ws = client::join(addr, acct, "lobby", None, Some(since))
        .await
        .unwrap();
    let w = ws.expect("welcome", T).await.unwrap();
    assert_eq!(w["resumed"], true, "{w}");
    let h = ws.expect("history", T).await.unwrap();
    let mut got = chats(h["messages"].as_array().unwrap());
    while got.len() < want {
        let f = ws.expect("chat", T).await.unwrap();
        got.push(f["content"].as_str().unwrap().to_owned());
    }
    (ws, got)
}

/// Test 1, membership: a user homed on n3 is closed with 1001 when n3
/// drains and resumes at its new home with no gap; when n3 is back, the
/// ring settles and the user is moved home again (1001), again with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_follow_their_home_through_a_drain_and_a_return_without_a_gap() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let n1 = nodes[0].addr();
    let full = ring(&["n1", "n2", "n3"]);
    let name = name_where("mover", |n| full.home(n).unwrap().node == "n3");
    let acct = user_at(n1, &name).await;
    // The writer's home is n1 with or without n3: never moved itself.
    let writer = name_where("writer", |n| full.home(n).unwrap().node == "n1");
    let writer = user_at(n1, &writer).await;
    let mut w = join_at(n1, &writer, "lobby").await;
    let mut ws = client::join(n1, &acct, "lobby", None, None).await.unwrap();
    ws.expect("welcome", T).await.unwrap();
    ws.expect("history", T).await.unwrap();
    let n3 = nodes[2].addr();
    wait_for("served at its home n3", T, || async {
        active(n3).await >= 1.0
    })
    .await;

    w.send(&client::frames::chat("before the drain").1)
        .await
        .unwrap();
    let since = cursor_of(&mut ws, "before the drain").await;
    signal(&nodes[2], libc::SIGTERM);
    assert_eq!(closed_code(&mut ws).await, Some(1001), "n3 draining");
    let sent: Vec<String> = (0..3).map(|i| format!("while moving {i}")).collect();
    for s in &sent {
        w.send(&client::frames::chat(s).1).await.unwrap();
    }
    wait_for("a new home for the user", MOVE_BOUND, || async {
        client::route(n1, &acct)
            .await
            .is_ok_and(|r| r.is_some_and(|(n, _)| n != "n3"))
    })
    .await;
    let (mut ws, got) = resume(n1, &acct, &since, sent.len()).await;
    assert_eq!(got, sent, "the resume at the new home");
    nodes[2].proc.child.wait().unwrap();

    // n3 returns: once the ring has settled, the user is moved back.
    w.send(&client::frames::chat("before the return").1)
        .await
        .unwrap();
    let since = cursor_of(&mut ws, "before the return").await;
    let seed = [nodes[0].cluster];
    let back = spawn_node("n3", &root.path().join("n3"), &seed, &[]);
    nodes[2] = back;
    let t0 = std::time::Instant::now();
    let code = tokio::time::timeout(MOVE_BOUND, closed_code(&mut ws))
        .await
        .expect("not moved home within the bound");
    println!(
        "moved home {:?} after n3 restarted (ring settles 2 s after n3 is ready)",
        t0.elapsed()
    );
    assert_eq!(code, Some(1001), "the move home");
    w.send(&client::frames::chat("after the return").1)
        .await
        .unwrap();
    assert_eq!(route(n1, &acct).await.0, "n3");
    let (_ws, got) = resume(n1, &acct, &since, 1).await;
    assert_eq!(got, ["after the return"], "the resume at home");
    let n3 = nodes[2].addr();
    wait_for("served at n3 again", T, || async {
        active(n3).await >= 1.0
    })
    .await;
}

/// A user redirected home right after signing up elsewhere: the home may
/// not have applied the sign-up yet. Its token is genuine, so the node
/// catches up before it decides (no 401 for a fresh account). The lag is
/// made sure of: the node is stopped while the sign-up commits on the
/// other two, and asked the moment it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_account_is_known_at_once_on_a_node_that_lags() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    for i in 0..3 {
        let (at, lag) = (&nodes[i % 3], &nodes[(i + 1) % 3]);
        signal(lag, libc::SIGSTOP);
        let acct = user_at(at.addr(), &format!("fresh{i}")).await;
        signal(lag, libc::SIGCONT);
        let (r, ws) = tokio::join!(
            client::route(lag.addr(), &acct),
            upgrade_once(lag.addr(), "/ws?room=lobby&from=any", &acct)
        );
        r.unwrap_or_else(|e| panic!("fresh{i}: route at {}: {e}", lag.name))
            .expect("not a cluster");
        ws.unwrap_or_else(|e| panic!("fresh{i}: upgrade at {}: {e}", lag.name))
            .expect("welcome", T)
            .await
            .unwrap();
    }
}
