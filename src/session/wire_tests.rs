//! `wire` against a real tungstenite client over a real socket: what the
//! writer sends is valid WebSocket, pongs and the Close handshake still work,
//! and a burst leaves no buffer behind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as Code;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::*;
use crate::protocol::Frame;
use crate::session::conn::tests::{spawn_plain, spawn_quiet};

/// Counts the heap bytes each thread holds (allocated minus freed there),
/// so that a test on a current-thread runtime sees its own connection's
/// heap, whatever other tests do at the same time.
struct PerThread;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(d: isize) {
    let _ = LIVE.try_with(|c| c.set(c.get() + d));
}

// SAFETY: every call goes to `System` unchanged; only a thread-local
// counter (const-initialised, no destructor, never allocates) is updated.
unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static HEAP: PerThread = PerThread;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// A connected loopback pair: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (s, c)
}

fn frame(pad: usize) -> Frame {
    Frame::from(format!(r#"{{"type":"x","pad":"{}"}}"#, "y".repeat(pad)))
}

/// Reads exactly `n` bytes into `buf` (allocated by the caller, reused).
async fn read_n(c: &mut TcpStream, buf: &mut [u8], mut n: usize) {
    while n > 0 {
        let k = buf.len().min(n);
        let got = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf[..k]))
            .await
            .expect("the writer sent too little")
            .unwrap();
        assert!(got > 0, "closed early");
        n -= got;
    }
}

/// Bytes on the wire of a text frame of `len` payload bytes.
fn wire_len(len: usize) -> usize {
    len + header(TEXT, len).1 as usize
}

/// Issue 13 §3: a join's `history` (here ~12 KiB) and a 32 KiB `batch=1`
/// frame went through tungstenite's out-buffer, which kept its largest
/// capacity while the connection lived. After the burst, the connection
/// (its task, socket halves) must hold no more heap than before it.
#[test]
fn a_burst_leaves_no_write_buffer_behind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (server, mut client) = tcp_pair().await;
        let p = spawn_plain(
            server,
            vec![frame(10)],
            Duration::from_secs(3600),
            false,
            Vec::new(),
        )
        .await;
        let (out_tx, close_tx, task) = (p.out_tx, p.close_tx, p.task);
        let mut buf = vec![0u8; 64 * 1024];
        read_n(&mut client, &mut buf, wire_len(frame(10).len())).await;
        let before = live();
        let burst = vec![frame(12 * 1024), frame(32 * 1024)];
        let n: usize = burst.iter().map(|f| wire_len(f.len())).sum();
        out_tx.send(burst).await.unwrap();
        read_n(&mut client, &mut buf, n).await;
        // The writer has written all of it; let it get back to waiting.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let kept = live() - before;
        eprintln!("heap kept after a 44 KiB burst: {kept} bytes");
        assert!(
            kept < 2048,
            "the connection kept {kept} bytes of heap after the burst"
        );
        close_tx.send_replace(Some(CloseCode::Normal));
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    });
}

/// Every frame size the header encodes (7-bit, 16-bit and 64-bit lengths),
/// a ping, and the Close frame read back by tungstenite as a client.
#[tokio::test]
async fn a_tungstenite_client_reads_what_we_write() {
    let (server, client) = tcp_pair().await;
    let (_reading, mut writing) = split(server, 1 << 20).await;
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let sizes = [0, 1, 125, 126, 65_535, 65_536, 200_000];
    let payloads: Vec<Bytes> = sizes.iter().map(|&n| Bytes::from("z".repeat(n))).collect();
    let send = async {
        writing.queue_text(payloads.clone());
        assert_eq!(writing.write_out().await.unwrap(), Sent::Open);
        writing.queue_ping();
        assert_eq!(writing.write_out().await.unwrap(), Sent::Open);
        writing.close(CloseCode::Evicted).await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            let end = matches!(m, Message::Close(_));
            got.push(m);
            if end {
                break;
            }
        }
        got
    };
    let ((), got) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
            .await
            .unwrap();
    assert_eq!(got.len(), sizes.len() + 2, "{got:?}");
    for (m, n) in got.iter().zip(sizes) {
        assert!(matches!(m, Message::Text(t) if t.len() == n), "{n}: {m:?}");
    }
    assert!(matches!(got[sizes.len()], Message::Ping(_)));
    match &got[sizes.len() + 1] {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4002);
            assert_eq!(f.reason.as_str(), CloseCode::Evicted.reason());
        }
        m => panic!("not our close: {m:?}"),
    }
}

/// tungstenite answers a client's ping while the session's task reads; the
/// pong goes out between our own frames.
#[tokio::test]
async fn a_clients_ping_is_answered() {
    let (server, client) = tcp_pair().await;
    let p = spawn_quiet(server).await;
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    client.send(Message::Ping("p1".into())).await.unwrap();
    p.out_tx.send(vec![frame(3)]).await.unwrap();
    let mut pong = false;
    let mut text = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(pong && text) {
        let m = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("no pong and frame")
            .unwrap()
            .unwrap();
        match m {
            Message::Pong(p) => pong = &p[..] == b"p1",
            Message::Text(_) => text = true,
            m => panic!("unexpected {m:?}"),
        }
    }
    p.close_tx.send_replace(Some(CloseCode::Normal));
    let _ = tokio::time::timeout(Duration::from_secs(20), p.task).await;
}

/// A client's Close: tungstenite's reply is the one Close frame the client
/// gets (with the client's code); the session ends there and sends nothing
/// after it, not even its own Close.
#[tokio::test]
async fn a_clients_close_gets_one_reply_and_nothing_after_it() {
    let (server, client) = tcp_pair().await;
    let p = spawn_quiet(server).await;
    let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let bye = CloseFrame {
        code: Code::from(4000),
        reason: "bye".into(),
    };
    client.send(Message::Close(Some(bye))).await.unwrap();
    let (reading, writing, _) = tokio::time::timeout(Duration::from_secs(20), p.task)
        .await
        .unwrap()
        .unwrap();
    // The hub still had something for this session: it goes nowhere.
    let _ = p.out_tx.send(vec![frame(3)]).await;
    assert_eq!(*p.close_tx.borrow(), Some(CloseCode::Normal));
    let io = unsplit(reading, writing).expect("one socket's halves");
    drop(io);
    // Raw bytes, to the server's EOF: a client's WebSocket would stop at the Close.
    let mut raw = client.into_inner();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), raw.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let mut want = vec![0x88, 5];
    want.extend_from_slice(&4000u16.to_be_bytes());
    want.extend_from_slice(b"bye");
    assert_eq!(got, want, "exactly the close reply");
}

#[test]
fn holds_close_walks_every_header_length() {
    let mut b = Vec::new();
    for len in [0, 125, 126, 70_000] {
        let (h, n) = header(0xA, len);
        b.extend_from_slice(&h[..usize::from(n)]);
        b.extend(std::iter::repeat_n(0x88u8, len));
    }
    assert!(!holds_close(&b), "0x88 inside payloads is not a Close");
    let (h, n) = header(CLOSE, 2);
    b.extend_from_slice(&h[..usize::from(n)]);
    b.extend_from_slice(&1000u16.to_be_bytes());
    assert!(holds_close(&b));
}
