//! Links under faults, over real TCP + TLS on 127.0.0.1: wrong secrets,
//! garbage, stalled and plain-TCP clients, oversized frames, full queues.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hello::{self, EXPORTER_LABEL, EXPORTER_LEN, Role};
use super::tests::*;
use super::*;
use crate::metrics::LinkDrop;

/// Waits (bounded) until the other end closes `s`; what it sent is ignored.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(mut s: S, what: &str) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "{what}: still open after {WAIT:?}");
}

/// A TLS session with the node, and its exporter, but no hello yet.
async fn raw_tls(
    addr: SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    [u8; EXPORTER_LEN],
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = tls::connector()
        .unwrap()
        .connect(tls::server_name(addr), tcp)
        .await
        .unwrap();
    let exp = s
        .get_ref()
        .1
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .unwrap();
    (s, exp)
}

#[tokio::test]
async fn the_wrong_secret_fails_the_handshake_on_both_sides() {
    let a = start_with(test_config("a", key(1))).await;
    let b = start_with(test_config("b", key(2))).await;
    mesh(&[&a, &b]);
    wait_for("proof failures on both sides", || {
        a.failed(LinkFail::Proof) >= 1 && b.failed(LinkFail::Proof) >= 1
    })
    .await;
    assert!(a.links.up_peers().is_empty() && b.links.up_peers().is_empty());
    assert_eq!(a.links.established_total() + b.links.established_total(), 0);
    assert!(matches!(ask(&a, "b", "x").await, Err(LinkError::NoLink(_))));
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn bad_clients_are_refused_in_time_and_good_peers_still_link() {
    let a = start_with(LinkConfig {
        handshake_timeout: Duration::from_secs(2),
        ..test_config("a", key(1))
    })
    .await;
    let b = start("b").await;
    // Two clients stall: one in plain TCP (before TLS), one inside TLS
    // after half a hello (a slowloris). Meanwhile a good peer links.
    let plain = TcpStream::connect(a.addr()).await.unwrap();
    let (mut slow, _) = raw_tls(a.addr()).await;
    slow.write_all(b"HBLK").await.unwrap();
    slow.flush().await.unwrap();
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    closed_by_peer(plain, "plain TCP client").await;
    closed_by_peer(slow, "stalled hello").await;
    wait_for("two timeouts counted", || a.failed(LinkFail::Timeout) == 2).await;

    // Garbage instead of a TLS client hello.
    let mut junk = TcpStream::connect(a.addr()).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_peer(junk, "garbage").await;
    wait_for("tls failure counted", || a.failed(LinkFail::Tls) == 1).await;

    // Garbage inside TLS, and a hello of another version.
    let (mut s, _) = raw_tls(a.addr()).await;
    s.write_all(&[0x55; 300]).await.unwrap();
    s.flush().await.unwrap();
    closed_by_peer(s, "garbage hello").await;
    wait_for("hello failure counted", || a.failed(LinkFail::Hello) == 1).await;
    let (mut s, exp) = raw_tls(a.addr()).await;
    let mut h = hello::encode(&key(1), Role::Dialer, "b", &exp).unwrap();
    h[4..6].copy_from_slice(&(LINK_VERSION + 1).to_be_bytes());
    s.write_all(&h).await.unwrap();
    s.flush().await.unwrap();
    closed_by_peer(s, "other version").await;
    wait_for("version failure counted", || {
        a.failed(LinkFail::Version) == 1
    })
    .await;

    // Through all of it the good link stayed up and still answers.
    assert_eq!(ask(&b, "a", "still").await.unwrap(), "b:still");
    assert_eq!(a.links.established_total(), 1);
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn an_oversized_frame_drops_the_link_and_it_reconnects() {
    let a = start_with(LinkConfig {
        max_frame: 1024 * 1024,
        ..test_config("a", key(1))
    })
    .await;
    let b = start_with(LinkConfig {
        max_frame: 4096,
        ..test_config("b", key(1))
    })
    .await;
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    // Over b's own limit: refused before it is sent.
    let big = Bytes::from(vec![7u8; 16 * 1024]);
    assert!(matches!(
        b.links.send("a", big.clone()),
        Err(LinkError::TooLarge(_))
    ));
    // Within a's limit but over b's: b drops the link on reading it.
    a.links.send("b", big).unwrap();
    wait_for("b dropped the link (bad_frame)", || {
        b.dropped(LinkDrop::BadFrame) == 1
    })
    .await;
    wait_for("relinked", || {
        a.links.established_total() >= 2 && b.links.established_total() >= 2
    })
    .await;
    linked(&a, &b).await;
    assert_eq!(ask(&a, "b", "after").await.unwrap(), "a:after");
    assert!(b.handler.messages.lock().unwrap().is_empty());
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn a_full_send_queue_drops_the_link_instead_of_blocking() {
    let a = start_with(LinkConfig {
        queue_capacity: 4,
        ..test_config("a", key(1))
    })
    .await;
    let b = start("b").await;
    mesh(&[&a, &b]);
    linked(&a, &b).await;
    let waiting = blocked_call(&a, &b).await;
    // Without an await the writer cannot drain (current-thread runtime):
    // the fifth frame finds the queue full.
    let body = Bytes::from(vec![1u8; 1024]);
    let mut sent = 0;
    let err = loop {
        match a.links.send("b", body.clone()) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 4, "a capacity-4 queue took {sent} frames");
    };
    assert!(matches!(err, LinkError::QueueFull(_)), "{err:?}");
    let res = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(res, Err(LinkError::Dropped(_))), "{res:?}");
    wait_for("queue_full counted", || a.dropped(LinkDrop::QueueFull) == 1).await;
    wait_for("relinked", || a.links.established_total() >= 2).await;
    linked(&a, &b).await;
    assert_eq!(ask(&a, "b", "after").await.unwrap(), "a:after");
    stop(&a).await;
    stop(&b).await;
}

#[tokio::test]
async fn a_linked_peer_that_goes_silent_is_dropped_as_idle() {
    let b = start_with(LinkConfig {
        idle_timeout: Duration::from_secs(1),
        ..test_config("b", key(1))
    })
    .await;
    // "a" sorts first, so it is the one that dials; b never dials it.
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    b.links.set_peers([("a".to_owned(), unused)].into());
    let (mut s, exp) = raw_tls(b.addr()).await;
    s.write_all(&hello::encode(&key(1), Role::Dialer, "a", &exp).unwrap())
        .await
        .unwrap();
    s.write_all(&[0]).await.unwrap();
    s.flush().await.unwrap();
    let mut theirs = [0u8; 8 + 1 + 32 + 1];
    s.read_exact(&mut theirs).await.unwrap();
    assert_eq!(theirs[8], b'b');
    assert_eq!(theirs[theirs.len() - 1], 0, "b accepted the link");
    wait_for("link up at b", || b.links.up_peers() == ["a"]).await;
    // Never answer b's pings, never send anything: b drops the link.
    closed_by_peer(s, "silent peer").await;
    wait_for("idle counted", || b.dropped(LinkDrop::Idle) == 1).await;
    assert!(b.links.up_peers().is_empty());
    stop(&b).await;
}

#[tokio::test]
async fn a_relay_that_terminates_tls_on_both_sides_cannot_link_two_nodes() {
    let a = start("a").await;
    let b = start("b").await;
    // The man in the middle: a TLS server for a, a TLS client to b, and the
    // plaintext copied across. Without the exporter in the proof, every
    // hello would verify through it.
    let mitm = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mitm_addr = mitm.local_addr().unwrap();
    let b_addr = b.addr();
    let relay = tokio::spawn(async move {
        loop {
            let (tcp, _) = mitm.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut from_a) = tls::acceptor().unwrap().accept(tcp).await else {
                    return;
                };
                let (mut to_b, _) = raw_tls(b_addr).await;
                let _ = tokio::io::copy_bidirectional(&mut from_a, &mut to_b).await;
            });
        }
    });
    a.links.set_peers([("b".to_owned(), mitm_addr)].into());
    b.links.set_peers([("a".to_owned(), a.addr())].into());
    wait_for("proof failures through the relay, both sides", || {
        a.failed(LinkFail::Proof) >= 2 && b.failed(LinkFail::Proof) >= 2
    })
    .await;
    assert_eq!(a.links.established_total() + b.links.established_total(), 0);
    relay.abort();
    stop(&a).await;
    stop(&b).await;
}
