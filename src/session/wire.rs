//! A session's socket, split: tungstenite reads (and parses) the client's
//! frames; the session's task (`conn`) encodes the server's frames itself
//! and writes them straight from the shared `Frame` bytes.
//!
//! Why not tungstenite for writing too: it copies every frame into one
//! out-buffer (`Vec`), drains it after the write and keeps its largest
//! capacity for the connection's life. A join that replays 50 messages of
//! history pinned ~12 KiB per connection that way, a 32 KiB `batch=1` frame
//! 32 KiB (docs/BENCHMARKS.md); tungstenite 0.29 has no way to give it back.
//! Written here, a batch's bytes live only while it is written, and a large
//! frame sent to many sessions (a `history`, a joined batch) is not copied.
//!
//! tungstenite still writes two things of its own while reading: the pong
//! to a client's ping and the reply to a client's Close. Its write side
//! ([`ReadSide`]) hands those bytes (whole frames) to the writing half through a
//! small shared buffer ([`Oob`]), sent between our own frames; after a
//! Close reply nothing more goes out.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::protocol::CloseCode;

/// tungstenite's read buffer per connection, kept for the socket's life.
/// On a bare warp hub this measured 5.6 KiB idle per connection at 1 KiB,
/// 8.7 KiB at 4 KiB, 137 KiB with the 128 KiB default; in hubbub 512 B saves
/// 0.55 KiB per idle connection over 1 KiB with the same fan-out throughput
/// and CPU (docs/BENCHMARKS.md). Chat frames are small; a larger one takes a
/// few more reads (the buffer grows for it and is reused).
const READ_BUFFER: usize = 512;
/// Bytes of tungstenite's own frames (pongs, a Close reply) waiting for the
/// writer at most. A client that floods pings while not reading our frames
/// then stalls its own reads (the reader's write waits), as a full socket would.
const OOB_MAX: usize = 4 * 1024;
/// Slices per `writev` at most (Linux takes 1024): 32 frames, header and
/// payload each; a longer batch takes more calls.
const MAX_IOV: usize = 64;

/// WebSocket opcodes of the frames we write (RFC 6455 §5.2).
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// The socket of one session: tungstenite's reading side and ours for writing.
pub type Reading<S> = WebSocketStream<ReadSide<S>>;

/// Splits an upgraded socket: tungstenite (server role, our limits) reads
/// from one half, [`Writing`] writes to the other.
pub async fn split<S>(io: S, max_frame: usize) -> (Reading<S>, Writing<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (r, w) = tokio::io::split(io);
    let oob = Arc::new(Oob::default());
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Only pongs and a Close reply go through tungstenite's out-buffer:
        // written out (to `Oob`) as soon as they are queued.
        .write_buffer_size(0)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame));
    let side = ReadSide {
        io: r,
        oob: oob.clone(),
    };
    let ws = WebSocketStream::from_raw_socket(side, Role::Server, Some(config)).await;
    let writing = Writing {
        io: w,
        oob,
        out: Vec::new(),
        at: 0,
        skip: 0,
        closed: false,
    };
    (ws, writing)
}

/// Puts the halves back together (for the lingering close); `None` if they
/// are not the halves of one socket (cannot happen: one [`split`] made them).
pub fn unsplit<S>(reading: Reading<S>, writing: Writing<S>) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = reading.into_inner().io;
    r.is_pair_of(&writing.io).then(|| r.unsplit(writing.io))
}

/// Frames tungstenite wrote while reading, for the writing half to send.
#[derive(Default)]
pub struct Oob {
    state: Mutex<OobState>,
    /// The writer, woken when bytes arrive.
    writer: AtomicWaker,
    /// The reader, woken when a full buffer is taken.
    reader: AtomicWaker,
}

#[derive(Default)]
struct OobState {
    bytes: Vec<u8>,
    /// A Close frame is among them: the close handshake is tungstenite's.
    close: bool,
}

