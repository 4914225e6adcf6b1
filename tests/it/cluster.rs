//! Cluster mode, part 1: three hubbub processes on loopback. Membership and
//! failure detection over authenticated gossip; forged gossip rejected.
//! Times are printed (for docs/BENCHMARKS.md) and bounded generously: a
//! bound fails only when the mechanism is broken, not when the machine is slow.

use std::time::{Duration, Instant};

use hubbub::cluster::gossip::transport::{MAX_SKEW, seal, wall_ms};
use hubbub::cluster::keys::ClusterKeys;
use hubbub_client as client;

use crate::support::*;

/// chitchat's default failure detector takes 5–10 s; ours about 1 s.
const DETECTION_BOUND: Duration = Duration::from_secs(4);
const FORM_BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn three_nodes_form_and_list_each_other() {
    let root = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("three nodes live and ready everywhere", FORM_BOUND, || {
        all_ready(&refs, &["n1", "n2", "n3"])
    })
    .await;
    println!(
        "formation: all three live and ready on every node {:?} after the first start",
        t0.elapsed()
    );
    for n in &nodes {
        let (status, _) = raw_get(n.addr(), "/readyz").await;
        assert_eq!(status, 200, "{} ready", n.name);
        let s = cluster_status(n.addr()).await;
        assert_eq!(s["node"], n.name.as_str());
        assert_eq!(s["generation"], n.generation);
        let me = member(n.addr(), &n.name).await.unwrap();
        assert_eq!(me["this_node"], true);
        assert_eq!(me["addr"], n.cluster.to_string());
        assert_eq!(me["url"], format!("http://{}", n.addr()));
        assert_eq!(
            metric_sample(n.addr(), "hubbub_cluster_members{state=\"ready\"}").await,
            Some(3.0)
        );
    }
    // Any logged-in user learns where clients may connect; nobody else.
    let (status, _) = raw_get(nodes[1].addr(), "/api/cluster/nodes").await;
    assert_eq!(status, 401);
    let acct = client::signup_or_login(nodes[1].addr(), "ann", "password-ann-1")
        .await
        .unwrap();
    let r = client::request(
        nodes[1].addr(),
        "GET",
        "/api/cluster/nodes",
        &[("cookie", &acct.cookie_header())],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let mut urls: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["url"].as_str().unwrap().to_owned())
        .collect();
    urls.sort();
    let mut want: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}", n.addr()))
        .collect();
    want.sort();
    assert_eq!(urls, want);
}

#[tokio::test]
async fn a_killed_node_is_marked_dead_and_returns_as_a_new_generation() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let old_generation = nodes[2].generation;
    nodes[2].kill();
    let killed = Instant::now();
    let (a, b) = (nodes[0].addr(), nodes[1].addr());
    let dead_on = |addr| async move {
        wait_for(
            "n3 marked dead",
            DETECTION_BOUND + FORM_BOUND,
            || async move { member(addr, "n3").await.unwrap()["live"] == false },
        )
        .await;
        killed.elapsed()
    };
    let (ta, tb) = tokio::join!(dead_on(a), dead_on(b));
    println!("detection: kill -9 → dead on n1 after {ta:?}, on n2 after {tb:?}");
    assert!(
        ta < DETECTION_BOUND && tb < DETECTION_BOUND,
        "detection took {ta:?} / {tb:?}"
    );
    // A survivor's readiness does not depend on a dead peer.
    assert_eq!(raw_get(a, "/readyz").await.0, 200);

    let seed = [nodes[0].cluster];
    let dir = nodes[2].dir.clone();
    let back = spawn_node("n3", &dir, &seed, &[]);
    assert!(
        back.generation > old_generation,
        "a restart is a new generation"
    );
    let refs = [&nodes[0], &nodes[1], &back];
    wait_for("n3 back, live and ready", FORM_BOUND, || {
        all_ready(&refs, &["n1", "n2", "n3"])
    })
    .await;
    for n in [&nodes[0], &nodes[1]] {
        let m = member(n.addr(), "n3").await.unwrap();
        assert_eq!(
            m["generation"], back.generation,
            "the newest generation is shown"
        );
    }
}

