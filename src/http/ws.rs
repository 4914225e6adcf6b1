//! `GET /ws`: every check happens before the handshake completes (Origin,
//! token, room, client id, upgrade headers); then we answer 101 ourselves so
//! the socket gets a small read buffer (warp::ws() leaves 128 KiB per socket).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Reply;

use super::AppState;
use super::api::identify;
use super::guard::{ConnSlot, acquire, too_many};
use super::reply;
use crate::cluster::ClusterView;
use crate::metrics::Upgrade;
use crate::protocol::{ClientId, CloseCode, ErrorCode, RoomName};
use crate::session::{self, JoinRequest, SessionCtx};

/// Cluster mode: how long a join waits for this node to catch up. A resume
/// (`since`) that could not wait it out is closed with 1001 before
/// `welcome`: the client tries again (another node), and its resume stays
/// exact instead of falling back to the last 50.
const JOIN_CATCH_UP: Duration = Duration::from_secs(3);

pub async fn upgrade(
    ip: IpAddr,
    query: HashMap<String, String>,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    state: AppState,
) -> warp::reply::Response {
    // Cluster mode: redirected here right after signing up elsewhere.
    super::api::settle_identity(&state, &headers).await;
    let (result, resp) = decide(ip, query, headers, on_upgrade, &state);
    state.sessions.metrics.upgrade(result).inc();
    resp
}

/// The upgrade's outcome (`accepted` or the refusal reason, counted) and the response.
fn decide(
    ip: IpAddr,
    query: HashMap<String, String>,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    state: &AppState,
) -> (Upgrade, warp::reply::Response) {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin.to_str().is_ok_and(|o| state.origins.allows(o, host)) {
            return (
                Upgrade::Origin,
                reply::error(ErrorCode::Forbidden, "origin not allowed"),
            );
        }
    }
    if state.cluster.as_ref().is_some_and(|c| !c.is_ready()) {
        return (
            Upgrade::NotServing,
            reply::error(
                ErrorCode::Unavailable,
                "this node is not serving (no cluster majority yet): try another node",
            ),
        );
    }
    // Cheap refusals first: a flood from one address costs a map lookup each.
    if let Err(wait) = state.limits.upgrades.check(&ip) {
        return (Upgrade::Rate, too_many(wait));
    }
    let identity = match identify(state, &headers) {
        Ok(i) => i,
        Err(r) => return (Upgrade::Auth, r),
    };
    let room = match multi_room(&query) {
        Ok(true) => None,
        Ok(false) => match RoomName::parse_or_default(query.get("room").map(String::as_str)) {
            Some(room) => Some(room),
            None => {
                return (
                    Upgrade::Room,
                    reply::error(ErrorCode::BadRequest, "invalid room name"),
                );
            }
        },
        Err(msg) => {
            return (
                Upgrade::BadRequest,
                reply::error(ErrorCode::BadRequest, msg),
            );
        }
    };
    let client = match query.get("client").map(String::as_str) {
        None | Some("") => ClientId::random(),
        Some(c) => match ClientId::parse(c) {
            Some(c) => c,
            None => {
                return (
                    Upgrade::Client,
                    reply::error(ErrorCode::BadRequest, "invalid client id"),
                );
            }
        },
    };
    // `batch=1`: this connection's server frames may be newline-joined (PROTOCOL.md).
    let batch = match query.get("batch").map(String::as_str) {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => {
            return (
                Upgrade::BadRequest,
                reply::error(ErrorCode::BadRequest, "invalid batch (0 or 1)"),
            );
        }
    };
    // Cluster mode: a user is served by its home node (see `cluster::ring`).
    let away = match &state.cluster {
        None => false,
        Some(c) => match super::cluster::place(c, identity.username.as_str(), &query) {
            Ok(away) => away,
            Err(to) => return (Upgrade::Redirect, to),
        },
    };
    let Some(accept) = handshake_key(&headers) else {
        return (
            Upgrade::BadRequest,
            reply::error(ErrorCode::BadRequest, "not a WebSocket upgrade request"),
        );
    };
    let Some(on_upgrade) = on_upgrade else {
        return (
            Upgrade::BadRequest,
            reply::error(ErrorCode::BadRequest, "this connection cannot be upgraded"),
        );
    };
    let slot = match acquire(&state.limits, ip) {
        Ok(s) => s,
        Err(r) => return (Upgrade::Capacity, r),
    };
    let req = JoinRequest {
        identity,
        room,
        client,
        since: query.get("since").cloned(),
        away,
        batch,
    };
    let task = serve_upgraded(
        on_upgrade,
        slot,
        req,
        state.sessions.clone(),
        state.cluster.clone(),
    );
    state.tracker.spawn(task);
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    (Upgrade::Accepted, resp)
}

/// `multi=1`: a multi-room connection, which names no `room` or `since` on
/// the URL (a missing `room` still means `general`: v1 clients rely on it);
/// its `subscribe` frames carry both.
fn multi_room(query: &HashMap<String, String>) -> Result<bool, &'static str> {
    match query.get("multi").map(String::as_str) {
        None | Some("0") => Ok(false),
        Some("1") if query.contains_key("room") || query.contains_key("since") => {
            Err("a multi-room connection (multi=1) takes no room or since: subscribe names them")
        }
        Some("1") => Ok(true),
        Some(_) => Err("invalid multi (0 or 1)"),
    }
}

/// The task of one upgraded connection, from the 101 to the socket's drop:
/// the session, which gets its socket from the boxed [`open`] (so that the
/// upgrade's and a cluster catch-up's state are freed once done, instead of
/// staying in a task that lives as long as the connection).
fn serve_upgraded(
    on_upgrade: OnUpgrade,
    slot: ConnSlot,
    req: JoinRequest,
    ctx: SessionCtx,
    cluster: Option<ClusterView>,
) -> impl Future<Output = ()> + Send {
    let opening = Box::pin(open(on_upgrade, ctx.clone(), cluster, req.since.is_some()));
    // The slot is held for the connection's lifetime: it counts against the caps until it ends.
    session::run(opening, ctx, req, slot)
}

/// The upgraded socket (the session frames it: `session::wire`), or `None`
/// when the upgrade failed or the socket was refused (and closed).
async fn open(
    on_upgrade: OnUpgrade,
    ctx: SessionCtx,
    cluster: Option<ClusterView>,
    resume: bool,
) -> Option<TokioIo<Upgraded>> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    let io = TokioIo::new(upgraded);
    // Cluster mode: a node that is behind first applies what the leader
    // has committed, so `since` from any node is honoured.
    if let Some(c) = &cluster
        && !c.catch_up(JOIN_CATCH_UP).await
        && resume
    {
        tracing::info!("a resume on a node that is not caught up: closed (1001)");
        session::refuse(io, &ctx, CloseCode::GoingAway).await;
        return None;
    }
    Some(io)
}

/// `Sec-WebSocket-Accept` for a valid RFC 6455 upgrade request, else `None`.
fn handshake_key(h: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return None;
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return None;
    }
    h.get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn future_size<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The upgraded connection's task (kept while the socket is open) holds
    /// the session's idle state, not the upgrade's or a catch-up's.
    #[test]
    fn an_upgraded_connections_task_keeps_only_the_sessions_idle_state() {
        let n = future_size(serve_upgraded);
        eprintln!("serve_upgraded future: {n} bytes");
        assert!(
            n <= crate::session::tests::SESSION_FUTURE_MAX + 64,
            "serve_upgraded future is {n} bytes"
        );
    }
}
