//! A multi-room connection (`/ws?multi=1`): `subscribe` and `unsubscribe`
//! frames join and leave rooms on one socket.
//!
//! Each subscription is a hub session of its own (own id, one room, the
//! join path a single-room connection takes, `since` and all). Every
//! subscription of the connection shares its one out queue and close signal,
//! and the hub knows them by one connection id: they count once against
//! `max_sessions_per_user`, a new connection with the same client id replaces
//! them all (4001), and a full queue evicts them all (4002). A subscription is
//! joined held (`SessionLink::held`): its frames wait in the hub until its
//! `subscribed` and `history` are queued ahead of them, so the exact-resume
//! order of a single-room join holds per room.

use std::collections::HashMap;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::reader::{Reader, error_frame, fail};
use super::{JoinRequest, SessionCtx, enter, first_page, session_link};
use crate::hub::HubHandle;
use crate::metrics::Out;
use crate::protocol::frames::{ClientFrame, encode};
use crate::protocol::{ClientMsg, CloseCode, ErrorCode, Frame, RoomName, ServerMsg};

/// A multi-room connection's subscriptions: room → its hub session.
pub(super) struct Subs {
    conn: Uuid,
    rooms: HashMap<RoomName, Uuid>,
    close_tx: watch::Sender<Option<CloseCode>>,
}

/// What one frame is answered with, and where it is sent.
struct Conn<'a> {
    ctx: &'a SessionCtx,
    req: &'a JoinRequest,
    out_tx: &'a mpsc::Sender<Vec<Frame>>,
}

impl Conn<'_> {
    fn error(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        fail(self.ctx, self.out_tx, code, error_frame(code, message, id));
    }
}

impl Subs {
    pub(super) fn new(conn: Uuid, close_tx: watch::Sender<Option<CloseCode>>) -> Self {
        Subs {
            conn,
            rooms: HashMap::new(),
            close_tx,
        }
    }

    /// The connection ended: every subscription leaves (each like a closing session).
    pub(super) fn leave_all(&self, hub: &HubHandle) {
        for session in self.rooms.values() {
            hub.leave(*session);
        }
    }

    /// Routes one parsed frame: `subscribe`/`unsubscribe` here, the others to
    /// the subscription of the `room` they name (which they must name).
    pub(super) async fn handle(
        &mut self,
        f: ClientFrame,
        ctx: &SessionCtx,
        req: &JoinRequest,
        out_tx: &mpsc::Sender<Vec<Frame>>,
    ) {
        let c = Conn { ctx, req, out_tx };
        let msg = match f.msg {
            ClientMsg::Subscribe { room, since } => return self.subscribe(&c, room, since).await,
            ClientMsg::Unsubscribe { room } => return self.unsubscribe(&c, room).await,
            msg => msg,
        };
        let id = match &msg {
            ClientMsg::Chat { id, .. } | ClientMsg::Private { id, .. } => Some(id.to_string()),
            _ => None,
        };
        let id = id.as_deref();
        let room = match f
            .room
            .as_ref()
            .map(|r| r.as_str().and_then(RoomName::parse))
        {
            None => {
                let m = "missing field `room` (a multi-room connection names each frame's room)";
                return c.error(ErrorCode::BadRequest, m, id);
            }
            Some(None) => {
                return c.error(ErrorCode::BadRequest, "`room` is not a valid room name", id);
            }
            Some(Some(room)) => room,
        };
        let Some(&session) = self.rooms.get(&room) else {
            let m = format!("not subscribed to room {room}");
            return c.error(ErrorCode::NotSubscribed, &m, id);
        };
        let me = Reader {
            ctx,
            req,
            room: &room,
            session,
            out_tx,
            multi: true,
        };
        me.handle(msg).await
    }

    /// Joins `room` like a single-room connection's join: `subscribed`, then
    /// its `history` (the last 50, or everything visible after `since`), then
    /// its live frames.
    async fn subscribe(&mut self, c: &Conn<'_>, room: RoomName, since: Option<String>) {
        if self.rooms.contains_key(&room) {
            // Idempotent: the subscription stands, its stream goes on unchanged.
            let m = format!("already subscribed to room {room}");
            return c.error(ErrorCode::BadRequest, &m, None);
        }
        if self.rooms.len() >= c.ctx.cfg.max_rooms {
            let m = format!("at most {} rooms per connection", c.ctx.cfg.max_rooms);
            return c.error(ErrorCode::TooManyRooms, &m, None);
        }
        let user = &c.req.identity.username;
        let session = Uuid::new_v4();
        let link = session_link(
            c.req,
            &room,
            (session, self.conn),
            true,
            c.out_tx,
            &self.close_tx,
        );
        // The hub is gone only during shutdown; the connection is about to close.
        let Some(joined) = enter(c.ctx, link).await else {
            return;
        };
        self.rooms.insert(room.clone(), session);
        let (history, resumed) =
            first_page(c.ctx, user, &room, since.as_deref(), joined, true).await;
        let id = session.to_string();
        let subscribed = encode(&ServerMsg::Subscribed {
            room: room.as_str(),
            session: &id,
            resumed,
        });
        c.ctx.metrics.out(Out::System).inc();
        tracing::debug!(room = %room, subscription = %session, "subscribed");
        let _ = c.ctx.hub.release(session, vec![subscribed, history]).await;
    }

    /// Leaves `room`: its others see the leave like a session closing, and
    /// `unsubscribed` is the last frame of that room on this connection.
    async fn unsubscribe(&mut self, c: &Conn<'_>, room: RoomName) {
        let Some(session) = self.rooms.remove(&room) else {
            let m = format!("not subscribed to room {room}");
            return c.error(ErrorCode::NotSubscribed, &m, None);
        };
        let last = encode(&ServerMsg::Unsubscribed {
            room: room.as_str(),
        });
        c.ctx.metrics.out(Out::System).inc();
        tracing::debug!(room = %room, subscription = %session, "unsubscribed");
        // The hub is gone only during shutdown; the connection is about to close.
        let _ = c.ctx.hub.unsubscribe(session, last).await;
    }
}
