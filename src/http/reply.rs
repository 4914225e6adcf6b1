//! JSON replies, error bodies and cookies: the one place HTTP errors are shaped.

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::auth::AuthError;
use crate::protocol::ErrorCode;
use crate::protocol::time::format_ts;
use crate::storage::UserRecord;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// `{"error":{"code","message"}}` with the status that carries the code.
pub fn error(code: ErrorCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Inner<'a> {
        code: ErrorCode,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        error: Inner<'a>,
    }
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        status,
        &Body {
            error: Inner { code, message },
        },
    )
}

/// Internal failures are logged here and shown to the client as `internal` only.
pub fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(ErrorCode::Internal, "internal error")
}

pub fn auth_error(e: AuthError) -> Response {
    match e {
        AuthError::Invalid(msg) => error(ErrorCode::BadRequest, msg),
        AuthError::Taken => error(ErrorCode::Conflict, "username is taken"),
        AuthError::Unauthorized | AuthError::Reused { .. } => {
            error(ErrorCode::Unauthorized, "wrong username or password")
        }
        AuthError::Unavailable => error(
            ErrorCode::Unavailable,
            "accounts are unavailable (no cluster majority); retry",
        ),
        AuthError::Internal(e) => internal(&e),
    }
}

#[derive(Serialize)]
pub struct UserView<'a> {
    id: String,
    username: &'a str,
    created_at: String,
}

#[derive(Serialize)]
pub struct UserBody<'a> {
    user: UserView<'a>,
}

pub fn user_body(u: &UserRecord) -> UserBody<'_> {
    UserBody {
        user: UserView {
            id: u.id.to_string(),
            username: u.username.as_str(),
            created_at: format_ts(u.created_ms),
        },
    }
}

pub const ACCESS_COOKIE: &str = "access_token";
pub const REFRESH_COOKIE: &str = "refresh_token";

/// `Set-Cookie` values for both tokens, attributes exactly as PROTOCOL.md says.
pub fn set_cookies(
    resp: &mut Response,
    access: &str,
    access_ttl_s: u64,
    refresh: &str,
    refresh_ttl_s: u64,
) {
    let a = format!(
        "{ACCESS_COOKIE}={access}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={access_ttl_s}"
    );
    let r = format!(
        "{REFRESH_COOKIE}={refresh}; HttpOnly; Secure; SameSite=Strict; Path=/api/auth; Max-Age={refresh_ttl_s}"
    );
    append_cookie(resp, &a);
    append_cookie(resp, &r);
}

pub fn clear_cookies(resp: &mut Response) {
    append_cookie(
        resp,
        &format!("{ACCESS_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0"),
    );
    append_cookie(
        resp,
        &format!("{REFRESH_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/api/auth; Max-Age=0"),
    );
}

fn append_cookie(resp: &mut Response, v: &str) {
    // Token values are hex and JWT base64url: always valid header text.
    if let Ok(v) = HeaderValue::from_str(v) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a warp::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The access token from `Authorization: Bearer` or the `access_token` cookie.
pub fn access_token(headers: &warp::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer.or_else(|| cookie(headers, ACCESS_COOKIE))
}
