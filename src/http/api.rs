//! `/api/*`: accounts and the HTTP history endpoint.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};

use super::AppState;
use super::reply::{
    self, REFRESH_COOKIE, access_token, auth_error, clear_cookies, cookie, set_cookies, user_body,
};
use crate::auth::{Identity, Session};
use crate::error::ErrorCode;
use crate::protocol::frames::page_limit;
use crate::protocol::{Cursor, PageDir, RoomName, WireMsg};

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

fn session_reply(state: &AppState, status: StatusCode, s: &Session) -> Response {
    let cfg = state.auth.config();
    let mut resp = reply::json(status, &user_body(&s.user));
    set_cookies(
        &mut resp,
        &s.access,
        cfg.access_ttl.as_secs(),
        &s.refresh,
        cfg.refresh_ttl.as_secs(),
    );
    resp
}

pub async fn signup(state: AppState, body: Bytes) -> Response {
    let c = match credentials(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.auth.signup(&c.username, &c.password).await {
        Ok(s) => session_reply(&state, StatusCode::CREATED, &s),
        Err(e) => auth_error(e),
    }
}

pub async fn login(state: AppState, body: Bytes) -> Response {
    let c = match credentials(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.auth.login(&c.username, &c.password).await {
        Ok(s) => session_reply(&state, StatusCode::OK, &s),
        Err(e) => auth_error(e),
    }
}

pub async fn refresh(state: AppState, headers: HeaderMap) -> Response {
    let Some(token) = cookie(&headers, REFRESH_COOKIE) else {
        return reply::error(ErrorCode::Unauthorized, "no refresh token");
    };
    match state.auth.refresh(token).await {
        Ok(s) => session_reply(&state, StatusCode::OK, &s),
        Err(crate::auth::AuthError::Unauthorized) => {
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

pub async fn logout(state: AppState, headers: HeaderMap) -> Response {
    if let Err(e) = state.auth.logout(cookie(&headers, REFRESH_COOKIE)).await {
        return auth_error(e);
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

pub async fn me(state: AppState, headers: HeaderMap) -> Response {
    let who = match identify(&state, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match state.auth.user(&who.username) {
        Ok(Some(u)) if !u.disabled => reply::json(StatusCode::OK, &user_body(&u)),
        Ok(_) => reply::error(ErrorCode::Unauthorized, "log in first"),
        Err(e) => reply::internal(&e),
    }
}

#[derive(Serialize)]
struct PageBody<'a> {
    messages: Vec<WireMsg<'a>>,
    more: bool,
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
    let pending = match state.hub.pending(room.clone()).await {
        Ok(p) => p,
        Err(_) => return reply::error(ErrorCode::Unavailable, "shutting down"),
    };
    match state
        .store
        .page(&room, &who.username, dir, limit, None, &pending)
    {
        Ok(page) => reply::json(
            StatusCode::OK,
            &PageBody {
                messages: page.msgs.iter().map(|(m, s)| WireMsg::new(m, *s)).collect(),
                more: page.more,
            },
        ),
        Err(e) => reply::internal(&e),
    }
}
