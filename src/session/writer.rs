//! The writer task of a session: sends the join preamble, then drains the
//! session queue in batches (feed every queued frame, one flush), pings, and
//! sends the Close frame when the session is closed; it also sends the pongs
//! and Close reply tungstenite writes while reading (`wire`). It hands its
//! half of the socket back for the lingering close (`linger`).
//!
//! With `batch=1` ([`Batching`]) the frames of one drain are also joined by
//! `\n` into as few text frames as [`BATCH_BUDGET`] allows: the client pays
//! per WebSocket frame, and this costs no waiting (only what is already
//! queued is joined). Pings and the Close frame always go alone.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use prometheus::IntCounter;

use super::wire::{Sent, Writing};
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Frame};

/// Queue items (hub turns) taken per flush at most: one `writev` of their
/// headers and shared payloads (no copy), whose slices are freed after it.
const MAX_ITEMS: usize = 16;
/// How long a Close frame may take to go out before the socket is just dropped.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// `batch=1`: bytes of JSON joined into one text frame at most (a single
/// larger frame still goes, alone). The joined frame is freed once written
/// (`wire`: nothing of a burst stays pinned); with chat frames of ~250 bytes it
/// carries ~130 messages, so per-frame costs are already spread over two
/// orders of magnitude and more would only make each copy (and a browser's
/// one `onmessage`) longer.
pub const BATCH_BUDGET: usize = 32 * 1024;

/// A `batch=1` connection's counters (`hubbub_batched_*`).
pub struct Batching {
    frames: IntCounter,
    messages: IntCounter,
}

impl Batching {
    pub fn new(m: &Metrics) -> Self {
        Batching {
            frames: m.batched_frames.clone(),
            messages: m.batched_messages.clone(),
        }
    }
}

