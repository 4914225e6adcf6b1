//! `/api/*`: accounts and the HTTP history endpoint.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};

use super::AppState;
use super::guard::too_many;
use super::reply::{
    self, REFRESH_COOKIE, access_token, auth_error, clear_cookies, cookie, set_cookies, user_body,
};
use crate::auth::{AuthError, Identity, Session};
use crate::metrics::AuthResult;
use crate::protocol::ErrorCode;
use crate::protocol::frames::{HistoryPage, page_limit};
use crate::protocol::time::format_ts;
use crate::protocol::{Cursor, PageDir, RoomName, Username};
use crate::storage::{HistoryQuery, StorageState, Want};

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn credentials(body: &Bytes) -> Result<Credentials, Response> {
    serde_json::from_slice(body).map_err(|_| {
        reply::error(
            ErrorCode::BadRequest,
            "expected {\"username\": string, \"password\": string}",
        )
    })
}

/// `{"user": {...}, "access_expires_at": ts}`: browsers cannot read the
/// HttpOnly cookie, so they learn when to refresh from here.
#[derive(Serialize)]
struct UserWithExpiry<'a> {
    #[serde(flatten)]
    user: reply::UserBody<'a>,
    access_expires_at: String,
}

fn session_reply(state: &AppState, status: StatusCode, s: &Session) -> Response {
    let cfg = state.auth.config();
    let body = UserWithExpiry {
        user: user_body(&s.user),
        access_expires_at: format_ts(s.access_expires_ms),
    };
    let mut resp = reply::json(status, &body);
    set_cookies(
        &mut resp,
        &s.access,
        cfg.access_ttl.as_secs(),
        &s.refresh,
        cfg.refresh_ttl.as_secs(),
    );
    resp
}

