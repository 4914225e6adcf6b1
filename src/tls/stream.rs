//! The public listener's TLS stream, on rustls' unbuffered API.
//!
//! Why not tokio-rustls: its `ServerConnection` keeps a 4 KiB record read
//! buffer for the connection's whole life (rustls grows it to 4 KiB before
//! every read and never shrinks it below that), and an idle WebSocket is
//! always polling a read. Here the stream owns the buffers: ciphertext is read
//! only once the socket is readable, into a buffer sized for what is expected,
//! and every buffer (ciphertext in, plaintext not yet taken, ciphertext out)
//! is freed as soon as it is empty. An idle connection holds none of them.
//!
//! The handshake, key updates (the peer's, and ours when a key wears out),
//! close_notify both ways and alerts are rustls' own; this file only moves
//! bytes between the socket, rustls and the caller.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::records::{RECORD_OVERHEAD, append_with, consume_front, encrypt, invalid};

/// Bytes asked of the socket when no partial record tells how many are
/// coming. Only held while records are in it.
const READ_CHUNK: usize = 4 * 1024;
/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;

/// A server-side TLS connection over TCP, readable and writable like the
/// socket (tokio's `AsyncRead` + `AsyncWrite`).
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet consumed by rustls (a partial record, or
    /// records not decrypted yet). No allocation when empty.
    incoming: Vec<u8>,
    /// Decrypted bytes the caller has not read yet, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext not yet written to the socket, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer's close_notify arrived: after `plain`, reads see the end.
    peer_closed: bool,
    /// The socket's read side reached EOF.
    tcp_eof: bool,
    /// Our close_notify is queued: nothing more may be written.
    write_closed: bool,
    /// rustls reported an error: the connection is over, and rustls must not
    /// be driven again.
    failed: bool,
}

/// What one round of `process_tls_records` came to.
enum Step {
    /// Progress was made (records decrypted, handshake data encoded): go on.
    Again,
    /// rustls needs more bytes from the peer (handshake).
    NeedData,
    /// Application data may be written; the action was done (with how many
    /// plaintext bytes it took).
    Writable(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// What to do when rustls allows writing.
#[derive(Clone, Copy)]
enum Act<'a> {
    Nothing,
    Encrypt(&'a [IoSlice<'a>]),
    CloseNotify,
}

/// Completes a TLS handshake on `tcp` with `config`. Cancel-safe in the sense
/// that matters here: dropping the future drops the socket. The caller bounds
/// it in time.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut s = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plain: Vec::new(),
        plain_at: 0,
        outgoing: Vec::new(),
        out_at: 0,
        peer_closed: false,
        tcp_eof: false,
        write_closed: false,
        failed: false,
    };
    poll_fn(|cx| s.poll_handshake(cx)).await?;
    Ok(s)
}

