//! Links over real TCP + TLS on 127.0.0.1: meshes, calls both ways, the
//! one-link rule, peers leaving and coming back, `probe`. Faults (bad
//! handshakes, bad frames, full queues) are in `tests_faults`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ring::hmac;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::metrics::{LinkDrop, Metrics};

/// Bound for every wait in these tests: generous for a loaded 2-core box.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn key(b: u8) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &[b; 32])
}

/// Answers `from:body`; a body `slow:N:…` first sleeps N ms, `block…`
/// signals `started` and never answers. Messages are recorded.
#[derive(Default)]
pub struct TestHandler {
    pub messages: Mutex<Vec<(String, Bytes)>>,
    pub started: Notify,
}

#[async_trait::async_trait]
impl LinkHandler for TestHandler {
    async fn request(&self, from: &str, body: Bytes) -> Bytes {
        let text = String::from_utf8_lossy(&body).into_owned();
        if text.starts_with("block") {
            self.started.notify_one();
            std::future::pending::<()>().await;
        }
        if let Some(ms) = text.strip_prefix("slow:").and_then(|r| r.split(':').next())
            && let Ok(ms) = ms.parse()
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Bytes::from(format!("{from}:{text}"))
    }

    fn message(&self, from: &str, body: Bytes) {
        if let Ok(mut m) = self.messages.lock() {
            m.push((from.to_owned(), body));
        }
    }
}

pub struct TestNode {
    pub id: String,
    pub links: Links,
    pub metrics: Arc<ClusterMetrics>,
    pub handler: Arc<TestHandler>,
}

impl TestNode {
    pub fn addr(&self) -> SocketAddr {
        self.links.local_addr()
    }

    pub fn dropped(&self, why: LinkDrop) -> u64 {
        self.metrics.link_dropped(why).get()
    }

    pub fn failed(&self, why: LinkFail) -> u64 {
        self.metrics.link_handshake_failed(why).get()
    }
}

/// Short timings so that faults show within a test's bounds.
pub fn test_config(id: &str, k: hmac::Key) -> LinkConfig {
    LinkConfig {
        handshake_timeout: Duration::from_secs(2),
        keepalive: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..LinkConfig::new(id, k)
    }
}

pub async fn start_with(cfg: LinkConfig) -> TestNode {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = Metrics::new().register_cluster();
    let handler = Arc::new(TestHandler::default());
    let id = cfg.node_id.clone();
    let links = Links::start(cfg, listener, metrics.clone(), handler.clone()).unwrap();
    TestNode {
        id,
        links,
        metrics,
        handler,
    }
}

pub async fn start(id: &str) -> TestNode {
    start_with(test_config(id, key(1))).await
}

/// Every node gets every other as a peer.
pub fn mesh(nodes: &[&TestNode]) {
    for n in nodes {
        let peers = nodes
            .iter()
            .filter(|o| o.id != n.id)
            .map(|o| (o.id.clone(), o.addr()))
            .collect();
        n.links.set_peers(peers);
    }
}

/// Polls `cond` until it holds; panics with `what` after [`WAIT`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Shuts a node down; bounded, so a task that never ends fails the test.
pub async fn stop(n: &TestNode) {
    let done = tokio::time::timeout(WAIT, n.links.shutdown()).await;
    assert!(done.is_ok(), "{}: shutdown did not end every task", n.id);
}

pub async fn linked(a: &TestNode, b: &TestNode) {
    wait_for(&format!("{} and {} linked", a.id, b.id), || {
        a.links.up_peers().contains(&b.id) && b.links.up_peers().contains(&a.id)
    })
    .await;
}

/// A call from `a` to `b` that `b`'s handler holds (body "block"), once
/// `b` has started on it.
pub async fn blocked_call(
    a: &TestNode,
    b: &TestNode,
) -> tokio::task::JoinHandle<Result<Bytes, LinkError>> {
    let links = a.links.clone();
    let call = tokio::spawn(async move {
        links
            .call("b", Bytes::from_static(b"block"), Duration::from_secs(600))
            .await
    });
    tokio::time::timeout(WAIT, b.handler.started.notified())
        .await
        .unwrap();
    call
}

