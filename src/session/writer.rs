//! The writer task of a session: sends the join preamble, then drains the
//! session queue in batches (feed every queued frame, one flush), pings, and
//! sends the Close frame when the session is closed. It hands the sink back
//! for the lingering close (`linger`).
//!
//! With `batch=1` ([`Batching`]) the frames of one drain are also joined by
//! `\n` into as few text frames as [`BATCH_BUDGET`] allows: the client pays
//! per WebSocket frame, and this costs no waiting (only what is already
//! queued is joined). Pings and the Close frame always go alone.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use prometheus::IntCounter;

use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Frame};

/// Queue items (hub turns) taken per flush at most. tungstenite writes its
/// out-buffer to the socket whenever it passes `write_buffer_size`, so a large
/// batch does not grow that buffer without bound.
const MAX_ITEMS: usize = 16;
/// How long a Close frame may take to go out before the socket is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// `batch=1`: bytes of JSON joined into one text frame at most (a single
/// larger frame still goes, alone). 32 KiB is tungstenite's write buffer here
/// (`http::ws`), so a full batch is one socket write and pins no more memory
/// than a busy connection already does; with chat frames of ~250 bytes it
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

pub async fn run<W>(
    mut sink: W,
    mut out_rx: mpsc::Receiver<Vec<Frame>>,
    mut close_rx: watch::Receiver<Option<CloseCode>>,
    preamble: Vec<Frame>,
    ping_every: Duration,
    joining: Option<Batching>,
) -> W
where
    W: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
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
    let close = loop {
        if !batch.is_empty() {
            // A peer that does not read blocks this flush; eviction must still win.
            tokio::select! {
                r = write_all(&mut sink, &mut batch, joining.as_ref()) => if r.is_err() { return sink },
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

async fn write_all<W>(
    sink: &mut W,
    batch: &mut Vec<Vec<Frame>>,
    joining: Option<&Batching>,
) -> Result<(), W::Error>
where
    W: Sink<Message> + Unpin,
{
    let Some(counts) = joining else {
        for f in batch.drain(..).flatten() {
            sink.feed(Message::Text(text(f))).await?;
        }
        return sink.flush().await;
    };
    let mut group: Vec<Frame> = Vec::new();
    let mut size = 0;
    for f in batch.drain(..).flatten() {
        if !group.is_empty() && size + 1 + f.len() > BATCH_BUDGET {
            sink.feed(join(&mut group, counts)).await?;
            size = 0;
        }
        size += f.len() + usize::from(!group.is_empty());
        group.push(f);
    }
    if !group.is_empty() {
        sink.feed(join(&mut group, counts)).await?;
    }
    sink.flush().await
}

/// One text frame of `group`'s frames, one JSON object per line (our JSON
/// has no raw newline: `encode`), leaving `group` empty. A lone frame is
/// sent as it is, without a copy.
fn join(group: &mut Vec<Frame>, counts: &Batching) -> Message {
    if group.len() == 1
        && let Some(f) = group.pop()
    {
        return Message::Text(text(f));
    }
    let len = group.iter().map(|f| f.len() + 1).sum();
    // Bytes, not a `String` built with `Frame::as_str`: that checks UTF-8
    // again for every frame and every recipient (a quarter of the server's
    // CPU at 2 M deliveries/s in a perf profile).
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
    // SAFETY: frames are UTF-8 (see `text`) and so is b'\n'; a concatenation
    // of whole UTF-8 strings is UTF-8.
    Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(out.into()) })
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
            None,
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

    /// A peer that takes everything at once: records what was sent.
    struct Record(Arc<std::sync::Mutex<Vec<Message>>>);

    impl Sink<Message> for Record {
        type Error = tokio_tungstenite::tungstenite::Error;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(m);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(i: usize, pad: usize) -> Frame {
        Frame::from(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(pad)))
    }

    /// Runs a writer over `items` queued before it starts, closes it, and
    /// returns the messages it sent (the Close frame last).
    async fn sent(items: Vec<Vec<Frame>>, batching: bool) -> Vec<Message> {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (out_tx, out_rx) = mpsc::channel(items.len().max(1));
        for it in items {
            out_tx.try_send(it).unwrap();
        }
        drop(out_tx);
        let (_close_tx, close_rx) = watch::channel(None);
        let m = Metrics::new();
        let preamble = vec![frame(0, 0)];
        let b = batching.then(|| Batching::new(&m));
        run(
            Record(out.clone()),
            out_rx,
            close_rx,
            preamble,
            Duration::from_secs(60),
            b,
        )
        .await;
        std::mem::take(&mut *out.lock().unwrap())
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
        assert_eq!(plain[0], Message::Text(text(frame(0, 0))));
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
}
