//! One established link: its send queue, its pending calls, and the task
//! that reads and writes it until it drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LinkError;
use super::LinkHandler;
use super::frame::{self, Frame, FrameError, OVERHEAD, RefuseCode};
use crate::metrics::{ClusterMetrics, LinkDrop};

type Reply = oneshot::Sender<Result<Bytes, LinkError>>;

/// Calls waiting for their response. `closed` is set when the link ends, so
/// a call that starts after that fails at once instead of waiting for its
/// timeout.
#[derive(Default)]
struct Pending {
    closed: bool,
    calls: HashMap<u64, Reply>,
}

/// The shared half of a link: what `call` and `send` use.
pub struct LinkShared {
    pub peer: String,
    /// Distinguishes this link from a later one to the same peer.
    pub conn_id: u64,
    out_tx: mpsc::Sender<Bytes>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    pub cancel: CancellationToken,
    reason: Mutex<Option<LinkDrop>>,
    max_frame: usize,
}

impl LinkShared {
    /// A link's shared half and the receiving end of its send queue.
    pub fn new(
        peer: String,
        conn_id: u64,
        capacity: usize,
        max_frame: usize,
        cancel: CancellationToken,
    ) -> (Arc<Self>, mpsc::Receiver<Bytes>) {
        // The send queue. Full-policy: never wait. A full queue means the peer
        // (or the network to it) is slower than what we produce; the link is
        // dropped (`queue_full`), pending calls fail, and the peer
        // resynchronises over the next link (Raft retries its RPCs; typing
        // and presence are refreshed). Waiting would stall the caller (the
        // hub, Raft's core) behind one slow peer.
        let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Self {
            peer,
            conn_id,
            out_tx,
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            cancel,
            reason: Mutex::new(None),
            max_frame,
        });
        (shared, out_rx)
    }

    /// Drops the link for `why` (the first reason given is the one counted).
    pub fn close(&self, why: LinkDrop) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(why);
        }
        self.cancel.cancel();
    }

    fn reason(&self) -> Option<LinkDrop> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    /// Queues a frame without waiting (see the full-policy in `new`).
    pub fn enqueue(&self, frame: &Frame) -> Result<(), LinkError> {
        match self.out_tx.try_send(frame.encode()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(LinkDrop::QueueFull);
                Err(LinkError::QueueFull(self.peer.clone()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LinkError::Dropped(self.peer.clone())),
        }
    }

    fn check_size(&self, body: &Bytes) -> Result<(), LinkError> {
        if body.len() + OVERHEAD > self.max_frame {
            return Err(LinkError::TooLarge(body.len()));
        }
        Ok(())
    }

    pub fn send(&self, body: Bytes) -> Result<(), LinkError> {
        self.check_size(&body)?;
        self.enqueue(&Frame::Message { body })
    }

    pub async fn call(&self, body: Bytes, timeout: Duration) -> Result<Bytes, LinkError> {
        self.check_size(&body)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().map_err(|_| self.dropped())?;
            if p.closed {
                return Err(self.dropped());
            }
            p.calls.insert(id, tx);
        }
        if let Err(e) = self.enqueue(&Frame::Request { id, body }) {
            self.forget(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            // The sender was dropped: the link ended while we waited.
            Ok(Err(_)) => Err(self.dropped()),
            Err(_) => {
                self.forget(id);
                Err(LinkError::Timeout(self.peer.clone()))
            }
        }
    }

    fn dropped(&self) -> LinkError {
        LinkError::Dropped(self.peer.clone())
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.calls.remove(&id);
        }
    }

    fn answer(&self, id: u64, answer: Result<Bytes, LinkError>) {
        let reply = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.calls.remove(&id));
        // No entry: the call timed out already; a late answer is dropped.
        if let Some(tx) = reply {
            let _ = tx.send(answer);
        }
    }

    /// Fails every pending call (their senders drop) and refuses new ones.
    fn fail_all(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.closed = true;
            p.calls.clear();
        }
    }
}

/// What a link's task needs besides its stream.
pub struct LinkCtx {
    pub handler: Arc<dyn LinkHandler>,
    pub metrics: Arc<ClusterMetrics>,
    pub tracker: TaskTracker,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub max_inflight: usize,
}

