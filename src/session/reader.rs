//! The reader half of a session: every frame the client sends, cheapest check first.

use std::num::NonZeroU32;
use std::time::Instant;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::commands::{self, Command};
use super::conn::Step;
use super::mentions;
use super::subs::Subs;
use super::{JoinRequest, SessionConfig, SessionCtx};
use crate::hub::NewMsg;
use crate::metrics::{HistoryKind, In, Out};
use crate::protocol::ErrorCode;
use crate::protocol::frames::{
    HistoryPage, check_content, encode, encode_error, encode_history_in, encode_retry,
    encode_saved, encode_unavailable, parse_client_frame,
};
use crate::protocol::{
    ClientMsg, CloseCode, Cursor, Frame, FrameError, MsgKind, PageDir, RoomName, ServerMsg,
    Username,
};
use crate::storage::{HistoryQuery, IdUse, Refused, StorageState, Want};

/// What `unavailable` tells a client to wait after a failed read of the id
/// index or a history page (the write-ahead queue's refusals carry their own).
const READ_RETRY_MS: u64 = 100;

/// One frame's handling: the connection's parts and the room (hub session) it is for.
pub(super) struct Reader<'a> {
    pub ctx: &'a SessionCtx,
    pub req: &'a JoinRequest,
    pub room: &'a RoomName,
    pub session: Uuid,
    pub out_tx: &'a mpsc::Sender<Vec<Frame>>,
    /// A multi-room connection: `history` replies name their room.
    pub multi: bool,
}

/// Where a connection's frames go: its one room, or (multi-room) the room each names.
pub(super) enum Route {
    Single { room: RoomName, session: Uuid },
    Multi(Subs),
}

/// The first checks on every client frame: the rate limit, one error
/// frame per limited stretch, the size.
pub(super) struct Gate {
    limiter: DefaultDirectRateLimiter,
    /// While limited, one error frame per limited stretch, not one per dropped frame.
    quiet_until: Option<Instant>,
}

impl Gate {
    pub(super) fn new(cfg: &SessionConfig) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(cfg.msgs_per_sec).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN));
        Gate {
            limiter: RateLimiter::direct(quota),
            quiet_until: None,
        }
    }
}

/// One text or binary frame the client sent, cheapest check first: rate
/// limit, size, JSON and command parse; then its command, to run (boxed:
/// a command's state, a history read, storage lookups, hub calls, a
/// subscription's join, is kilobytes, and inline it would be part of every
/// idle session's task for good; one allocation per frame read costs less
/// than its JSON parse). The command gets the route and gives it back.
pub(super) fn on_frame<'a>(
    gate: &mut Gate,
    ctx: &'a SessionCtx,
    req: &'a JoinRequest,
    out_tx: &'a mpsc::Sender<Vec<Frame>>,
    msg: Message,
    route: Route,
) -> Step<'a, Route> {
    let text = match msg {
        Message::Text(t) => t,
        _ => {
            count_in(ctx, In::Binary);
            return Step::Close(CloseCode::Unsupported, route);
        }
    };
    if let Err(not_until) = gate.limiter.check() {
        ctx.metrics.rate_limited.inc();
        let now = Instant::now();
        if gate.quiet_until.is_none_or(|q| now >= q) {
            let wait = not_until.wait_time_from(gate.limiter.clock().now());
            gate.quiet_until = Some(now + wait);
            fail(
                ctx,
                out_tx,
                ErrorCode::RateLimited,
                encode_retry(
                    ErrorCode::RateLimited,
                    "slow down",
                    None,
                    wait.as_millis().max(1) as u64,
                ),
            );
        }
        return Step::Next(route);
    }
    if text.len() > ctx.cfg.max_frame {
        return Step::Close(CloseCode::TooBig, route);
    }
    let f = match parse_client_frame(text.as_str()) {
        Ok(f) => f,
        Err(e) => {
            count_in(ctx, In::Invalid);
            fail(ctx, out_tx, e.code, encode_error(&e));
            return Step::Next(route);
        }
    };
    count_in(ctx, in_kind(&f.msg));
    Step::Run(match route {
        // A `room` the client sent is ignored here, as ever.
        Route::Single { room, session } => Box::pin(async move {
            let me = Reader {
                ctx,
                req,
                room: &room,
                session,
                out_tx,
                multi: false,
            };
            me.handle(f.msg).await;
            Route::Single { room, session }
        }),
        Route::Multi(mut subs) => Box::pin(async move {
            subs.handle(f, ctx, req, out_tx).await;
            Route::Multi(subs)
        }),
    })
}