pub async fn ask(from: &TestNode, to: &str, body: &str) -> Result<String, LinkError> {
    let answer = from
        .links
        .call(to, Bytes::from(body.to_owned()), Duration::from_secs(10))
        .await?;
    Ok(String::from_utf8(answer.to_vec()).unwrap())
}

#[tokio::test]
async fn two_nodes_link_and_answer_calls_both_ways() {
    let (a, b) = (start("a").await, start("b").await);
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    assert_eq!(ask(&a, "b", "hi").await.unwrap(), "a:hi");
    assert_eq!(ask(&b, "a", "yo").await.unwrap(), "b:yo");
    a.links.send("b", Bytes::from_static(b"one-way")).unwrap();
    wait_for("message delivered", || {
        b.handler.messages.lock().unwrap().as_slice()
            == [("a".to_owned(), Bytes::from_static(b"one-way"))]
    })
    .await;
    assert_eq!(a.metrics.links_up.get(), 1);
    assert!(a.metrics.link_bytes_sent.get() > 0 && b.metrics.link_bytes_received.get() > 0);
    stop(&a).await;
    stop(&b).await;
    assert_eq!(a.metrics.links_up.get(), 0);
}

#[tokio::test]
async fn three_nodes_form_a_mesh_and_every_pair_answers() {
    let nodes = [start("n1").await, start("n2").await, start("n3").await];
    mesh(&nodes.iter().collect::<Vec<_>>());
    for x in &nodes {
        for y in &nodes {
            if x.id < y.id {
                linked(x, y).await;
            }
        }
    }
    for x in &nodes {
        for y in &nodes {
            if x.id != y.id {
                assert_eq!(
                    ask(x, &y.id, "ping").await.unwrap(),
                    format!("{}:ping", x.id)
                );
            }
        }
    }
    for n in &nodes {
        stop(n).await;
    }
}