/// Runs the link until it drops. Returns why, or `None` when it was closed
/// without a reason (this node shutting down).
pub async fn run<S>(
    stream: S,
    shared: Arc<LinkShared>,
    out_rx: mpsc::Receiver<Bytes>,
    ctx: &LinkCtx,
) -> Option<LinkDrop>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let why = tokio::select! {
        // A reason set by `close` (queue full, removed, replaced) wins.
        () = shared.cancel.cancelled() => shared.reason(),
        w = write_loop(wr, out_rx, &ctx.metrics) => Some(shared.reason().unwrap_or(w)),
        r = read_loop(rd, &shared, ctx) => Some(shared.reason().unwrap_or(r)),
        () = keepalive(&shared, ctx.keepalive) => shared.reason(),
    };
    shared.cancel.cancel();
    shared.fail_all();
    why
}

async fn keepalive(shared: &LinkShared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if shared.enqueue(&Frame::Ping).is_err() {
            return;
        }
    }
}

/// Writes queued frames; several per flush when they queue up.
async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut out_rx: mpsc::Receiver<Bytes>,
    metrics: &ClusterMetrics,
) -> LinkDrop {
    let wr = BufWriter::with_capacity(64 * 1024, wr);
    let mut wr = std::pin::pin!(wr);
    while let Some(first) = out_rx.recv().await {
        let mut next = Some(first);
        while let Some(bytes) = next.take() {
            if wr.write_all(&bytes).await.is_err() {
                return LinkDrop::Closed;
            }
            metrics.link_bytes_sent.inc_by(bytes.len() as u64);
            next = out_rx.try_recv().ok();
        }
        if wr.flush().await.is_err() {
            return LinkDrop::Closed;
        }
    }
    LinkDrop::Closed
}

async fn read_loop<R: AsyncRead>(rd: R, shared: &Arc<LinkShared>, ctx: &LinkCtx) -> LinkDrop {
    let mut rd = std::pin::pin!(BufReader::with_capacity(64 * 1024, rd));
    // Requests from this peer running at once; past it they are refused
    // (`Busy`) rather than queued, so a flood cannot pile up tasks.
    let inflight = Arc::new(Semaphore::new(ctx.max_inflight.max(1)));
    loop {
        let read = tokio::time::timeout(
            ctx.idle_timeout,
            frame::read_frame(&mut rd, shared.max_frame),
        );
        let (f, n) = match read.await {
            Err(_) => return LinkDrop::Idle,
            Ok(Ok(f)) => f,
            Ok(Err(FrameError::Io(_))) => return LinkDrop::Closed,
            Ok(Err(e)) => {
                tracing::warn!(peer = %shared.peer, error = %e, "bad frame from node link");
                return LinkDrop::BadFrame;
            }
        };
        ctx.metrics.link_bytes_received.inc_by(n as u64);
        let sent = match f {
            Frame::Request { id, body } => request(shared, ctx, &inflight, id, body),
            Frame::Response { id, body } => {
                shared.answer(id, Ok(body));
                Ok(())
            }
            Frame::Refused { id, code } => {
                let e = match code {
                    RefuseCode::Busy => LinkError::Busy(shared.peer.clone()),
                    RefuseCode::TooLarge => LinkError::AnswerTooLarge(shared.peer.clone()),
                };
                shared.answer(id, Err(e));
                Ok(())
            }
            Frame::Message { body } => {
                ctx.handler.message(&shared.peer, body);
                Ok(())
            }
            Frame::Ping => shared.enqueue(&Frame::Pong),
            Frame::Pong => Ok(()),
        };
        if sent.is_err() {
            // The queue was full (the link is closing, reason set) or closed.
            return LinkDrop::QueueFull;
        }
    }
}

/// Runs one request in its own task (bounded by `inflight`) so the reader
/// keeps reading; the answer goes through the same send queue.
fn request(
    shared: &Arc<LinkShared>,
    ctx: &LinkCtx,
    inflight: &Arc<Semaphore>,
    id: u64,
    body: Bytes,
) -> Result<(), LinkError> {
    let Ok(permit) = inflight.clone().try_acquire_owned() else {
        return shared.enqueue(&Frame::Refused {
            id,
            code: RefuseCode::Busy,
        });
    };
    let (shared, handler) = (shared.clone(), ctx.handler.clone());
    ctx.tracker.spawn(async move {
        let _permit = permit;
        tokio::select! {
            // The link is gone: nobody is waiting for the answer.
            () = shared.cancel.cancelled() => {}
            answer = handler.request(&shared.peer, body) => {
                let frame = if answer.len() + OVERHEAD > shared.max_frame {
                    tracing::warn!(peer = %shared.peer, len = answer.len(), "link answer over the frame limit");
                    Frame::Refused { id, code: RefuseCode::TooLarge }
                } else {
                    Frame::Response { id, body: answer }
                };
                // A full queue drops the link; the caller's call fails.
                let _ = shared.enqueue(&frame);
            }
        }
    });
    Ok(())
}