impl TlsStream {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step_or_alert(Act::Nothing, None)? {
                Step::Again => {}
                // TLS 1.3 lets the server write before the client's Finished;
                // the handshake is done only once that is in too.
                Step::Writable(_) if !self.conn.is_handshaking() => {
                    return self.poll_flush_out(cx);
                }
                Step::NeedData | Step::Writable(_) => {
                    ready!(self.poll_flush_out(cx))?;
                    if self.tcp_eof {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS handshake cut short",
                        )));
                    }
                    ready!(self.poll_fill(cx))?;
                }
                Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake",
                    )));
                }
            }
        }
    }

    /// `step`, and on a TLS error one try to tell the peer (the alert rustls
    /// queued) without waiting: the connection is over either way.
    fn step_or_alert(&mut self, act: Act<'_>, sink: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection failed earlier",
            ));
        }
        let err = match self.step(act, sink) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        self.failed = true;
        // The alert rustls queued, one chunk a round. Not a round more: the
        // next would deframe the bad bytes again.
        while self.conn.wants_write() {
            if self.step(Act::Nothing, None).is_err() {
                break;
            }
        }
        if let Some(rest) = self.outgoing.get(self.out_at..) {
            let _ = self.tcp.try_write(rest);
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Err(err)
    }

    /// One round of rustls over `incoming`: decrypted data goes to `sink`
    /// (what does not fit, to `plain`), handshake data to `outgoing`.
    fn step(&mut self, act: Act<'_>, mut sink: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        let Self {
            conn,
            incoming,
            plain,
            outgoing,
            peer_closed,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
        // No early return in here: `discard` must be applied on errors too.
        let step = match state {
            Err(e) => Err(invalid(e)),
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                let mut res = Ok(Step::Again);
                while let Some(record) = r.next_record() {
                    let AppDataRecord {
                        discard: more,
                        payload,
                    } = match record {
                        Ok(record) => record,
                        Err(e) => {
                            res = Err(invalid(e));
                            break;
                        }
                    };
                    discard += more;
                    let n = sink.as_mut().map_or(0, |b| {
                        let n = b.remaining().min(payload.len());
                        b.put_slice(&payload[..n]);
                        n
                    });
                    plain.extend_from_slice(&payload[n..]);
                }
                res
            }
            // Sized exactly: the first call only learns the record's size.
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                append_with(outgoing, 0, |out| match e.encode(out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncodeError::InsufficientSize(s)) => Ok(Err(s.required_size)),
                    Err(other) => Err(invalid(other.to_string())),
                })
                .map(|()| Step::Again)
            }
            // The bytes are in `outgoing`, written before any wait for a read.
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedData),
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => Ok(Step::Closed),
            Ok(ConnectionState::WriteTraffic(mut w)) => match act {
                Act::Nothing => Ok(Step::Writable(0)),
                Act::Encrypt(bufs) => encrypt(&mut w, bufs, outgoing).map(Step::Writable),
                Act::CloseNotify => append_with(outgoing, RECORD_OVERHEAD, |out| {
                    match w.queue_close_notify(out) {
                        Ok(n) => Ok(Ok(n)),
                        Err(EncryptError::InsufficientSize(s)) => Ok(Err(s.required_size)),
                        Err(other) => Err(invalid(other.to_string())),
                    }
                })
                .map(|()| Step::Writable(0)),
            },
            // Early data is off (`max_early_data_size` 0); nothing else exists in 0.23.
            Ok(_) => Err(invalid("unexpected TLS state")),
        };
        consume_front(incoming, discard);
        step
    }

    /// Reads what the socket has into `incoming`: the rest of a partial
    /// record when its header is in, else up to `READ_CHUNK`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let want = match self.incoming.get(..RECORD_HEADER) {
                Some(h) => {
                    let end = RECORD_HEADER + usize::from(u16::from_be_bytes([h[3], h[4]]));
                    end.saturating_sub(self.incoming.len()).max(READ_CHUNK)
                }
                None => READ_CHUNK,
            };
            self.incoming.reserve_exact(want);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(0) => {
                    self.tcp_eof = true;
                    self.release_incoming();
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => return Poll::Ready(Ok(())),
                // A spurious wake: tokio has cleared the readiness; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.release_incoming(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn release_incoming(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
    }

    /// Writes `outgoing` to the socket, then frees it.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.outgoing.get(self.out_at..).filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes what the socket takes of `outgoing` now, registering no waker.
    fn try_flush_out(&mut self) -> io::Result<()> {
        while let Some(rest) = self.outgoing.get(self.out_at..).filter(|r| !r.is_empty()) {
            match self.tcp.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Ok(())
    }

    /// Takes what `plain` holds into `buf`; frees it once all is taken.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some(rest) = self.plain.get(self.plain_at..).filter(|r| !r.is_empty()) else {
            return false;
        };
        let n = buf.remaining().min(rest.len());
        buf.put_slice(&rest[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }

    /// Bytes of buffer the stream holds (test probe: zero when idle).
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 || this.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            match this.step_or_alert(Act::Nothing, Some(buf))? {
                Step::Again if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Step::Again => {}
                Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedData | Step::Writable(_) => {
                    if this.peer_closed {
                        return Poll::Ready(Ok(()));
                    }
                    // A key update reply rustls queued while reading. Not
                    // `poll_write`: that would take the writer's place as the
                    // task woken when the socket drains, should reads and
                    // writes be polled from two tasks. If the socket is
                    // full, it goes with the next write.
                    this.try_flush_out()?;
                    if this.tcp_eof {
                        // rustls' own reader says the same: EOF without
                        // close_notify may be a truncation attack.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection without close_notify",
                        )));
                    }
                    ready!(this.poll_fill(cx))?;
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What an earlier write encrypted goes out first: at most one write's
        // worth of ciphertext is held.
        ready!(this.poll_flush_out(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.step_or_alert(Act::Encrypt(bufs), None)? {
                Step::Again => {}
                Step::Writable(n) => {
                    // Accepted either way; what the socket does not take now
                    // goes with the next write or flush.
                    if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::NeedData => return Poll::Ready(Err(invalid("TLS handshake not complete"))),
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    /// Sends close_notify, then half-closes the socket.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.write_closed {
            match this.step_or_alert(Act::CloseNotify, None)? {
                Step::Again => {}
                Step::NeedData => return Poll::Ready(Err(invalid("TLS handshake not complete"))),
                Step::Writable(_) | Step::Closed => this.write_closed = true,
            }
        }
        ready!(this.poll_flush_out(cx))?;
        match ready!(Pin::new(&mut this.tcp).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
