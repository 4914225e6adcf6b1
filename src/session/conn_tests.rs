//! The connection's one task on real sockets, with a real tungstenite
//! client: reads are not starved by a stream of outgoing frames, and a
//! write stuck on a peer that does not read never hides the close signal.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::Metrics;
use crate::session::wire;

/// A connection as the session runs it, with no hub: every text frame the
/// client sends is only counted. The task gives back both halves of the
/// socket and the count.
pub(crate) struct Plain<S> {
    pub out_tx: mpsc::Sender<Vec<Frame>>,
    pub close_tx: watch::Sender<Option<CloseCode>>,
    pub task: JoinHandle<(wire::Reading<S>, wire::Writing<S>, usize)>,
}

/// `spawn_plain` as most tests want it: nothing queued, no batching, and no
/// ping within a test's time.
pub(crate) async fn spawn_quiet<S>(io: S) -> Plain<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_plain(io, Vec::new(), Duration::from_secs(3600), false, Vec::new()).await
}

pub(crate) async fn spawn_plain<S>(
    io: S,
    preamble: Vec<Frame>,
    ping_every: Duration,
    batching: bool,
    queued: Vec<Vec<Frame>>,
) -> Plain<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws, mut out) = wire::split(io, 1 << 20).await;
    let (out_tx, out_rx) = mpsc::channel(queued.len().max(8));
    for item in queued {
        out_tx.try_send(item).unwrap();
    }
    let (close_tx, close_rx) = watch::channel(None);
    let tx = close_tx.clone();
    let task = tokio::spawn(async move {
        let shutdown = CancellationToken::new();
        let m = Metrics::new();
        let wires = Wires {
            out_rx,
            close_rx,
            close_tx: &tx,
            shutdown: &shutdown,
        };
        let timing = Timing {
            ping_every,
            idle: Duration::from_secs(3600),
            expires_in: Duration::from_secs(3600),
        };
        let joining = batching.then(|| Batching::new(&m));
        let mut seen = 0;
        let mut c = Conn::new(wires, &timing, joining, 0usize);
        c.start(&mut out, preamble);
        let end = run(&mut ws, &mut out, &mut c, |_, n| Step::Next(n + 1)).await;
        close(&mut out, c, end, |n| seen = n).await;
        (ws, out, seen)
    });
    Plain {
        out_tx,
        close_tx,
        task,
    }
}

pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (b, a)
}

fn frame(i: usize) -> Frame {
    Frame::from(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)))
}

/// The hub keeps this session's queue full (a fan-out receiver) while the
/// client pings: the task must still read, so tungstenite answers, and the
/// pong comes out between the frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_while_a_stream_of_frames_is_written() {
    let (server, client) = tcp_pair().await;
    let p = spawn_quiet(server).await;
    let out_tx = p.out_tx.clone();
    // Never lets the queue run dry until the test ends (the send fails then).
    let producer = tokio::spawn(async move {
        let mut i = 0;
        while out_tx.send(vec![frame(i), frame(i + 1)]).await.is_ok() {
            i += 2;
        }
    });
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let mut texts = 0usize;
    let mut pinged = false;
    let got_pong = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = client.next().await {
            match m {
                Message::Text(_) => texts += 1,
                Message::Pong(p) if &p[..] == b"hi" => return true,
                _ => {}
            }
            if texts == 100 && !pinged {
                client.send(Message::Ping("hi".into())).await.unwrap();
                pinged = true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        got_pong,
        Ok(true),
        "no pong while frames kept coming ({texts} text frames read)"
    );
    p.close_tx.send_replace(Some(CloseCode::Normal));
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(20), p.task).await;
    producer.abort();
}

/// A client that never reads but keeps sending: the task keeps reading its
/// frames, its write stays stuck, and the close signal (the hub's eviction)
/// still ends the session within the Close frame's grace.
#[tokio::test]
async fn a_peer_that_keeps_sending_but_never_reads_is_still_closed() {
    let (server, client) = tcp_pair().await;
    // 8 MiB queued by the hub: far more than the socket buffers take.
    let big: Vec<Vec<Frame>> = (0..32)
        .map(|i| {
            vec![Frame::from(format!(
                r#"{{"i":{i},"pad":"{}"}}"#,
                "y".repeat(256 * 1024)
            ))]
        })
        .collect();
    let p = spawn_plain(server, Vec::new(), Duration::from_secs(3600), false, big).await;
    let (_rd, mut wr) = tokio::io::split(client);
    let sender = tokio::spawn(async move {
        // Masked text frames, as a client sends them, until the socket breaks.
        let mut client = WebSocketStream::from_raw_socket(
            tokio::io::join(tokio::io::empty(), &mut wr),
            Role::Client,
            None,
        )
        .await;
        let mut sent = 0usize;
        while client.send(Message::Text("{}".into())).await.is_ok() {
            sent += 1;
            if sent.is_multiple_of(64) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sent
    });
    // Bounded wait until the task has read some of them (its write is stuck by then).
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.close_tx.send_replace(Some(CloseCode::Evicted));
    let (_ws, _out, seen) = tokio::time::timeout(Duration::from_secs(20), p.task)
        .await
        .expect("the session stayed open: a stuck write hid the close signal")
        .unwrap();
    eprintln!("{seen} frames read while the write was stuck");
    sender.abort();
}