pub async fn signup(state: AppState, ip: IpAddr, body: Bytes) -> Response {
    if let Err(wait) = state.limits.signups.check(&ip) {
        return too_many(wait);
    }
    let c = match credentials(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.auth.signup(&c.username, &c.password).await {
        Ok(s) => {
            state.sessions.metrics.signups.inc();
            session_reply(&state, StatusCode::CREATED, &s)
        }
        Err(e) => auth_error(e),
    }
}

pub async fn login(state: AppState, ip: IpAddr, body: Bytes) -> Response {
    if let Err(wait) = state.limits.logins.check(&ip) {
        return too_many(wait);
    }
    let c = match credentials(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Per username too, keyed with the address: a guesser is limited, the
    // owner elsewhere still gets in (a higher global per-username limit
    // still slows guessing from many addresses).
    if let Err(wait) = state.limits.check_login_user(&c.username, ip) {
        return too_many(wait);
    }
    match state.auth.login(&c.username, &c.password).await {
        Ok(s) => {
            state.sessions.metrics.login(AuthResult::Ok).inc();
            session_reply(&state, StatusCode::OK, &s)
        }
        Err(e) => {
            state.sessions.metrics.login(AuthResult::Failed).inc();
            auth_error(e)
        }
    }
}

pub async fn refresh(state: AppState, ip: IpAddr, headers: HeaderMap) -> Response {
    // Before any work: each rotation costs an fsync. The token is not spent.
    if let Err(wait) = state.limits.refreshes.check(&ip) {
        return too_many(wait);
    }
    let Some(token) = cookie(&headers, REFRESH_COOKIE) else {
        return reply::error(ErrorCode::Unauthorized, "no refresh token");
    };
    match state.auth.refresh(token).await {
        Ok(s) => {
            state.sessions.metrics.refresh(AuthResult::Ok).inc();
            session_reply(&state, StatusCode::OK, &s)
        }
        Err(e @ (AuthError::Reused { .. } | AuthError::Unauthorized)) => {
            state.sessions.metrics.refresh(AuthResult::Failed).inc();
            if let AuthError::Reused { username, family } = e {
                state.sessions.metrics.refresh_reuse.inc();
                // Someone replayed a spent token: whoever holds this family is logged out everywhere.
                kick_revoked(&state, username, Some(family)).await;
            }
            let mut r = reply::error(
                ErrorCode::Unauthorized,
                "refresh token invalid, spent or revoked",
            );
            clear_cookies(&mut r);
            r
        }
        Err(e) => auth_error(e),
    }
}

/// Closes the sessions that a revocation just made invalid (1008): those
/// opened with `family`, or all of `user`'s when `family` is `None` (account
/// disabled). Their tokens are refused from now on; this ends what is open.
async fn kick_revoked(state: &AppState, user: Username, family: Option<Uuid>) {
    // The hub is gone only during shutdown, which closes every session anyway.
    let _ = state.hub.kick(user, family).await;
}

pub async fn logout(state: AppState, headers: HeaderMap) -> Response {
    match state.auth.logout(cookie(&headers, REFRESH_COOKIE)).await {
        Ok(Some((user, family))) => {
            kick_revoked(&state, user, Some(family)).await;
        }
        Ok(None) => {}
        Err(e) => return auth_error(e),
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    clear_cookies(&mut r);
    r
}

/// The caller's identity, or the `401` to answer with.
pub fn identify(state: &AppState, headers: &HeaderMap) -> Result<Identity, Response> {
    access_token(headers)
        .and_then(|t| state.auth.verify(t))
        .ok_or_else(|| reply::error(ErrorCode::Unauthorized, "log in first"))
}

/// How long a cluster node waits to catch up for a genuine token whose
/// account it does not know yet.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Cluster mode: a genuine, current token whose account or refresh family
/// this node does not know yet (its sign-up or log-in was committed, but not
/// yet applied here: the user was redirected to its home right after
/// signing up elsewhere) waits until this node has caught up with the
/// leader (≤ 1 s). Only a token signed with the cluster's key can wait, so a
/// stranger cannot make a node wait. Afterwards `identify` decides as usual.
pub async fn settle_identity(state: &AppState, headers: &HeaderMap) {
    let Some(c) = &state.cluster else {
        return;
    };
    if identify(state, headers).is_err()
        && access_token(headers).is_some_and(|t| state.auth.genuine(t))
    {
        let _ = c.catch_up(SETTLE).await;
    }
}

pub async fn me(state: AppState, headers: HeaderMap) -> Response {
    let who = match identify(&state, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match state.auth.user(&who.username) {
        Ok(Some(u)) if !u.disabled => {
            let body = UserWithExpiry {
                user: user_body(&u),
                access_expires_at: format_ts(who.exp * 1000),
            };
            reply::json(StatusCode::OK, &body)
        }
        Ok(_) => reply::error(ErrorCode::Unauthorized, "log in first"),
        Err(e) => reply::internal(&e),
    }
}

pub async fn history(
    room: String,
    query: HashMap<String, String>,
    state: AppState,
    headers: HeaderMap,
) -> Response {
    let who = match identify(&state, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(room) = RoomName::parse(&room) else {
        return reply::error(ErrorCode::BadRequest, "invalid room name");
    };
    let dir = match query.get("before").map(|b| Cursor::parse(b)) {
        None => PageDir::Latest,
        Some(Some(c)) => PageDir::Before(c),
        Some(None) => return reply::error(ErrorCode::BadRequest, "invalid cursor"),
    };
    let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
        None => page_limit(None),
        Some(Ok(n)) => page_limit(Some(n)),
        Some(Err(_)) => None,
    };
    let Some(limit) = limit else {
        return reply::error(ErrorCode::BadRequest, "limit must be 1..=100");
    };
    if state.sessions.storage.health().state() == StorageState::Failed {
        // sled may still hold, in memory, a batch it failed to write: not shown.
        return reply::error(ErrorCode::Unavailable, "storage failed; retry later");
    }
    let pending = match state.hub.pending(room.clone()).await {
        Ok(p) => p,
        Err(_) => return reply::error(ErrorCode::Unavailable, "shutting down"),
    };
    let query = HistoryQuery {
        room,
        viewer: who.username,
        want: Want::Page(dir, limit),
        upto: None,
    };
    let metrics = &state.sessions.metrics;
    match state.store.fetch_history(query, pending, metrics).await {
        Ok(f) => reply::json(StatusCode::OK, &HistoryPage::new(&f.page.msgs, f.page.more)),
        Err(e) => reply::internal(&e),
    }
}

/// One room of `GET /api/rooms`.
#[derive(Serialize)]
struct RoomEntry {
    room: String,
    last_cursor: Option<String>,
    read_cursor: Option<String>,
    unread: usize,
    mentions: usize,
}

/// `GET /api/rooms`: the rooms the caller joined, newest activity first,
/// with their read positions and unread and mention counts (capped at
/// `COUNT_CAP`: 100 means "100 or more").
pub async fn rooms(state: AppState, headers: HeaderMap) -> Response {
    let who = match identify(&state, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if state.sessions.storage.health().state() == StorageState::Failed {
        return reply::error(ErrorCode::Unavailable, "storage failed; retry later");
    }
    match state.store.room_list(who.username).await {
        Ok(list) => {
            let rooms: Vec<RoomEntry> = list
                .into_iter()
                .map(|r| RoomEntry {
                    room: r.room.to_string(),
                    last_cursor: r.last_cursor.map(|c| c.to_string()),
                    read_cursor: r.read_cursor.map(|c| c.to_string()),
                    unread: r.unread,
                    mentions: r.mentions,
                })
                .collect();
            reply::json(StatusCode::OK, &serde_json::json!({ "rooms": rooms }))
        }
        Err(e) => reply::internal(&e),
    }
}

/// `/api/admin/*` needs `Authorization: Bearer <--admin-token>`; without a
/// configured token the routes do not exist (404).
pub(super) fn admin_ok(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(reply::error(ErrorCode::NotFound, "no such route"));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token is a password.
    let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(reply::error(
            ErrorCode::Unauthorized,
            "admin token required",
        ))
    }
}

#[derive(Serialize)]
struct AdminUser<'a> {
    username: &'a str,
    id: String,
    disabled: bool,
}

pub async fn admin_users(state: AppState, headers: HeaderMap) -> Response {
    if let Err(r) = admin_ok(&state, &headers) {
        return r;
    }
    match state.auth.users() {
        Ok(users) => {
            let list: Vec<AdminUser> = users
                .iter()
                .map(|u| AdminUser {
                    username: u.username.as_str(),
                    id: u.id.to_string(),
                    disabled: u.disabled,
                })
                .collect();
            reply::json(StatusCode::OK, &serde_json::json!({ "users": list }))
        }
        Err(e) => reply::internal(&e),
    }
}

/// `POST /api/admin/users/{name}/disable|enable`. Disabling closes every
/// session of the user at once (1008) and refuses their tokens from then on.
pub async fn admin_set_disabled(
    name: String,
    action: String,
    state: AppState,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin_ok(&state, &headers) {
        return r;
    }
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return reply::error(ErrorCode::NotFound, "no such route"),
    };
    let Some(user) = crate::protocol::Username::parse(&name) else {
        return reply::error(ErrorCode::BadRequest, "invalid username");
    };
    match state.auth.set_disabled(&user, disabled).await {
        Ok(true) => {
            if disabled {
                kick_revoked(&state, user.clone(), None).await;
            }
            reply::json(
                StatusCode::OK,
                &serde_json::json!({ "username": user.as_str(), "disabled": disabled }),
            )
        }
        Ok(false) => reply::error(ErrorCode::NotFound, "no such user"),
        Err(e) => auth_error(e),
    }
}

/// Compares two secrets in time that depends on their length only.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
