//! The one task of a connection: it reads the client's frames, runs their
//! commands, drains the session queue onto the socket, pings, and closes.
//!
//! Why one task and not a reader and a writer: a second task cost every
//! idle connection ~1 KiB (its future, kept for the socket's life, and its
//! ping timer; docs/BENCHMARKS.md). One `select!` waits on everything, and
//! each branch only does what cannot block:
//! - a write (`Writing::poll_send`) keeps its progress in `Writing`, so the
//!   task may leave it pending (a client that does not read) and still notice
//!   the close signal, a frame from the client, or its timers;
//! - the queue is only drained while nothing is left to write: a client that
//!   stops reading leaves its queue to fill, and the hub evicts it (4002)
//!   instead of this task buffering without bound;
//! - a command runs as a boxed future beside the rest (writes go on while it
//!   waits for the hub or storage), and the next frame is read once it is done;
//! - the branches are polled in random order, so a stream of outgoing frames
//!   does not starve reads, nor reads the queue.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::wire::{Reading, Sent, Writing};
use super::writer::{self, Batching, MAX_ITEMS};
use crate::protocol::{CloseCode, Frame};

/// A command's work: gives the connection's state back when done.
pub(super) type Busy<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the task does after a client's text or binary frame.
pub(super) enum Step<'a, T> {
    /// Read the next frame.
    Next(T),
    /// Close the session with this code.
    Close(CloseCode, T),
    /// Run this command (reading waits for it; writing does not).
    Run(Busy<'a, T>),
}

/// The connection's timing: pings, the idle timeout, the token's expiry.
pub(super) struct Timing {
    pub ping_every: Duration,
    pub idle: Duration,
    /// How long the client's token stays valid (then close 1008).
    pub expires_in: Duration,
}

/// The session's channels and shutdown signal.
pub(super) struct Wires<'s> {
    pub out_rx: mpsc::Receiver<Vec<Frame>>,
    pub close_rx: watch::Receiver<Option<CloseCode>>,
    /// Records the code the session ends with, unless the hub set one first.
    pub close_tx: &'s watch::Sender<Option<CloseCode>>,
    pub shutdown: &'s CancellationToken,
}

/// How long the reply to a client's Close may take to go out.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(1);
/// Far enough for any deadline (a token's expiry), without overflowing `Instant`.
const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

/// All the connection's deadlines in one timer: the next ping, the idle
/// timeout (from the last frame heard) and the token's expiry.
struct Clock {
    ping_every: Duration,
    idle: Duration,
    ping_at: Instant,
    heard_at: Instant,
    expires_at: Instant,
}

/// What the timer found when it fired.
enum Due {
    Expired,
    Idle,
    Ping,
    Nothing,
}

impl Clock {
    fn new(t: &Timing) -> Self {
        let now = Instant::now();
        Clock {
            ping_every: t.ping_every,
            idle: t.idle,
            ping_at: now + t.ping_every,
            heard_at: now,
            expires_at: now + t.expires_in.min(FAR),
        }
    }

    fn next(&self) -> Instant {
        self.ping_at
            .min(self.heard_at + self.idle)
            .min(self.expires_at)
    }

    fn check(&mut self, now: Instant) -> Due {
        if now >= self.expires_at {
            Due::Expired
        } else if now >= self.heard_at + self.idle {
            Due::Idle
        } else if now >= self.ping_at {
            self.ping_at = now + self.ping_every;
            Due::Ping
        } else {
            // The client was heard since this deadline was set.
            Due::Nothing
        }
    }
}

/// How the loop ended: the code this side chose (`None`: the hub's, in
/// the close signal, or the peer is simply gone), and whether the socket
/// broke (then no Close frame is tried).
pub(super) struct End {
    own: Option<CloseCode>,
    broken: bool,
}

impl End {
    fn own(code: CloseCode) -> Self {
        End {
            own: Some(code),
            broken: false,
        }
    }

    fn quiet(own: Option<CloseCode>) -> Self {
        End { own, broken: false }
    }
}

/// What a read brought.
enum Heard {
    More,
    End(End),
    /// The client's Close: tungstenite queued the reply.
    ClientClose,
}