#[tokio::test]
async fn forged_gossip_and_strangers_never_join() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 2, &["--bootstrap-expect", "2"]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("two nodes formed", FORM_BOUND, || {
        all_ready(&refs, &["n1", "n2"])
    })
    .await;
    let n1 = &nodes[0];
    let rejected = |reason: &'static str| async move {
        metric_sample(
            n1.addr(),
            &format!("hubbub_gossip_rejected_total{{reason=\"{reason}\"}}"),
        )
        .await
        .unwrap()
    };

    // A whole node started with another secret, seeded with n1.
    let stranger = spawn_node(
        "n9",
        &root.path().join("n9"),
        &[n1.cluster],
        &[
            "--cluster-secret",
            "another-secret-another-secret-0123456789",
            "--bootstrap-expect",
            "2",
        ],
    );
    wait_for("the stranger's datagrams rejected", FORM_BOUND, || async {
        rejected("mac").await > 0.0
    })
    .await;

    // Datagrams from a socket that is no node at all.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let key = ClusterKeys::derive(cluster_secret(&n1.dir).as_bytes())
        .unwrap()
        .gossip;
    let wrong = ClusterKeys::derive(b"wrong-secret-wrong-secret-0123456789")
        .unwrap()
        .gossip;
    let before = (rejected("length").await, rejected("mac").await);
    udp.send_to(b"random bytes, not a datagram", n1.cluster)
        .await
        .unwrap();
    for d in seal(&wrong, wall_ms(), 1, b"forged") {
        udp.send_to(&d, n1.cluster).await.unwrap();
    }
    let mut flipped = seal(&key, wall_ms(), 2, b"tampered").remove(0);
    flipped[20] ^= 0x55;
    udp.send_to(&flipped, n1.cluster).await.unwrap();
    wait_for("length and mac rejections counted", FORM_BOUND, || async {
        rejected("length").await > before.0 && rejected("mac").await >= before.1 + 2.0
    })
    .await;

    // Authentic but recorded long ago: stale. Authentic twice: a replay.
    let old = wall_ms() - MAX_SKEW.as_millis() as u64 - 5_000;
    let stale_before = rejected("stale").await;
    for d in seal(&key, old, 3, b"recorded long ago") {
        udp.send_to(&d, n1.cluster).await.unwrap();
    }
    let fresh = seal(&key, wall_ms(), 4, b"not a chitchat message").remove(0);
    let (decode_before, replay_before) = (rejected("decode").await, rejected("replay").await);
    udp.send_to(&fresh, n1.cluster).await.unwrap();
    udp.send_to(&fresh, n1.cluster).await.unwrap();
    wait_for("stale, decode and replay counted", FORM_BOUND, || async {
        rejected("stale").await > stale_before
            && rejected("decode").await > decode_before
            && rejected("replay").await > replay_before
    })
    .await;

    // Nothing of it joined: n1 and n2 know only each other, the stranger only
    // itself (and never forms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in &nodes {
        let s = cluster_status(n.addr()).await;
        let names: Vec<&str> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["node"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["n1", "n2"], "on {}", n.name);
    }
    let s = cluster_status(stranger.addr()).await;
    assert_eq!(s["members"].as_array().unwrap().len(), 1);
    assert_eq!(s["ready"], false);
    assert_eq!(raw_get(stranger.addr(), "/readyz").await.0, 503);
}

#[tokio::test]
async fn a_single_node_has_no_cluster_endpoints() {
    let s = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let r = admin_request(s.addr, "GET", "/api/admin/cluster").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        metric_sample(s.addr, "hubbub_cluster_members{state=\"ready\"}").await,
        None
    );
}

