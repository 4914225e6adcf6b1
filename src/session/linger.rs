//! The lingering close: how a session lets go of its socket once the Close
//! frame is out (RFC 6455 §7.1.1: the server closes TCP first).
//!
//! Dropping a socket whose receive buffer still holds unread bytes makes the
//! kernel answer with RST instead of FIN, and an RST makes the client's kernel
//! throw away what the client had not read yet: our Close frame. A browser
//! that was still sending (a frame over `--max-frame`, anything while we
//! evict or shut down) then saw 1006 instead of our code. So, like nginx's
//! `lingering_close` and Go's `closeWriteAndWait`: half-close our side
//! (TLS: close_notify, then FIN), then read and discard until the client
//! closes too, the deadline, or the byte budget.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::{Reading, Writing};

/// How long a closed session may keep its socket open waiting for the
/// client's end. A browser answers within a round trip; one that never does
/// is cut here. With the Close frame's own grace (1 s, writer) and the reply
/// to a client's Close (1 s, reader), this stays inside the server's
/// shutdown grace for sessions (5 s).
pub const LINGER: Duration = Duration::from_secs(2);
/// Bytes read and thrown away at most. Past it, we stop reading (the client's
/// sends stall on a full window) but still keep the socket until `LINGER`, so
/// a slow client has the time to read our Close before the reset.
pub const LINGER_BYTES: usize = 1 << 20;
/// A client that sends nothing for this long after our FIN is not sending:
/// its receive side has our Close, our receive buffer is empty, and dropping
/// the socket then makes no reset (like nginx's `lingering_timeout`). Without
/// it, every client that simply keeps its end open (an idle tab, a test)
/// held its socket, and the server's shutdown, for the whole `LINGER`.
pub const LINGER_QUIET: Duration = Duration::from_millis(500);

/// Once the Close frame is out (or its grace is over): reunites the halves
/// the session wrote (`sink`) and read (`stream`), lingers on the socket,
/// and drops it.
pub async fn let_go<S>(sink: Writing<S>, stream: Reading<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // `None`: not the halves of one socket: cannot happen (one `split` made
    // them), and then there is just nothing to linger on.
    if let Some(mut io) = super::wire::unsplit(stream, sink) {
        linger(&mut io).await;
    }
}

/// Half-closes `io`, then discards what the peer still sends until its EOF,
/// an error, `LINGER_QUIET` without a byte, `LINGER`, or `LINGER_BYTES` (then
/// waits out `LINGER`). The caller drops the socket afterwards.
pub async fn linger<S>(io: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(LINGER, async {
        // A peer that does not read can block the flush of close_notify;
        // the deadline covers this too.
        if io.shutdown().await.is_err() {
            return;
        }
        let mut buf = [0u8; 8 * 1024];
        let mut seen = 0usize;
        while seen < LINGER_BYTES {
            match tokio::time::timeout(LINGER_QUIET, io.read(&mut buf)).await {
                // Quiet, closed or broken: nothing more is coming.
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => seen += n,
            }
        }
        tracing::debug!(
            bytes = seen,
            "peer kept sending after the close; waiting out the linger"
        );
        std::future::pending::<()>().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer sees our FIN while we still hold the socket (a half-close,
    /// not a drop), and its own close ends the linger.
    #[tokio::test]
    async fn half_closes_and_ends_at_the_peers_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let peer = tokio::spawn(async move {
            let mut buf = Vec::new();
            b.read_to_end(&mut buf).await.unwrap();
            // Dropping `b` here is the peer's close.
        });
        linger(&mut a).await;
        // `a` is still alive: the EOF the peer saw was the half-close.
        tokio::time::timeout(Duration::from_secs(20), peer)
            .await
            .expect("the peer never saw our FIN")
            .unwrap();
        drop(a);
    }

    /// A peer that keeps its end open but sends nothing is let go after
    /// `LINGER_QUIET`, not `LINGER` (virtual time: exact, not a timing guess).
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_let_go_after_the_quiet_period() {
        let (mut a, _b) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        linger(&mut a).await;
        assert_eq!(start.elapsed(), LINGER_QUIET);
    }

    /// A peer that trickles bytes without end (each gap under the quiet
    /// period) is cut at `LINGER`.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_peer_is_cut_at_the_deadline() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let peer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LINGER_QUIET / 2).await;
                if b.write_all(b"x").await.is_err() {
                    break;
                }
            }
        });
        let start = tokio::time::Instant::now();
        linger(&mut a).await;
        assert_eq!(start.elapsed(), LINGER);
        peer.abort();
    }
}