/// The connection's state between frames. Owned by the session's future
/// (once: [`run`] and [`close`] only borrow or consume it), so nothing of
/// it is stored twice across the async layers.
pub(super) struct Conn<'a, T> {
    wires: Wires<'a>,
    joining: Option<Batching>,
    clock: Clock,
    /// Between frames the handler's state is here; while a command runs,
    /// the command has it (`busy`) and gives it back.
    state: Option<T>,
    busy: Option<Busy<'a, T>>,
    want_ping: bool,
}

impl<'a, T> Conn<'a, T> {
    pub(super) fn new(
        wires: Wires<'a>,
        timing: &Timing,
        joining: Option<Batching>,
        state: T,
    ) -> Self {
        Conn {
            wires,
            joining,
            clock: Clock::new(timing),
            state: Some(state),
            busy: None,
            want_ping: false,
        }
    }

    /// The timer fired: the end it brings, if any (a ping falls due, or
    /// the client was heard since this deadline was set: go on).
    fn on_timer(&mut self) -> Option<End> {
        match self.clock.check(Instant::now()) {
            Due::Expired => Some(End::own(CloseCode::Policy)),
            Due::Idle => {
                tracing::debug!("peer silent past the idle timeout");
                Some(End::own(CloseCode::Normal))
            }
            Due::Ping => {
                self.want_ping = true;
                None
            }
            Due::Nothing => None,
        }
    }

    /// What the socket gave: the client's next frame (handed to `on_frame`
    /// if it is text or binary), its end, or a read error.
    fn on_read<H>(
        &mut self,
        m: Option<Result<Message, tungstenite::Error>>,
        on_frame: &mut H,
    ) -> Heard
    where
        H: FnMut(Message, T) -> Step<'a, T>,
    {
        self.clock.heard_at = Instant::now();
        let msg = match m {
            None => return Heard::End(End::quiet(None)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Heard::End(End::quiet(read_error_close(&e)));
            }
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Close(_) => return Heard::ClientClose,
            // tungstenite answers pings itself (`wire`); pongs only count as heard.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            m => {
                // `state` is there: reads run only then.
                if let Some(s) = self.state.take() {
                    match on_frame(m, s) {
                        Step::Next(s) => self.state = Some(s),
                        Step::Close(code, s) => {
                            self.state = Some(s);
                            return Heard::End(End::own(code));
                        }
                        Step::Run(f) => self.busy = Some(f),
                    }
                }
            }
        }
        Heard::More
    }

    /// Queues the join's preamble (and, with `batch=1`, what the hub queued
    /// meanwhile: presence) as the first frames on `out`.
    pub(super) fn start<S>(&mut self, out: &mut Writing<S>, preamble: Vec<Frame>)
    where
        S: AsyncRead + AsyncWrite,
    {
        let mut first = vec![preamble];
        if self.joining.is_some() {
            while first.len() < MAX_ITEMS
                && let Ok(item) = self.wires.out_rx.try_recv()
            {
                first.push(item);
            }
        }
        writer::queue(out, first, self.joining.as_ref());
    }
}

