//! The writer task of a session: sends the join preamble, then drains the
//! session queue in batches (feed every queued frame, one flush), pings, and
//! sends the Close frame when the session is closed. It hands the sink back
//! for the lingering close (`linger`).

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::protocol::{CloseCode, Frame};

/// Queue items (hub turns) taken per flush at most. tungstenite writes its
/// out-buffer to the socket whenever it passes `write_buffer_size`, so a large
/// batch does not grow that buffer without bound.
const MAX_ITEMS: usize = 16;
/// How long a Close frame may take to go out before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub async fn run<W>(
    mut sink: W,
    mut out_rx: mpsc::Receiver<Vec<Frame>>,
    mut close_rx: watch::Receiver<Option<CloseCode>>,
    preamble: Vec<Frame>,
    ping_every: Duration,
) -> W
where
    W: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut batch: Vec<Vec<Frame>> = vec![preamble];
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let close = loop {
        if !batch.is_empty() {
            // A peer that does not read blocks this flush; eviction must still win.
            tokio::select! {
                r = write_all(&mut sink, &mut batch) => if r.is_err() { return sink },
                _ = close_rx.changed() => break None,
            }
        }
        if let Some(code) = *close_rx.borrow_and_update() {
            break Some(code);
        }
        tokio::select! {
            biased;
            r = close_rx.changed() => {
                match (r, *close_rx.borrow_and_update()) {
                    (Ok(()), Some(code)) => break Some(code),
                    (Ok(()), None) => continue,
                    (Err(_), _) => break Some(CloseCode::Normal),
                }
            }
            n = out_rx.recv_many(&mut batch, MAX_ITEMS) => if n == 0 { break Some(CloseCode::Normal) },
            _ = ping.tick() => {
                // Like a batch, a ping blocks on a peer that does not read;
                // eviction, idle and shutdown must still end the session.
                tokio::select! {
                    r = sink.send(Message::Ping(Default::default())) => if r.is_err() { return sink },
                    _ = close_rx.changed() => break None,
                }
            }
        }
    };
    // `None`: closed while a write was stuck; the Close frame would not get through either.
    let code = close.or(*close_rx.borrow()).unwrap_or(CloseCode::Normal);
    send_close(&mut sink, code).await;
    sink
}

/// Sends `code`'s Close frame and closes the sink, within [`CLOSE_GRACE`]
/// (a peer that does not read cannot hold the task).
pub(super) async fn send_close<W>(sink: &mut W, code: CloseCode)
where
    W: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: code.code().into(),
        reason: code.reason().into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
}

async fn write_all<W>(sink: &mut W, batch: &mut Vec<Vec<Frame>>) -> Result<(), W::Error>
where
    W: Sink<Message> + Unpin,
{
    for f in batch.drain(..).flatten() {
        sink.feed(Message::Text(text(f))).await?;
    }
    sink.flush().await
}

/// Our frame as tungstenite's text payload: the same shared bytes (a frame
/// sent to a thousand sessions is still one allocation), and no second UTF-8
/// check per recipient, which `Utf8Bytes::try_from` would make.
fn text(f: Frame) -> Utf8Bytes {
    // SAFETY: a `Frame` is made only from a `String` or a `&str`
    // (protocol::frames, private field), so its bytes are valid UTF-8.
    unsafe { Utf8Bytes::from_bytes_unchecked(f.into_bytes()) }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use super::*;

    /// A peer with a zero receive window: every send waits forever; flushing
    /// nothing succeeds. Counts the sends it was asked for.
    struct Stuck(Arc<AtomicUsize>);

    impl Sink<Message> for Stuck {
        type Error = tokio_tungstenite::tungstenite::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_frame_becomes_text_without_a_copy() {
        let f = Frame::from(String::from(r#"{"type":"system","content":"héllo"}"#));
        let ptr = f.as_str().as_ptr();
        let t = text(f.clone());
        assert_eq!(t.as_str(), f.as_str());
        assert_eq!(
            t.as_str().as_ptr(),
            ptr,
            "the payload must share the frame's bytes"
        );
    }

    #[tokio::test]
    async fn a_ping_stuck_on_a_peer_that_does_not_read_yields_to_close() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (_out_tx, out_rx) = mpsc::channel(4);
        let (close_tx, close_rx) = watch::channel(None);
        let ping = Duration::from_millis(20);
        let writer = tokio::spawn(run(
            Stuck(polls.clone()),
            out_rx,
            close_rx,
            Vec::new(),
            ping,
        ));
        // Wait (bounded) until the writer is blocked in its first ping.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while polls.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the writer never pinged"
            );
            tokio::time::sleep(ping).await;
        }
        close_tx.send_replace(Some(CloseCode::Evicted));
        // Generous bound: the Close frame gets CLOSE_GRACE (1 s), then the task ends.
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the writer stayed stuck in its ping after the session closed")
            .unwrap();
    }
}
