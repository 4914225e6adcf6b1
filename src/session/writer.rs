//! What a session writes, and how: its queue's items as text frames (one
//! `writev` and one flush per drain), and the Close frame. The session's
//! one task (`conn`) decides when; `wire` encodes and writes.
//!
//! With `batch=1` ([`Batching`]) the frames of one drain are also joined by
//! `\n` into as few text frames as [`BATCH_BUDGET`] allows: the client pays
//! per WebSocket frame, and this costs no waiting (only what is already
//! queued is joined). Pings and the Close frame always go alone.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use prometheus::IntCounter;

use super::wire::Writing;
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Frame};

/// Queue items (hub turns) taken per flush at most: one `writev` of their
/// headers and shared payloads (no copy), whose slices are freed after it.
pub(super) const MAX_ITEMS: usize = 16;
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

/// Sends `code`'s Close frame (unless tungstenite already answered the
/// client's), within [`CLOSE_GRACE`] (a peer that does not read cannot hold the task).
pub(super) async fn send_close<S>(out: &mut Writing<S>, code: CloseCode)
where
    S: AsyncRead + AsyncWrite,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, out.close(code)).await;
}

/// Queues the frames of `items` (hub turns, in order) on `out` as text
/// frames: one per frame, or with `batch=1` joined within [`BATCH_BUDGET`].
/// Takes `items` whole: its capacity is not kept between turns.
pub(super) fn queue<S>(out: &mut Writing<S>, items: Vec<Vec<Frame>>, joining: Option<&Batching>)
where
    S: AsyncRead + AsyncWrite,
{
    let Some(counts) = joining else {
        return out.queue_text(items.into_iter().flatten().map(Frame::into_bytes));
    };
    let mut payloads = Vec::new();
    let mut group: Vec<Frame> = Vec::new();
    let mut size = 0;
    for f in items.into_iter().flatten() {
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
    out.queue_text(payloads);
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

    use super::super::conn::tests::spawn_plain;
    use super::*;
    use crate::protocol::CloseCode;

    #[tokio::test]
    async fn a_ping_stuck_on_a_peer_that_does_not_read_yields_to_close() {
        // A one-byte pipe the peer never reads: the first ping's second byte
        // (and everything after it) waits forever.
        let (a, _b) = tokio::io::duplex(1);
        let ping = Duration::from_millis(20);
        let p = spawn_plain(a, Vec::new(), ping, false, Vec::new()).await;
        // Bounded wait for the task to be in its ping (a few intervals).
        tokio::time::sleep(ping * 5).await;
        p.close_tx.send_replace(Some(CloseCode::Evicted));
        // Generous bound: the Close frame gets CLOSE_GRACE (1 s), then the task ends.
        tokio::time::timeout(Duration::from_secs(20), p.task)
            .await
            .expect("the session stayed stuck in its ping after it was closed")
            .unwrap();
    }

    fn frame(i: usize, pad: usize) -> Frame {
        Frame::from(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(pad)))
    }

    /// Runs a connection over `items` queued before it starts, closes it, and
    /// returns the messages a client read (the Close frame last).
    async fn sent(items: Vec<Vec<Frame>>, batching: bool) -> Vec<Message> {
        let (a, b) = tokio::io::duplex(1 << 16);
        let preamble = vec![frame(0, 0)];
        let p = spawn_plain(a, preamble, Duration::from_secs(60), batching, items).await;
        // No more items: the session ends (1000) once it has sent them.
        drop(p.out_tx);
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut got = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            let end = matches!(m, Message::Close(_));
            got.push(m);
            if end {
                break;
            }
        }
        p.task.await.unwrap();
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