#[tokio::test]
async fn users_on_three_nodes_chat_in_one_order_and_read_one_history() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    let t0 = Instant::now();
    formed(&nodes).await;
    println!(
        "formation: log has a leader {:?} after the nodes were up",
        t0.elapsed()
    );
    // One user per node.
    let mut users = Vec::new();
    let mut socks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let acct = user_at(n.addr(), &name(&format!("u{i}"))).await;
        socks.push(join_at(n.addr(), &acct, "lobby").await);
        users.push(acct);
    }
    const EACH: usize = 5;
    let mut sent = Vec::new();
    for round in 0..EACH {
        for (i, ws) in socks.iter_mut().enumerate() {
            sent.push(say(ws, &format!("m{round} from {i}")).await);
        }
    }
    // Everyone sees every message exactly once, in one order, with one cursor each.
    let mut orders = Vec::new();
    for ws in &mut socks {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut saved = 0;
        while seen.len() < sent.len() {
            let f = next_frame(ws).await;
            match f["type"].as_str() {
                Some("chat") => seen.push((
                    f["id"].as_str().unwrap().to_owned(),
                    f["cursor"].as_str().unwrap().to_owned(),
                )),
                Some("receipt") if f["status"] == "saved" => saved += 1,
                _ => {}
            }
        }
        let ids: std::collections::BTreeSet<&String> = seen.iter().map(|(i, _)| i).collect();
        assert_eq!(ids.len(), sent.len(), "each message once");
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "cursors rise");
        // The rest of this client's own `saved` receipts.
        while saved < EACH {
            let f = next_frame(ws).await;
            if f["type"] == "receipt" && f["status"] == "saved" {
                saved += 1;
            }
        }
        orders.push(seen);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    // History read from each node is the same: ids, cursors, order.
    let mut pages = Vec::new();
    for (n, acct) in nodes.iter().zip(&users) {
        let r = client::request(
            n.addr(),
            "GET",
            "/api/rooms/lobby/messages?limit=100",
            &[("cookie", &acct.cookie_header())],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let got = ids_and_cursors(&v);
        pages.push(got);
    }
    assert_eq!(pages[0], orders[0]);
    assert_eq!(pages[1], pages[0]);
    assert_eq!(pages[2], pages[0]);
}

#[tokio::test]
async fn a_node_without_a_majority_stops_serving_and_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let n3 = nodes[2].addr();
    let acct = user_at(n3, &name("alone")).await;
    let mut ws = join_at(n3, &acct, "lobby").await;
    say_saved(&mut ws, "before").await;
    nodes[0].kill();
    nodes[1].kill();
    let lost = Instant::now();
    // Its socket is closed with 1001 (clients go elsewhere); /readyz turns 503.
    let closed = closed_code(&mut ws).await;
    println!(
        "minority: sessions closed {:?} after losing the majority",
        lost.elapsed()
    );
    assert_eq!(closed, Some(1001));
    assert_eq!(raw_get(n3, "/readyz").await.0, 503);
    let cookie = acct.cookie_header();
    let again = client::connect(n3, "room=lobby", &[("cookie", cookie.as_str())]).await;
    assert_eq!(
        upgrade_status(again),
        503,
        "no new sessions without a majority"
    );
    // The majority returns: n3 serves again, and what it saved before is there.
    let seed = [nodes[2].cluster];
    let d1 = nodes[0].dir.clone();
    let d2 = nodes[1].dir.clone();
    let back1 = spawn_node("n1", &d1, &seed, &[]);
    let back2 = spawn_node("n2", &d2, &seed, &[]);
    let refs = [&back1, &back2, &nodes[2]];
    wait_for("serving again", FORM_BOUND, || {
        all_ready(&refs, &["n1", "n2", "n3"])
    })
    .await;
    let mut ws = join_at(n3, &acct, "lobby").await;
    say_saved(&mut ws, "after").await;
}

/// `POST path` at `addr` with a JSON body and optional cookies.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let h: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    client::request(addr, "POST", path, &h, body).await.unwrap()
}