#[tokio::test]
async fn concurrent_calls_are_matched_to_their_answers() {
    let (a, b) = (start("a").await, start("b").await);
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    // The first calls sleep longest, so answers come back in reverse order.
    let calls = (0..40u64).map(|i| {
        let links = a.links.clone();
        async move {
            let body = format!("slow:{}:{i}", (40 - i) * 10);
            let got = links
                .call("b", Bytes::from(body.clone()), WAIT)
                .await
                .unwrap();
            assert_eq!(got, Bytes::from(format!("a:{body}")));
        }
    });
    futures_util::future::join_all(calls).await;
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn calls_fail_fast_without_a_link_and_when_it_drops_while_waiting() {
    let (a, b) = (start("a").await, start("b").await);
    assert!(matches!(ask(&a, "b", "x").await, Err(LinkError::NoLink(_))));
    assert!(matches!(
        a.links.send("b", Bytes::new()),
        Err(LinkError::NoLink(_))
    ));
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    let short = a.links.call(
        "b",
        Bytes::from_static(b"slow:5000:x"),
        Duration::from_millis(200),
    );
    assert!(matches!(short.await, Err(LinkError::Timeout(_))));
    // A call waiting on an answer that never comes fails when the link goes,
    // long before its own timeout.
    let waiting = blocked_call(&a, &b).await;
    a.links.set_peers(HashMap::new());
    let res = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(res, Err(LinkError::Dropped(_))), "{res:?}");
    assert_eq!(a.dropped(LinkDrop::Removed), 1);
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn exactly_one_link_per_pair_when_both_know_each_other() {
    let (a, b) = (start("a").await, start("b").await);
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    // Let a second dial (if anyone made one) happen and settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (a.links.established_total(), b.links.established_total()),
        (1, 1)
    );
    assert_eq!((a.metrics.links_up.get(), b.metrics.links_up.get()), (1, 1));
    for n in [&a, &b] {
        for d in LinkDrop::ALL {
            assert_eq!(n.dropped(d), 0, "{} dropped {d:?}", n.id);
        }
        for f in LinkFail::ALL {
            assert_eq!(n.failed(f), 0, "{} failed {f:?}", n.id);
        }
    }
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn a_removed_peer_is_disconnected_and_a_restarted_one_reconnected() {
    let (a, b, c) = (start("a").await, start("b").await, start("c").await);
    mesh(&[&a, &b, &c]);
    linked(&a, &b).await;
    linked(&b, &c).await;
    // The dialer drops a peer: the link goes on both ends and stays down.
    a.links.set_peers([("b".to_owned(), b.addr())].into());
    wait_for("a-c link closed", || {
        !a.links.up_peers().contains(&"c".to_owned())
            && !c.links.up_peers().contains(&"a".to_owned())
    })
    .await;
    assert!(matches!(ask(&a, "c", "x").await, Err(LinkError::NoLink(_))));
    assert_eq!(a.dropped(LinkDrop::Removed), 1);
    // The acceptor drops a peer: the link goes, and the peer's redials are
    // refused while it is not listed.
    c.links.set_peers(HashMap::new());
    wait_for("b's redial refused by c", || {
        c.failed(LinkFail::Peer) >= 1 && b.failed(LinkFail::Peer) >= 1
    })
    .await;
    assert!(c.links.up_peers().is_empty());
    // b restarts on a new port: a dials the new address, the new b dials c.
    stop(&b).await;
    let b2 = start("b").await;
    mesh(&[&a, &b2, &c]);
    linked(&a, &b2).await;
    linked(&b2, &c).await;
    linked(&a, &c).await;
    assert_eq!(ask(&a, "b", "again").await.unwrap(), "a:again");
    assert_eq!(ask(&c, "b", "again").await.unwrap(), "c:again");
    for n in [&a, &b2, &c] {
        stop(n).await;
    }
}

#[tokio::test]
async fn probe_returns_the_node_id_with_the_right_key_only() {
    let a = start("a").await;
    let id = probe(a.addr(), "tool", &key(1), WAIT).await.unwrap();
    assert_eq!(id, "a");
    let wrong = probe(a.addr(), "tool", &key(2), WAIT).await;
    assert!(matches!(wrong, Err(HandshakeError::Proof)), "{wrong:?}");
    wait_for("proof failure counted", || a.failed(LinkFail::Proof) == 1).await;
    // A probe never becomes a link.
    assert!(a.links.up_peers().is_empty());
    assert_eq!(a.links.established_total(), 0);
    stop(&a).await;
}

#[tokio::test]
async fn requests_past_the_inflight_bound_are_refused_busy() {
    let a = start("a").await;
    let b = start_with(LinkConfig {
        max_inflight: 1,
        ..test_config("b", key(1))
    })
    .await;
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    let blocked = blocked_call(&a, &b).await;
    assert!(matches!(
        ask(&a, "b", "more").await,
        Err(LinkError::Busy(_))
    ));
    // The link itself is fine: the other direction still answers.
    assert_eq!(ask(&b, "a", "back").await.unwrap(), "b:back");
    blocked.abort();
    stop(&a).await;
    stop(&b).await;
}

/// Not a check: figures for the notes. `cargo test --lib
/// cluster::link::tests::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_call_and_send_rates() {
    let (a, b) = (start("a").await, start("b").await);
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        a.links
            .call("b", Bytes::from_static(b"x"), WAIT)
            .await
            .unwrap();
    }
    let seq = t.elapsed();
    println!("sequential calls: {n} in {seq:?} = {:?} per call", seq / n);
    let (n, width) = (20_000u32, 64u32);
    let t = std::time::Instant::now();
    let workers = (0..width).map(|_| {
        let links = a.links.clone();
        tokio::spawn(async move {
            for _ in 0..n / width {
                links
                    .call("b", Bytes::from(vec![0u8; 200]), WAIT)
                    .await
                    .unwrap();
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.unwrap();
    }
    let el = t.elapsed();
    println!(
        "{width} concurrent callers, 200 B: {n} calls in {el:?} = {:.0}/s",
        f64::from(n) / el.as_secs_f64()
    );
    stop(&a).await;
    stop(&b).await;
}
