//! One WebSocket connection, one task (`conn`): it reads, runs commands,
//! writes the session queue, pings and closes.
//!
//! Reader order for every frame, cheapest first: rate limit on the raw frame,
//! size check, JSON parse, command parse, then a command to the hub (or to the
//! storage queue for acks). The hub, never the client, supplies sender, room and time.

pub mod commands;
mod conn;
mod linger;
pub mod mentions;
mod reader;
mod subs;
mod wire;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use prometheus::IntGauge;
use tracing::Instrument;

use crate::auth::Identity;
use crate::hub::{HubHandle, Joined, SessionLink};
use crate::metrics::{HistoryKind, Metrics, Out, SessionState, close_label};
use crate::protocol::frames::{HistoryPage, Limits, MAX_CONTENT_CHARS, encode, encode_history_in};
use crate::protocol::{
    ClientId, CloseCode, Cursor, Frame, RoomName, ServerMsg, Username, time::now_ms,
};
use crate::storage::{HistoryQuery, StorageHandle, Store, Want};

/// Messages a resume (`since`) replays at most; `more: true` beyond.
const RESUME_MAX: usize = 1000;
/// Messages a plain join replays.
const JOIN_HISTORY: usize = 50;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub max_frame: usize,
    pub msgs_per_sec: u32,
    pub burst: u32,
    /// Session queue capacity in frames; full → eviction (4002).
    pub queue: usize,
    /// Rooms one multi-room connection may subscribe at once.
    pub max_rooms: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Cluster mode: read positions and first joins are proposed to the
    /// replicated log (`StorageHandle::propose_read`, `propose_member`).
    /// Here, not in `StorageHandle`: every session's task holds its
    /// context by value, and this costs it no bytes.
    pub replicated: bool,
}