fn in_kind(m: &ClientMsg) -> In {
    match m {
        ClientMsg::Chat { .. } => In::Chat,
        ClientMsg::Private { .. } => In::Private,
        ClientMsg::Typing { .. } => In::Typing,
        ClientMsg::Ack { .. } => In::Ack,
        ClientMsg::History { .. } => In::History,
        ClientMsg::Subscribe { .. } => In::Subscribe,
        ClientMsg::Unsubscribe { .. } => In::Unsubscribe,
        ClientMsg::Read { .. } => In::Read,
    }
}

/// Queues a reply to this connection only. A full queue drops it: the hub
/// evicts this connection on its next delivery anyway.
pub(super) fn push(ctx: &SessionCtx, out_tx: &mpsc::Sender<Vec<Frame>>, f: Frame, kind: Out) {
    ctx.metrics.out(kind).inc();
    let _ = out_tx.try_send(vec![f]);
}

/// Queues an error frame, counted by code.
pub(super) fn fail(ctx: &SessionCtx, out_tx: &mpsc::Sender<Vec<Frame>>, code: ErrorCode, f: Frame) {
    ctx.metrics.error_sent(code).inc();
    push(ctx, out_tx, f, Out::Error);
}

/// An `error` frame with `code`, echoing the frame's `id` if it had one.
pub(super) fn error_frame(code: ErrorCode, message: &str, id: Option<&str>) -> Frame {
    encode_error(&FrameError {
        code,
        message: message.to_owned(),
        id: id.map(str::to_owned),
    })
}

fn count_in(ctx: &SessionCtx, kind: In) {
    ctx.metrics.frame_in(kind).inc();
}