impl Oob {
    fn lock(&self) -> MutexGuard<'_, OobState> {
        // A panic while holding it cannot leave the bytes half-written (one
        // `extend` of whole frames); go on with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what is waiting; `true` if it holds a Close frame.
    fn take(&self) -> (Vec<u8>, bool) {
        let (bytes, close) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.bytes), st.close)
        };
        if !bytes.is_empty() {
            self.reader.wake();
        }
        (bytes, close)
    }

    /// Ready once something is waiting.
    fn poll_waiting(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.lock().bytes.is_empty() {
            return Poll::Ready(());
        }
        self.writer.register(cx.waker());
        if self.lock().bytes.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// The reading half as tungstenite sees it: reads from the socket; what
/// tungstenite writes (whole frames: its out-buffer, all of it, is taken at
/// once) goes to the writing half through [`Oob`].
pub struct ReadSide<S> {
    io: ReadHalf<S>,
    oob: Arc<Oob>,
}

impl<S: AsyncRead + AsyncWrite> AsyncRead for ReadSide<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for ReadSide<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.oob.lock();
        if st.bytes.len() >= OOB_MAX {
            self.oob.reader.register(cx.waker());
            drop(st);
            st = self.oob.lock();
            if st.bytes.len() >= OOB_MAX {
                return Poll::Pending;
            }
        }
        st.close |= holds_close(buf);
        st.bytes.extend_from_slice(buf);
        drop(st);
        self.oob.writer.wake();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer flushes when it sends them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The session closes the socket (linger), not tungstenite.
        Poll::Ready(Ok(()))
    }
}

/// Whether the frames in `buf` (unmasked, as a server writes them) include a Close.
fn holds_close(buf: &[u8]) -> bool {
    let mut i = 0;
    while let (Some(&b0), Some(&b1)) = (buf.get(i), buf.get(i + 1)) {
        if b0 & 0x0F == CLOSE {
            return true;
        }
        let (head, len) = match b1 & 0x7F {
            126 => match buf.get(i + 2..i + 4) {
                Some(b) => (4, u16::from_be_bytes([b[0], b[1]]) as usize),
                None => return false,
            },
            127 => match buf
                .get(i + 2..i + 10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                Some(b) => (10, u64::from_be_bytes(b) as usize),
                None => return false,
            },
            n => (2, n as usize),
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        i = i.saturating_add(head + mask).saturating_add(len);
    }
    false
}

/// What a write found: the session goes on, or tungstenite answered the
/// client's Close, and nothing may follow it.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Open,
    Closed,
}