/// What every session shares.
#[derive(Clone)]
pub struct SessionCtx {
    pub hub: HubHandle,
    pub store: Store,
    pub storage: StorageHandle,
    pub cfg: Arc<SessionConfig>,
    pub node: Arc<str>,
    /// Cancelled at shutdown: every session closes with 1001.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// Everything the upgrade checked: who, where, and from which cursor.
pub struct JoinRequest {
    pub identity: Identity,
    /// `None`: a multi-room connection (`/ws?multi=1`): it joins rooms with
    /// `subscribe` frames, each a hub session of its own (see `subs`).
    pub room: Option<RoomName>,
    pub client: ClientId,
    pub since: Option<String>,
    /// Cluster mode: served here although this node is not its home.
    pub away: bool,
    /// `batch=1`: the writer may join queued frames into one text frame.
    pub batch: bool,
}

/// Closes an upgraded socket that is not joined after all (cluster mode: a
/// resume this node could not catch up for), with `code` and before any
/// frame, counted like a session's close.
pub async fn refuse<S>(mut io: S, ctx: &SessionCtx, code: CloseCode)
where
    S: AsyncWrite + Unpin,
{
    ctx.metrics.closed(Some(code)).inc();
    let _ = tokio::time::timeout(writer::CLOSE_GRACE, wire::write_close(&mut io, code)).await;
}

/// How a session gets its socket: the upgrade (and in cluster mode the
/// catch-up), boxed so that none of its state stays in the session's task;
/// `None`: no session (the upgrade failed, or the socket was refused and closed).
pub type Opening<S> = Pin<Box<dyn Future<Output = Option<S>> + Send>>;

/// Runs a session to its end. Errors stay here: they are logged, never propagated.
/// Every line it logs carries the session's span (session id, user, room).
/// `keep` (the connection's place under the caps) is held until the socket is dropped.
///
/// A plain fn returning the one async fn's future: tokio allocates a task's
/// future for its largest state and keeps it while the socket is open, and
/// every async layer stores its own copy of its arguments (the socket,
/// request and context: ~0.5 KiB), so there is only one layer.
pub fn run<S, G>(
    opening: Opening<S>,
    ctx: SessionCtx,
    req: JoinRequest,
    keep: G,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let id = Uuid::new_v4();
    let room = req.room.as_ref().map_or("*", RoomName::as_str);
    let span =
        tracing::info_span!("session", session = %id, user = %req.identity.username, room = %room);
    run_inner(opening, ctx, req, id, keep).instrument(span)
}

/// Counts an open session in `hubbub_connections` while it lives.
struct Counted(IntGauge);

impl Counted {
    fn new(g: &IntGauge) -> Self {
        g.inc();
        Counted(g.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn run_inner<S, G>(opening: Opening<S>, ctx: SessionCtx, req: JoinRequest, id: Uuid, keep: G)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let _keep = keep;
    let Some(io) = opening.await else {
        return;
    };
    let _counted = Counted::new(&ctx.metrics.connections);
    // tungstenite reads; we write our frames ourselves (`wire`).
    let (mut stream, mut sink) = wire::split(io, ctx.cfg.max_frame).await;
    // One item per hub turn (a batch of frames), `--session-queue` of them.
    // Full → the hub evicts this session (close 4002) instead of waiting:
    // one slow reader never slows the room. The close itself goes through
    // the `close` watch, not this queue. `Config::validate` requires at
    // least 2; the floor repeats it for a `SessionConfig` built by hand.
    let (out_tx, out_rx) = mpsc::channel::<Vec<Frame>>(ctx.cfg.queue.max(2));
    let (close_tx, close_rx) = watch::channel(None);
    let joining = ctx.metrics.session_state(SessionState::Joining);
    let active = ctx.metrics.session_state(SessionState::Active);
    joining.inc();

    let (preamble, route) = match &req.room {
        Some(room) => {
            // Boxed, like every await that runs once per session: a task's
            // future is allocated for its largest state and kept while the
            // socket is open, so the join and history read (kilobytes of
            // state) must not live inline.
            let preamble = Box::pin(join_single(&ctx, &req, room, id, &out_tx, &close_tx)).await;
            let route = reader::Route::Single {
                room: room.clone(),
                session: id,
            };
            (preamble, route)
        }
        None => {
            let subs = subs::Subs::new(id, close_tx.clone());
            let welcome = welcome(&ctx, &req, None, id, false);
            (vec![welcome], reader::Route::Multi(subs))
        }
    };
    joining.dec();
    active.inc();
    tracing::debug!("joined");
    let wires = conn::Wires {
        out_rx,
        close_rx,
        close_tx: &close_tx,
        shutdown: &ctx.shutdown,
    };
    let timing = conn::Timing {
        ping_every: ctx.cfg.ping_interval,
        idle: ctx.cfg.idle_timeout,
        expires_in: Duration::from_millis(
            req.identity
                .exp
                .saturating_mul(1000)
                .saturating_sub(now_ms()),
        ),
    };
    let batching = req.batch.then(|| writer::Batching::new(&ctx.metrics));
    let mut gate = reader::Gate::new(&ctx.cfg);
    let (ctx, req, out_tx) = (&ctx, &req, &out_tx);
    let mut conn = conn::Conn::new(wires, &timing, batching, route);
    conn.start(&mut sink, preamble);
    let on_frame = |m, route| reader::on_frame(&mut gate, ctx, req, out_tx, m, route);
    let end = conn::run(&mut stream, &mut sink, &mut conn, on_frame).await;
    let leave = |route| match route {
        reader::Route::Single { session, .. } => ctx.hub.leave(session),
        reader::Route::Multi(subs) => subs.leave_all(&ctx.hub),
    };
    // Boxed, like every await that runs once per session.
    Box::pin(conn::close(&mut sink, conn, end, leave)).await;
    active.dec();
    // `None`: the peer went away without a close handshake.
    let code = *close_tx.borrow();
    ctx.metrics.closed(code).inc();
    tracing::debug!(close = %close_label(code), "session ended");
    // Still counted in the connection caps and gauge while it lingers: it is open.
    Box::pin(linger::let_go(sink, stream)).await;
}

/// A single-room connection joins its room; `welcome` and `history` come back.
async fn join_single(
    ctx: &SessionCtx,
    req: &JoinRequest,
    room: &RoomName,
    id: Uuid,
    out_tx: &mpsc::Sender<Vec<Frame>>,
    close_tx: &watch::Sender<Option<CloseCode>>,
) -> Vec<Frame> {
    let user = &req.identity.username;
    let link = session_link(req, room, (id, id), false, out_tx, close_tx);
    match enter(ctx, link).await {
        Some(joined) => {
            let since = req.since.as_deref();
            let (history, resumed) = first_page(ctx, user, room, since, joined, false).await;
            let welcome = welcome(ctx, req, Some(room), id, resumed);
            vec![welcome, history]
        }
        None => {
            close_tx.send_replace(Some(CloseCode::GoingAway));
            Vec::new()
        }
    }
}

/// The hub's view of session `ids.0` of connection `ids.1` in `room`
/// (`held`: a subscription, whose frames wait for `HubHandle::release`).
fn session_link(
    req: &JoinRequest,
    room: &RoomName,
    (id, conn): (Uuid, Uuid),
    held: bool,
    out_tx: &mpsc::Sender<Vec<Frame>>,
    close_tx: &watch::Sender<Option<CloseCode>>,
) -> SessionLink {
    SessionLink {
        id,
        conn,
        user: req.identity.username.clone(),
        client: req.client.clone(),
        room: room.clone(),
        family: req.identity.family,
        away: req.away,
        out_tx: out_tx.clone(),
        close_tx: close_tx.clone(),
        held,
    }
}

/// Records the room among the user's rooms (a private message may then
/// reach them) and joins the hub: a single-room join and a subscription
/// alike. `None`: the hub is gone (shutdown).
async fn enter(ctx: &SessionCtx, link: SessionLink) -> Option<Joined> {
    remember(ctx, &link.room, &link.user);
    ctx.hub.join(link).await.ok()
}

/// Records that `user` joined `room`. Cluster mode: the replicated log is
/// the only writer of the member records, so that every node has the same
/// ones (mentions, privates, receipts and the room list agree everywhere):
/// a first join (this node's records do not have it) is proposed, and
/// recorded on every node when applied, a few ms later; a rejoin costs one
/// local lookup and no proposal. A proposal that is refused or not
/// committed records nothing, and the next join proposes again.
fn remember(ctx: &SessionCtx, room: &RoomName, user: &Username) {
    if !ctx.cfg.replicated {
        if let Err(e) = ctx.store.remember_member(room, user) {
            tracing::error!(error = %e, %room, "could not record room membership");
        }
        return;
    }
    // A failed lookup proposes: recording a member twice is harmless.
    if ctx.store.was_member(room, user).unwrap_or(false) {
        return;
    }
    if let Err(refused) = ctx.storage.propose_member(room.clone(), user.clone()) {
        tracing::warn!(%room, reason = refused.message(),
            "room membership not proposed; the next join proposes again");
    }
}

/// The `welcome` frame; `room` is `None` on a multi-room connection.
fn welcome(
    ctx: &SessionCtx,
    req: &JoinRequest,
    room: Option<&RoomName>,
    id: Uuid,
    resumed: bool,
) -> Frame {
    let session = id.to_string();
    ctx.metrics.out(Out::Welcome).inc();
    encode(&ServerMsg::Welcome {
        user: req.identity.username.as_str(),
        room: room.map(RoomName::as_str),
        node: &ctx.node,
        session: &session,
        client: req.client.as_str(),
        resumed,
        limits: Limits {
            max_frame: ctx.cfg.max_frame,
            max_content: MAX_CONTENT_CHARS,
            msgs_per_sec: ctx.cfg.msgs_per_sec,
            burst: ctx.cfg.burst,
        },
    })
}

/// A join's `history` (the last 50, or everything visible after `since`, up
/// to the join's `head`) and whether `since` was honoured. Goes out before
/// anything queued for the session, so the live stream continues right after
/// `head`. `named`: the frame names its room (multi-room connections).
async fn first_page(
    ctx: &SessionCtx,
    user: &Username,
    room: &RoomName,
    since: Option<&str>,
    joined: Joined,
    named: bool,
) -> (Frame, bool) {
    let timer = ctx.metrics.history(HistoryKind::Join).start_timer();
    let query = HistoryQuery {
        room: room.clone(),
        viewer: user.clone(),
        want: Want::Resume {
            since: since.and_then(Cursor::parse),
            max: RESUME_MAX,
            latest: JOIN_HISTORY,
        },
        upto: Some(joined.head),
    };
    let fetched = ctx
        .store
        .fetch_history(query, joined.pending, &ctx.metrics)
        .await;
    let (page, resumed) = match &fetched {
        Ok(f) => (HistoryPage::new(&f.page.msgs, f.page.more), f.resumed),
        Err(e) => {
            tracing::error!(error = %e, "history read failed on join");
            (HistoryPage::new(&[], false), false)
        }
    };
    let history = encode_history_in(page, None, named.then(|| room.as_str()));
    drop(timer);
    ctx.metrics.out(Out::History).inc();
    (history, resumed)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::future::Future;

    use super::*;

    /// The size of the future `f` returns, without calling it.
    pub(crate) fn future_size<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A session's task lives as long as its socket, and tokio allocates it
    /// for its largest state: the upgrade, join, history read, commands and
    /// linger are boxed, and there is one async layer, so that what stays is
    /// the idle loop. Before, this task was ~11 KiB per connection in a
    /// release build (heaptrack) and several times the bound here (debug
    /// builds lay futures out larger still).
    #[test]
    fn a_sessions_task_keeps_only_its_idle_state() {
        let n = future_size(run::<tokio::io::DuplexStream, ()>);
        eprintln!("session::run future: {n} bytes");
        assert!(n <= SESSION_FUTURE_MAX, "session::run future is {n} bytes");
    }

    /// Generous for a debug build (1624 bytes at the fix); before it, 3488 with the
    /// commands boxed but three async layers, more without.
    pub(crate) const SESSION_FUTURE_MAX: usize = 2048;
}
