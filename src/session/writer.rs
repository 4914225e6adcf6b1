//! The writer task of a session: sends the join preamble, then drains the
//! session queue in batches (feed every queued frame, one flush), pings, and
//! sends the Close frame when the session is closed.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

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
) where
    W: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut batch: Vec<Vec<Frame>> = vec![preamble];
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let close = loop {
        if !batch.is_empty() {
            // A peer that does not read blocks this flush; eviction must still win.
            tokio::select! {
                r = write_all(&mut sink, &mut batch) => if r.is_err() { return },
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
                if sink.send(Message::Ping(Default::default())).await.is_err() { return }
            }
        }
    };
    // `None`: closed while a write was stuck; the Close frame would not get through either.
    let code = close.or(*close_rx.borrow()).unwrap_or(CloseCode::Normal);
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
        sink.feed(Message::Text(f)).await?;
    }
    sink.flush().await
}