#[tokio::test]
async fn accounts_work_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    let (n1, n2, n3) = (nodes[0].addr(), nodes[1].addr(), nodes[2].addr());
    // Sign up on n1, log in on n3, refresh on n2.
    let who = name("acct");
    let creds = format!(r#"{{"username":"{who}","password":"{PASSWORD}"}}"#);
    let r = post(n1, "/api/auth/signup", None, Some(&creds)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post(n3, "/api/auth/login", None, Some(&creds)).await;
    assert_eq!(r.status, 200, "log in on another node: {}", r.body);
    let refresh = r.cookie("refresh_token").unwrap();
    let r = post(
        n2,
        "/api/auth/refresh",
        Some(&format!("refresh_token={refresh}")),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "refresh on a third node: {}", r.body);
    // The spent token is spent everywhere: reused on n1, it is refused.
    let r = post(
        n1,
        "/api/auth/refresh",
        Some(&format!("refresh_token={refresh}")),
        None,
    )
    .await;
    assert_eq!(r.status, 401, "a token spent on n2 is spent on n1");

    // Two sign-ups of one name at once on two nodes: exactly one 201.
    let twin = name("twin");
    let creds = format!(r#"{{"username":"{twin}","password":"{PASSWORD}"}}"#);
    let (a, b) = tokio::join!(
        post(n1, "/api/auth/signup", None, Some(&creds)),
        post(n3, "/api/auth/signup", None, Some(&creds)),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} / {}", a.body, b.body);

    // Disabling on n2 closes the user's sockets on every node (1008).
    let victim = name("victim");
    let acct = user_at(n1, &victim).await;
    let mut on1 = join_at(n1, &acct, "lobby").await;
    let mut on3 = join_at(n3, &acct, "lobby").await;
    let r = admin_request(n2, "POST", &format!("/api/admin/users/{victim}/disable")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for ws in [&mut on1, &mut on3] {
        assert_eq!(
            closed_code(ws).await,
            Some(1008),
            "a disabled user's socket"
        );
    }
    let r = post(
        n3,
        "/api/auth/login",
        None,
        Some(&format!(
            r#"{{"username":"{victim}","password":"{PASSWORD}"}}"#
        )),
    )
    .await;
    assert_eq!(r.status, 401, "disabled everywhere");
}

#[tokio::test]
async fn a_join_on_a_node_that_is_behind_honours_since_from_another_node() {
    let root = tempfile::tempdir().unwrap();
    let nodes = spawn_cluster(root.path(), 3, &[]);
    let leader = formed(&nodes).await;
    // A follower that will be behind: stopped while a message commits.
    let behind = nodes.iter().find(|n| n.name != leader).unwrap();
    let ahead = nodes.iter().find(|n| n.name == leader).unwrap();
    let acct = user_at(ahead.addr(), &name("since")).await;
    let mut ws = join_at(ahead.addr(), &acct, "lobby").await;
    signal(behind, libc::SIGSTOP);
    let id = say(&mut ws, "committed while a follower slept").await;
    let m = expect_msg(&mut ws, &id).await;
    expect_receipt(&mut ws, &id, "saved").await;
    let cursor = m["cursor"].as_str().unwrap().to_owned();
    // The join reaches the stopped follower first (the kernel accepts the
    // connection and holds the request); woken, it sees the join and the
    // leader's entry at once, and the join waits until the entry is applied.
    let behind_addr = behind.addr();
    let (acct2, cursor2) = (acct.clone(), cursor.clone());
    let join = tokio::spawn(async move {
        client::join_here(behind_addr, &acct2, "lobby", None, Some(&cursor2)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(behind, libc::SIGCONT);
    let mut at_behind = join.await.unwrap().unwrap();
    let welcome = next_frame(&mut at_behind).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        welcome["resumed"], true,
        "since from another node honoured: {welcome}"
    );
}

#[tokio::test]
async fn a_dead_node_is_removed_only_when_an_operator_says_so() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = spawn_cluster(root.path(), 3, &[]);
    formed(&nodes).await;
    nodes[2].kill();
    let (n1, n2) = (nodes[0].addr(), nodes[1].addr());
    let voters = |addr| async move {
        let s = cluster_status(addr).await;
        let mut v: Vec<String> = s["log"]["voters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    // Dead, but still a voter: nothing removes it on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(voters(n1).await, ["n1", "n2", "n3"]);
    let r = admin_request(n2, "POST", "/api/admin/cluster/remove/nobody").await;
    assert_eq!(r.status, 409, "not a member");
    // `hubbub cluster remove` asks a follower or the leader alike.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["cluster", "remove", "n3", "--url", &format!("http://{n2}")])
        .args(["--admin-token", ADMIN_TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"removed\":\"n3\""));
    for addr in [n1, n2] {
        wait_for("n3 gone from the voters", FORM_BOUND, || async move {
            voters(addr).await == ["n1", "n2"]
        })
        .await;
    }
    // Two voters of two: writes still commit.
    let acct = user_at(n2, &name("after_remove")).await;
    let mut ws = join_at(n2, &acct, "lobby").await;
    say_saved(&mut ws, "still saving").await;
}
