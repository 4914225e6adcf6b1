//! The reader half of a session: every frame the client sends, cheapest check first.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

use super::commands::{self, Command};
use super::mentions;
use super::subs::Subs;
use super::{JoinRequest, SessionCtx};
use crate::hub::NewMsg;
use crate::metrics::{HistoryKind, In, Out};
use crate::protocol::ErrorCode;
use crate::protocol::frames::{
    HistoryPage, check_content, encode, encode_error, encode_history_in, encode_retry,
    encode_saved, encode_unavailable, parse_client_frame,
};
use crate::protocol::{
    ClientMsg, CloseCode, Cursor, Frame, FrameError, MsgKind, PageDir, RoomName, ServerMsg,
    Username, time::now_ms,
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

/// Reads until the session ends; returns the close code to send, if the reader chose one.
pub async fn run<R>(
    stream: &mut R,
    ctx: &SessionCtx,
    req: &JoinRequest,
    route: &mut Route,
    out_tx: &mpsc::Sender<Vec<Frame>>,
    mut close_rx: watch::Receiver<Option<CloseCode>>,
) -> Option<CloseCode>
where
    R: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let cfg = &ctx.cfg;
    let quota = Quota::per_second(NonZeroU32::new(cfg.msgs_per_sec).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN));
    let limiter = RateLimiter::direct(quota);
    let clock = DefaultClock::default();
    // While limited, one error frame per limited stretch, not one per dropped frame.
    let mut quiet_until: Option<Instant> = None;
    let expires_in = Duration::from_millis((req.identity.exp * 1000).saturating_sub(now_ms()));
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);

    loop {
        let next = tokio::select! {
            biased;
            _ = close_rx.changed() => return None,
            _ = ctx.shutdown.cancelled() => return Some(CloseCode::GoingAway),
            _ = &mut expiry => return Some(CloseCode::Policy),
            n = tokio::time::timeout(cfg.idle_timeout, stream.next()) => n,
        };
        let msg = match next {
            Err(_) => {
                tracing::debug!("peer silent past the idle timeout");
                return Some(CloseCode::Normal);
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "read failed");
                return read_error_close(&e);
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                count_in(ctx, In::Binary);
                return Some(CloseCode::Unsupported);
            }
            Message::Close(_) => {
                Box::pin(flush_close_reply(stream)).await;
                return Some(CloseCode::Normal);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if let Err(not_until) = limiter.check() {
            ctx.metrics.rate_limited.inc();
            let now = Instant::now();
            if quiet_until.is_none_or(|q| now >= q) {
                let wait = not_until.wait_time_from(clock.now());
                quiet_until = Some(now + wait);
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
            continue;
        }
        if text.len() > cfg.max_frame {
            return Some(CloseCode::TooBig);
        }
        match parse_client_frame(text.as_str()) {
            Ok(f) => {
                count_in(
                    ctx,
                    match &f.msg {
                        ClientMsg::Chat { .. } => In::Chat,
                        ClientMsg::Private { .. } => In::Private,
                        ClientMsg::Typing { .. } => In::Typing,
                        ClientMsg::Ack { .. } => In::Ack,
                        ClientMsg::History { .. } => In::History,
                        ClientMsg::Subscribe { .. } => In::Subscribe,
                        ClientMsg::Unsubscribe { .. } => In::Unsubscribe,
                        ClientMsg::Read { .. } => In::Read,
                    },
                );
                // Boxed: a command's state (history read, storage lookups,
                // hub calls, a subscription's join) is kilobytes, and inline
                // it would be part of every idle session's task for good. One
                // allocation per frame read costs less than its JSON parse.
                match route {
                    // A `room` the client sent is ignored here, as ever.
                    Route::Single { room, session } => {
                        let me = Reader {
                            ctx,
                            req,
                            room,
                            session: *session,
                            out_tx,
                            multi: false,
                        };
                        Box::pin(me.handle(f.msg)).await
                    }
                    Route::Multi(subs) => Box::pin(subs.handle(f, ctx, req, out_tx)).await,
                }
            }
            Err(e) => {
                count_in(ctx, In::Invalid);
                fail(ctx, out_tx, e.code, encode_error(&e));
            }
        }
    }
}

/// How long the reply to a client's Close may take to go out.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(1);

/// tungstenite queued the reply to the client's Close; one more read writes
/// it (and then ends the stream). Without this the reply went out only with
/// the writer's next write, and a writer that was sending at that instant
/// failed ("send after closing") and dropped it: found by the live fuzz.
async fn flush_close_reply<R>(stream: &mut R)
where
    R: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_REPLY_GRACE, stream.next()).await;
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

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::{
        CloseFrame, Role, frame::coding::CloseCode as Code,
    };

    use super::*;

    /// The writer's send fails right after the client's Close was read (the
    /// race the live fuzz hit once in ~420 client closes); the reply must still go out.
    #[tokio::test]
    async fn close_reply_survives_a_failed_writer() {
        let (a, b) = tokio::io::duplex(4096);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let bye = CloseFrame {
            code: Code::from(4000),
            reason: "bye".into(),
        };
        client.send(Message::Close(Some(bye))).await.unwrap();
        let (mut sink, mut stream) = server.split();
        assert!(matches!(stream.next().await, Some(Ok(Message::Close(_)))));
        // The writer, sending at that instant, fails and gives up.
        assert!(sink.send(Message::Text("late".into())).await.is_err());
        drop(sink);
        flush_close_reply(&mut stream).await;
        drop(stream);
        let reply = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
        match reply {
            Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 4000),
            other => panic!("no close reply: {other:?}"),
        }
    }
}