/// A piece of the bytes going out: headers and small payloads copied
/// together, or a large payload's shared bytes.
enum Chunk {
    Copied(Vec<u8>),
    Shared(Bytes),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Copied(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// Payloads up to this size are copied beside their headers: a `writev`
/// slice per small chat frame cost more server CPU (fan-out without
/// `batch=1`) than the copy; larger ones (a `history`, a joined batch) go
/// as they are.
const COPY_MAX: usize = 1024;
/// What one copied chunk holds at most before a new one starts.
const COPIED_CHUNK: usize = 16 * 1024;

/// The writing half, owned by the session's task.
///
/// A write that is dropped half-way (the session closed while the peer did
/// not read) keeps the rest in `out`, so the next write (the Close frame)
/// continues the stream at a frame boundary; `out` is freed once written.
pub struct Writing<S> {
    io: WriteHalf<S>,
    oob: Arc<Oob>,
    out: Vec<Chunk>,
    /// Index of the first chunk not fully written, and bytes of it written.
    at: usize,
    skip: usize,
    /// tungstenite answered the client's Close: nothing more goes out.
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite> Writing<S> {
    /// Our Close frame, unless tungstenite already answered the client's.
    pub async fn close(&mut self, code: CloseCode) -> io::Result<()> {
        self.take_replies();
        if !self.closed {
            self.push(CLOSE, [close_payload(code)]);
            self.closed = true;
        }
        self.write_out().await.map(drop)
    }

    /// Queues text frames (after what tungstenite left for us) for
    /// [`Writing::poll_send`]; nothing after a Close reply from tungstenite.
    pub fn queue_text(&mut self, payloads: impl IntoIterator<Item = Bytes>) {
        self.take_replies();
        if !self.closed {
            self.push(TEXT, payloads);
        }
    }

    /// Queues a ping, like [`Writing::queue_text`].
    pub fn queue_ping(&mut self) {
        self.take_replies();
        if !self.closed {
            self.push(PING, [Bytes::new()]);
        }
    }

    /// Queues what tungstenite wrote (pongs, a Close reply), if anything.
    pub fn queue_replies(&mut self) {
        self.take_replies();
    }

    /// Bytes are queued and not yet written and flushed.
    pub fn unsent(&self) -> bool {
        !self.out.is_empty()
    }

    /// Ready once tungstenite has left frames to send (borrows nothing, so
    /// the session's task may wait on it beside its other wakers).
    pub fn replies_waiting(&self) -> impl Future<Output = ()> + Send + 'static {
        let oob = self.oob.clone();
        std::future::poll_fn(move |cx| oob.poll_waiting(cx))
    }

    fn take_replies(&mut self) {
        let (bytes, close) = self.oob.take();
        if !bytes.is_empty() {
            self.out.push(Chunk::Copied(bytes));
        }
        self.closed |= close;
    }

    fn push(&mut self, opcode: u8, payloads: impl IntoIterator<Item = Bytes>) {
        for p in payloads {
            let (h, n) = header(opcode, p.len());
            self.copy(&h[..usize::from(n)]);
            if p.len() <= COPY_MAX {
                self.copy(&p);
            } else {
                self.out.push(Chunk::Shared(p));
            }
        }
    }

    /// Appends to the last copied chunk, or starts one. Never to a chunk
    /// already written (a flush cut short leaves `at` past every chunk).
    fn copy(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let unwritten = self.out.len() > self.at;
        match self.out.last_mut() {
            Some(Chunk::Copied(v)) if unwritten && v.len() + b.len() <= COPIED_CHUNK => {
                v.extend_from_slice(b)
            }
            _ => {
                let mut v = Vec::with_capacity(b.len().max(COPY_MAX));
                v.extend_from_slice(b);
                self.out.push(Chunk::Copied(v));
            }
        }
    }

    /// Writes `out` (from where a dropped write left it) and flushes.
    pub(super) async fn write_out(&mut self) -> io::Result<Sent> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await
    }

    /// Writes what is queued (from where the last poll left it) and
    /// flushes. Cancel-safe: progress is kept here, so the session's task
    /// may stop polling it (to read, or to close) and come back later.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Sent>> {
        if !self.out.is_empty() {
            while self.at < self.out.len() {
                let n = ready!(self.poll_write_some(cx))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.advance(n);
            }
            // TLS: the records rustls still holds go out here.
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            // Freed, not kept: what a burst needed is not pinned for the connection's life.
            self.out = Vec::new();
            (self.at, self.skip) = (0, 0);
        }
        Poll::Ready(Ok(if self.closed {
            Sent::Closed
        } else {
            Sent::Open
        }))
    }

    /// One `writev` (or, where the socket has none, one write of a copy) of
    /// the chunks not yet written. The slices live on the stack of this poll only.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let rest = self.out.iter().skip(self.at).map(Chunk::as_slice);
        let skip = self.skip;
        let io = Pin::new(&mut self.io);
        if io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut k = 0;
            for (i, c) in rest.take(MAX_IOV).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &c[skip..] } else { c });
                k = i + 1;
            }
            io.poll_write_vectored(cx, &slices[..k])
        } else {
            let mut all = Vec::new();
            for (i, c) in rest.enumerate() {
                all.extend_from_slice(if i == 0 { &c[skip..] } else { c });
            }
            io.poll_write(cx, &all)
        }
    }

    /// Marks `n` more bytes as written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(c) = self.out.get(self.at) else {
                return;
            };
            let left = c.as_slice().len() - self.skip;
            if n < left {
                self.skip += n;
                return;
            }
            n -= left;
            self.at += 1;
            self.skip = 0;
        }
    }
}

/// Writes `code`'s Close frame on a socket no session was started on.
pub async fn write_close<S: AsyncWrite + Unpin>(io: &mut S, code: CloseCode) -> io::Result<()> {
    let body = close_payload(code);
    let (h, n) = header(CLOSE, body.len());
    io.write_all(&h[..usize::from(n)]).await?;
    io.write_all(&body).await?;
    io.flush().await
}

/// A Close frame's payload: the code, then the reason (ours are short ASCII).
fn close_payload(code: CloseCode) -> Bytes {
    let mut b = Vec::with_capacity(2 + code.reason().len());
    b.extend_from_slice(&code.code().to_be_bytes());
    b.extend_from_slice(code.reason().as_bytes());
    b.into()
}

/// A server frame's header (FIN, `opcode`, unmasked, `len`): 2, 4 or 10 bytes.
fn header(opcode: u8, len: usize) -> ([u8; 10], u8) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(l) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
