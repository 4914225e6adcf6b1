//! Security: file-descriptor exhaustion by idle and slow connections, no login
//! needed. Silent sockets, a single byte, TLS then silence, trickling bodies and
//! idle keep-alives are closed within `--request-timeout-secs`; HTTP connections
//! are capped per address and in total (closed at once beyond); running out of
//! descriptors pauses accepting instead of spinning, and the server recovers.
//! Real sockets; the process tests run the binary under a low `RLIMIT_NOFILE`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hubbub::client::{self, Endpoint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slack on top of a server time limit before a socket counts as "kept open":
/// generous, for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reads (and discards) until the server closes; `true` when it did within `limit`.
async fn closed_within(io: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(limit, io.read_to_end(&mut buf))
        .await
        .is_ok()
}

/// Like `closed_within`, returning what arrived before the close.
async fn read_until_closed(io: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, io.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// Still open: nothing to read and no close for a moment.
async fn still_open(tcp: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut b))
        .await
        .is_err()
}

/// The value of one exact metric line (`name{labels}`), read over HTTP from `ep`.
async fn metric(ep: &Endpoint, series: &str) -> f64 {
    let r = client::request(ep, "GET", "/metrics", &[], None)
        .await
        .unwrap();
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// `GET /healthz` until it answers 200, for up to `limit`.
async fn healthy_within(ep: &Endpoint, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            client::request(ep, "GET", "/healthz", &[], None),
        )
        .await;
        if let Ok(Ok(r)) = r
            && r.status == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A POST head whose 100-byte body will trickle in.
fn trickle_head(addr: SocketAddr) -> String {
    format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"username\""
    )
}

/// Writes one byte every 500 ms until the server answers and closes; returns
/// what it answered, or `None` when it kept the socket past `limit`.
async fn trickle(io: &mut (impl AsyncRead + tokio::io::AsyncWrite + Unpin), limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = [0u8; 4096];
    let mut writing = true;
    loop {
        tokio::select! {
            r = io.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if writing => {
                writing = io.write_all(b" ").await.is_ok() && io.flush().await.is_ok();
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_one_byte_and_trickling_connections_are_cut_on_the_plain_port() {
    let s = TestServer::start_with(&["--request-timeout-secs", "2"]).await;
    let limit = Duration::from_secs(2) + SLACK;
    let addr = s.addr;
    let silent = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut tcp, limit).await
    };
    // One byte, then nothing: a client that never finishes its head.
    let one_byte = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"G").await.unwrap();
        closed_within(&mut tcp, limit).await
    };
    // A complete request, then an idle keep-alive connection.
    let keep_alive = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let got = read_until_closed(&mut tcp, limit).await;
        got.is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.contains("\"ok\""))
    };
    let slow_body = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(trickle_head(addr).as_bytes()).await.unwrap();
        trickle(&mut tcp, limit).await
    };
    let (silent, one_byte, keep_alive, slow_body) =
        tokio::join!(silent, one_byte, keep_alive, slow_body);
    assert!(silent, "a silent connection was kept open");
    assert!(one_byte, "a connection with one byte of a head was kept open");
    assert!(keep_alive, "an idle keep-alive connection was kept open");
    let resp = slow_body.expect("a trickling body was waited for");
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    assert!(resp.contains("\"request_timeout\""), "{resp:?}");
    assert_no_leak("408", &resp);
    // Counted; and the server still answers.
    let ep = Endpoint::from(addr);
    assert_eq!(
        metric(&ep, "hubbub_http_timeouts_total{phase=\"body\"}").await,
        1.0
    );
    assert!(metric(&ep, "hubbub_http_timeouts_total{phase=\"head\"}").await >= 3.0);
    let alice = s.user(&name("fd_alice")).await;
    let mut ws = s.join(&alice, "lobby").await;
    let id = say(&mut ws, "still here").await;
    expect_msg(&mut ws, &id).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_over_the_per_address_cap_are_closed_at_once() {
    let s = TestServer::start_with(&[
        "--max-http-connections-per-address",
        "4",
        "--request-timeout-secs",
        "60",
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    // The accept loop takes connections in order, so this one is the fifth.
    let mut fifth = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        closed_within(&mut fifth, T).await,
        "the fifth connection from one address was not closed at once"
    );
    for h in &mut held {
        assert!(still_open(h).await, "a connection under the cap was closed");
    }
    // Another address is not affected, and the refusal is counted.
    let other = Endpoint::from(s.addr).from_source(ip("127.0.0.2"));
    assert!(healthy_within(&other, T).await);
    assert_eq!(
        metric(&other, "hubbub_http_connections_refused_total{reason=\"per_address\"}").await,
        1.0
    );
    assert_eq!(metric(&other, "hubbub_http_connections").await, 5.0);
    drop(held);
    // Upgraded sockets leave the HTTP count: six WebSockets under a cap of four.
    let ep = Endpoint::from(s.addr);
    assert!(healthy_within(&ep, T).await);
    let alice = s.user(&name("fd_cap")).await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        sockets.push(s.join(&alice, "lobby").await);
    }
    let id = say(&mut sockets[0], "six open").await;
    expect_msg(&mut sockets[5], &id).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_over_the_total_cap_are_closed_at_once() {
    let s = TestServer::start_with(&[
        "--max-http-connections",
        "3",
        "--request-timeout-secs",
        "60",
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let other = Endpoint::from(s.addr).from_source(ip("127.0.0.2"));
    let mut fourth = other.connect().await.unwrap();
    assert!(
        closed_within(&mut fourth, T).await,
        "a connection over the total cap was not closed at once"
    );
    for h in &mut held {
        assert!(still_open(h).await, "a connection under the cap was closed");
    }
    drop(held);
    assert!(healthy_within(&other, T).await);
    assert_eq!(
        metric(&other, "hubbub_http_connections_refused_total{reason=\"total\"}").await,
        1.0
    );
    s.stop().await;
}