/// Runs the connection until the session ends; then [`close`] sends the
/// Close frame. `on_frame` handles each text or binary frame.
pub(super) async fn run<'a, S, T, H>(
    ws: &mut Reading<S>,
    out: &mut Writing<S>,
    c: &mut Conn<'a, T>,
    mut on_frame: H,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Message, T) -> Step<'a, T>,
{
    // Closed before the loop (the join failed, an eviction during it).
    if c.wires.close_rx.borrow_and_update().is_some() {
        return End::quiet(None);
    }
    let sleep = tokio::time::sleep_until(c.clock.next());
    tokio::pin!(sleep);
    let mut batch: Vec<Vec<Frame>> = Vec::new();
    loop {
        if c.want_ping && !out.unsent() {
            out.queue_ping();
            c.want_ping = false;
        }
        let writing = out.unsent();
        let replies = out.replies_waiting();
        let w = &mut c.wires;
        tokio::select! {
            r = w.close_rx.changed() => match (r, *w.close_rx.borrow_and_update()) {
                (Ok(()), Some(_)) => return End::quiet(None),
                (Ok(()), None) => {}
                (Err(_), _) => return End::own(CloseCode::Normal),
            },
            () = w.shutdown.cancelled() => return End::own(CloseCode::GoingAway),
            () = &mut sleep => {
                if let Some(end) = c.on_timer() {
                    return end;
                }
                sleep.as_mut().reset(c.clock.next());
            }
            // A peer that does not read leaves this pending; the other
            // branches (close, eviction, timers, reads) still run.
            r = std::future::poll_fn(|cx| out.poll_send(cx)), if writing => match r {
                Err(e) => {
                    tracing::debug!(error = %e, "write failed");
                    return End { own: None, broken: true };
                }
                // tungstenite answered the client's Close: nothing may follow.
                Ok(Sent::Closed) => return End::own(CloseCode::Normal),
                Ok(Sent::Open) => {}
            },
            t = std::future::poll_fn(|cx| match c.busy.as_mut() {
                Some(f) => f.as_mut().poll(cx),
                None => Poll::Pending,
            }), if c.busy.is_some() => {
                c.busy = None;
                c.state = Some(t);
                // As before the merge: the idle timeout counts from the
                // moment the next frame is awaited.
                c.clock.heard_at = Instant::now();
            }
            m = ws.next(), if c.state.is_some() => match c.on_read(m, &mut on_frame) {
                Heard::More => {}
                Heard::End(end) => return end,
                Heard::ClientClose => {
                    Box::pin(flush_close_reply(ws)).await;
                    return End::own(CloseCode::Normal);
                }
            },
            n = w.out_rx.recv_many(&mut batch, MAX_ITEMS), if !writing => {
                if n == 0 {
                    return End::own(CloseCode::Normal);
                }
                writer::queue(out, std::mem::take(&mut batch), c.joining.as_ref());
            }
            // A pong (or the Close reply) tungstenite wrote while reading.
            () = replies, if !writing => out.queue_replies(),
        }
    }
}

/// Records the session's close code (only the first counts: the hub may
/// have set one already) and sends its Close frame (after what a stuck write
/// left, within the grace), while the last command finishes and `on_end`
/// gets the handler's state back (the hub's leave). Boxed by the caller: it
/// runs once, and its state must not stay in the session's future.
pub(super) async fn close<'a, S, T, E>(out: &mut Writing<S>, c: Conn<'a, T>, end: End, on_end: E)
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: FnOnce(T),
{
    let close_tx = c.wires.close_tx;
    if let Some(code) = end.own {
        close_tx.send_if_modified(|c| c.is_none() && c.replace(code).is_none());
    }
    let code = close_tx.borrow().unwrap_or(CloseCode::Normal);
    let send = async {
        if !end.broken {
            writer::send_close(out, code).await;
        }
    };
    let (state, busy) = (c.state, c.busy);
    let finish = async {
        let state = match (state, busy) {
            (Some(s), _) => Some(s),
            (None, Some(f)) => Some(f.await),
            (None, None) => None,
        };
        // Never `None`: the state is either idle or with its command.
        if let Some(s) = state {
            on_end(s);
        }
    };
    tokio::join!(send, finish);
}

/// tungstenite queued the reply to the client's Close; one more read writes
/// it (to `wire`'s buffer, then the socket, with the close) and ends the stream.
async fn flush_close_reply<S>(ws: &mut Reading<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_REPLY_GRACE, ws.next()).await;
}

/// The close code for a failed read: the client broke the rules (RFC 6455
/// §7.4.1 names the code), or `None` when the peer is simply gone.
fn read_error_close(e: &tungstenite::Error) -> Option<CloseCode> {
    use tungstenite::error::ProtocolError as P;
    match e {
        tungstenite::Error::Capacity(_) => Some(CloseCode::TooBig),
        tungstenite::Error::Utf8(_) => Some(CloseCode::InvalidData),
        tungstenite::Error::Protocol(P::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some(CloseCode::ProtocolError),
        _ => None,
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
pub(super) mod tests;