impl Reader<'_> {
    fn push(&self, f: Frame, kind: Out) {
        push(self.ctx, self.out_tx, f, kind)
    }

    fn fail(&self, code: ErrorCode, f: Frame) {
        fail(self.ctx, self.out_tx, code, f)
    }

    fn error(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        self.fail(code, error_frame(code, message, id));
    }

    pub(super) async fn handle(&self, m: ClientMsg) {
        match m {
            ClientMsg::Chat { id, content } if content.starts_with('/') => {
                self.command(id, &content).await
            }
            ClientMsg::Chat { id, content } => {
                self.send(id, MsgKind::Chat, None, content, false).await
            }
            ClientMsg::Private {
                id,
                target,
                content,
            } => {
                self.send(id, MsgKind::Private, Some(target), content, false)
                    .await
            }
            ClientMsg::Typing { active } => {
                // The hub is gone only during shutdown; the session is about to close.
                let _ = self.ctx.hub.typing(self.session, active).await;
            }
            ClientMsg::Ack { ids, status } => {
                let by = self.req.identity.username.clone();
                if let Err(refused) = self.ctx.storage.ack(by, ids, status) {
                    self.fail(ErrorCode::Unavailable, refused.frame(None));
                }
            }
            ClientMsg::History { dir, limit, req } => self.history(dir, limit, req).await,
            ClientMsg::Read { cursor } => self.read(cursor).await,
            // A multi-room connection's `subs` takes these before they get here.
            ClientMsg::Subscribe { .. } | ClientMsg::Unsubscribe { .. } => self.error(
                ErrorCode::BadRequest,
                "subscribe and unsubscribe need a multi-room connection (/ws?multi=1)",
                None,
            ),
        }
    }

    async fn command(&self, id: Uuid, content: &str) {
        let id_text = id.to_string();
        match commands::parse(content) {
            Ok(Command::Chat { content, action }) => match check_content(&content) {
                Ok(content) => self.send(id, MsgKind::Chat, None, content, action).await,
                Err((code, msg)) => self.error(code, msg, Some(&id_text)),
            },
            Ok(Command::Private { target, content }) => {
                self.send(id, MsgKind::Private, Some(target), content, false)
                    .await
            }
            Ok(Command::Who) => {
                let _ = self.ctx.hub.who(self.session).await;
            }
            Ok(Command::Reply(text)) => self.push(
                encode(&ServerMsg::System {
                    room: self.room.as_str(),
                    content: &text,
                }),
                Out::System,
            ),
            Err((code, msg)) => self.error(code, &msg, Some(&id_text)),
        }
    }

    /// A chat or private message. Ids already on disk are answered here
    /// (idempotent resend or conflict); newer ones are checked by the hub.
    async fn send(
        &self,
        id: Uuid,
        kind: MsgKind,
        target: Option<crate::protocol::Username>,
        content: String,
        action: bool,
    ) {
        let (user, room) = (&self.req.identity.username, self.room);
        let id_text = id.to_string();
        if self.ctx.storage.health().state() == StorageState::Failed {
            // sled fails every read now too: answer without a lookup (and a log line) per message.
            return self.fail(
                ErrorCode::Unavailable,
                Refused::Failed.frame(Some(&id_text)),
            );
        }
        match self.ctx.store.classify_id(&id, user, room) {
            Ok(IdUse::Resend) => return self.push(encode_saved(&id), Out::Receipt),
            Ok(IdUse::Conflict) => {
                return self.error(
                    ErrorCode::Conflict,
                    "this id names another message",
                    Some(&id_text),
                );
            }
            Ok(IdUse::Fresh) => {}
            Err(e) => {
                tracing::error!(error = %e, "id index lookup failed");
                let f = encode_unavailable(
                    "storage error; resend later",
                    Some(&id_text),
                    READ_RETRY_MS,
                );
                return self.fail(ErrorCode::Unavailable, f);
            }
        }
        let target_known = match &target {
            Some(t) => self.ctx.store.was_member(room, t).unwrap_or(false),
            None => false,
        };
        let mentions = match kind {
            MsgKind::Chat => self.mentions(&content),
            MsgKind::Private => Vec::new(),
        };
        let msg = NewMsg {
            id,
            kind,
            target,
            content,
            action,
            target_known,
            mentions,
        };
        // The hub is gone only during shutdown; the session is about to close.
        let _ = self.ctx.hub.post(self.session, msg).await;
    }

    /// The room members `content` mentions, the sender left out: one member
    /// lookup per candidate (at most `MAX_MENTIONS`). A failed lookup makes
    /// that name plain text: a mention is not worth refusing a message over.
    fn mentions(&self, content: &str) -> Vec<Username> {
        let me = &self.req.identity.username;
        mentions::candidates(content)
            .into_iter()
            .filter(|u| u != me && self.ctx.store.was_member(self.room, u).unwrap_or(false))
            .collect()
    }

    /// A `read` frame: the position moves forward only; a move reaches every
    /// connection of the user as a `read` frame with the counts after it.
    /// Cluster mode: proposed to the replicated log like an ack; every node
    /// applies it, and the hub of the node with the user's connections sends
    /// the frame once it is applied there (`StorageEvent::ReadMoved`).
    async fn read(&self, cursor: Cursor) {
        let user = self.req.identity.username.clone();
        let ctx = self.ctx;
        if ctx.cfg.replicated {
            if let Err(refused) = ctx.storage.propose_read(user, self.room.clone(), cursor) {
                self.fail(ErrorCode::Unavailable, refused.frame(None));
            }
            return;
        }
        match ctx
            .store
            .mark_read(user.clone(), self.room.clone(), cursor)
            .await
        {
            // At or before the current position: ignored, like a receipt that does not move.
            Ok(None) => {}
            Ok(Some(r)) => {
                let f = encode(&ServerMsg::Read {
                    room: r.room.as_str(),
                    cursor: cursor.to_string(),
                    unread: r.unread,
                    mentions: r.mentions,
                });
                // The hub is gone only during shutdown; the session is about to close.
                let _ = ctx.hub.to_user(user, f, Out::Read).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "read position update failed");
                let f = encode_unavailable("storage error; retry", None, READ_RETRY_MS);
                self.fail(ErrorCode::Unavailable, f);
            }
        }
    }

    async fn history(&self, dir: PageDir, limit: usize, req: Option<String>) {
        let _timer = self.ctx.metrics.history(HistoryKind::Page).start_timer();
        let room = self.room.clone();
        let pending = self.ctx.hub.pending(room.clone()).await.unwrap_or_default();
        let query = HistoryQuery {
            room,
            viewer: self.req.identity.username.clone(),
            want: Want::Page(dir, limit),
            upto: None,
        };
        let ctx = self.ctx;
        match ctx.store.fetch_history(query, pending, &ctx.metrics).await {
            Ok(f) => self.push(
                encode_history_in(
                    HistoryPage::new(&f.page.msgs, f.page.more),
                    req.as_deref(),
                    self.multi.then(|| self.room.as_str()),
                ),
                Out::History,
            ),
            Err(e) => {
                tracing::error!(error = %e, "history read failed");
                let f = encode_unavailable("storage error; retry", None, READ_RETRY_MS);
                self.fail(ErrorCode::Unavailable, f);
            }
        }
    }
}