pub async fn run<S>(
    mut out: Writing<S>,
    mut out_rx: mpsc::Receiver<Vec<Frame>>,
    mut close_rx: watch::Receiver<Option<CloseCode>>,
    preamble: Vec<Frame>,
    ping_every: Duration,
    joining: Option<Batching>,
) -> Writing<S>
where
    S: AsyncRead + AsyncWrite,
{
    let mut batch: Vec<Vec<Frame>> = vec![preamble];
    if joining.is_some() {
        // What the hub queued while the preamble was read (presence) joins it.
        while batch.len() < MAX_ITEMS
            && let Ok(item) = out_rx.try_recv()
        {
            batch.push(item);
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    // Every write below: `Sent::Closed` means tungstenite answered the
    // client's Close (the reader ends the session); nothing may follow it.
    let close = loop {
        if !batch.is_empty() {
            // A peer that does not read blocks this flush; eviction must still win.
            tokio::select! {
                r = write_all(&mut out, &mut batch, joining.as_ref()) => match r {
                    Err(_) => return out,
                    Ok(Sent::Closed) => break Some(CloseCode::Normal),
                    Ok(Sent::Open) => {}
                },
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
            // A pong (or the Close reply) tungstenite wrote while reading.
            () = out.replies_waiting() => {
                tokio::select! {
                    r = out.replies() => match r {
                        Err(_) => return out,
                        Ok(Sent::Closed) => break Some(CloseCode::Normal),
                        Ok(Sent::Open) => {}
                    },
                    _ = close_rx.changed() => break None,
                }
            }
            _ = ping.tick() => {
                // Like a batch, a ping blocks on a peer that does not read;
                // eviction, idle and shutdown must still end the session.
                tokio::select! {
                    r = out.ping() => match r {
                        Err(_) => return out,
                        Ok(Sent::Closed) => break Some(CloseCode::Normal),
                        Ok(Sent::Open) => {}
                    },
                    _ = close_rx.changed() => break None,
                }
            }
        }
    };
    // `None`: closed while a write was stuck; what it did not write goes
    // first, then the Close frame, within the grace (or not at all).
    let code = close.or(*close_rx.borrow()).unwrap_or(CloseCode::Normal);
    send_close(&mut out, code).await;
    out
}

/// Sends `code`'s Close frame (unless tungstenite already answered the
/// client's), within [`CLOSE_GRACE`] (a peer that does not read cannot hold the task).
pub(super) async fn send_close<S>(out: &mut Writing<S>, code: CloseCode)
where
    S: AsyncRead + AsyncWrite,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, out.close(code)).await;
}

async fn write_all<S>(
    out: &mut Writing<S>,
    batch: &mut Vec<Vec<Frame>>,
    joining: Option<&Batching>,
) -> std::io::Result<Sent>
where
    S: AsyncRead + AsyncWrite,
{
    let Some(counts) = joining else {
        return out
            .text(batch.drain(..).flatten().map(Frame::into_bytes))
            .await;
    };
    let mut payloads = Vec::new();
    let mut group: Vec<Frame> = Vec::new();
    let mut size = 0;
    for f in batch.drain(..).flatten() {
        if !group.is_empty() && size + 1 + f.len() > BATCH_BUDGET {
            payloads.push(join(&mut group, counts));
            size = 0;
        }
        size += f.len() + usize::from(!group.is_empty());
        group.push(f);
    }
    if !group.is_empty() {
        payloads.push(join(&mut group, counts));
    }
    out.text(payloads).await
}

/// One text frame of `group`'s frames, one JSON object per line (our JSON
/// has no raw newline: `encode`), leaving `group` empty. A lone frame is
/// sent as it is, without a copy. Frames are UTF-8 (`protocol::frames`), and
/// so is a concatenation of them with b'\n': the text frame is valid.
fn join(group: &mut Vec<Frame>, counts: &Batching) -> Bytes {
    if group.len() == 1
        && let Some(f) = group.pop()
    {
        return f.into_bytes();
    }
    let len = group.iter().map(|f| f.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for (i, f) in group.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(f.as_bytes());
    }
    counts.frames.inc();
    counts.messages.inc_by(group.len() as u64);
    group.clear();
    out.into()
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::super::wire;
    use super::*;

    #[tokio::test]
    async fn a_ping_stuck_on_a_peer_that_does_not_read_yields_to_close() {
        // A one-byte pipe the peer never reads: the first ping's second byte
        // (and everything after it) waits forever.
        let (a, _b) = tokio::io::duplex(1);
        let (_reading, writing) = wire::split(a, 1 << 20).await;
        let (_out_tx, out_rx) = mpsc::channel(4);
        let (close_tx, close_rx) = watch::channel(None);
        let ping = Duration::from_millis(20);
        let writer = tokio::spawn(run(writing, out_rx, close_rx, Vec::new(), ping, None));
        // Bounded wait for the writer to be in its ping (a few intervals).
        tokio::time::sleep(ping * 5).await;
        close_tx.send_replace(Some(CloseCode::Evicted));
        // Generous bound: the Close frame gets CLOSE_GRACE (1 s), then the task ends.
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the writer stayed stuck in its ping after the session closed")
            .unwrap();
    }

    fn frame(i: usize, pad: usize) -> Frame {
        Frame::from(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(pad)))
    }

    /// Runs a writer over `items` queued before it starts, closes it, and
    /// returns the messages a client read (the Close frame last).
    async fn sent(items: Vec<Vec<Frame>>, batching: bool) -> Vec<Message> {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (_reading, writing) = wire::split(a, 1 << 20).await;
        let (out_tx, out_rx) = mpsc::channel(items.len().max(1));
        for it in items {
            out_tx.try_send(it).unwrap();
        }
        drop(out_tx);
        let (_close_tx, close_rx) = watch::channel(None);
        let m = Metrics::new();
        let preamble = vec![frame(0, 0)];
        let bt = batching.then(|| Batching::new(&m));
        let writer = tokio::spawn(run(
            writing,
            out_rx,
            close_rx,
            preamble,
            Duration::from_secs(60),
            bt,
        ));
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            let end = matches!(m, Message::Close(_));
            got.push(m);
            if end {
                break;
            }
        }
        writer.await.unwrap();
        got
    }

    fn lines(msgs: &[Message]) -> (usize, Vec<usize>) {
        let mut texts = 0;
        let mut seq = Vec::new();
        for m in msgs {
            if let Message::Text(t) = m {
                texts += 1;
                for l in t.as_str().split('\n') {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    seq.push(v["i"].as_u64().unwrap() as usize);
                }
            }
        }
        (texts, seq)
    }

    #[tokio::test]
    async fn batching_joins_what_is_queued_within_the_budget_in_order() {
        // 1 + 200 frames of ~1 KiB: ~201 KiB, so several budget-sized frames.
        let items: Vec<Vec<Frame>> = (0..10)
            .map(|k| (0..20).map(|j| frame(1 + k * 20 + j, 1000)).collect())
            .collect();
        let msgs = sent(items.clone(), true).await;
        let (texts, seq) = lines(&msgs);
        assert_eq!(seq, (0..=200).collect::<Vec<_>>(), "every frame, in order");
        assert!(texts > 1 && texts < 20, "{texts} text frames for 201");
        for m in &msgs {
            if let Message::Text(t) = m {
                assert!(t.len() <= BATCH_BUDGET, "{} bytes over the budget", t.len());
            }
        }
        assert!(
            matches!(msgs.last(), Some(Message::Close(_))),
            "close alone, last"
        );
        // Without batching: one text frame per message, byte for byte.
        let plain = sent(items, false).await;
        let (texts, seq) = lines(&plain);
        assert_eq!((texts, seq.len()), (201, 201));
        assert_eq!(plain[0], Message::Text(frame(0, 0).as_str().into()));
    }

    #[tokio::test]
    async fn a_frame_over_the_budget_goes_alone() {
        let items = vec![vec![frame(1, 10), frame(2, BATCH_BUDGET), frame(3, 10)]];
        let msgs = sent(items, true).await;
        let (texts, seq) = lines(&msgs);
        assert_eq!(seq, vec![0, 1, 2, 3]);
        // preamble + 1 | 2 | 3
        assert_eq!(texts, 3);
    }

    #[test]
    fn a_lone_frame_goes_without_a_copy() {
        let f = frame(1, 10);
        let ptr = f.as_bytes().as_ptr();
        let m = Metrics::new();
        let b = join(&mut vec![f], &Batching::new(&m));
        assert_eq!(b.as_ptr(), ptr, "the payload must share the frame's bytes");
    }
}
