//! The wire's error vocabulary: the `code` of an `error` frame or an HTTP
//! error body, and the HTTP status that carries it (PROTOCOL.md).

use serde::Serialize;

/// A client-facing error code: the `code` of an `error` frame or an HTTP error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing or mistyped field, empty content, invalid name.
    BadRequest,
    /// Content over 4000 characters, or an HTTP body over its limit.
    TooLarge,
    /// Over a rate limit; `retry_after_ms` / `Retry-After` says when to retry.
    RateLimited,
    /// A `/command` the server does not know.
    UnknownCommand,
    /// A private message's target never joined the room; an unknown HTTP route.
    NotFound,
    /// A message id already names another sender's or room's message; a taken username.
    Conflict,
    /// Not allowed for this user, or an Origin outside the allow-list.
    Forbidden,
    /// The storage queue is full, the disk is nearly full, or storage failed:
    /// the message was not accepted (not broadcast); resend later.
    Unavailable,
    /// Missing, invalid or expired credentials.
    Unauthorized,
    /// The HTTP method is not allowed on this route.
    MethodNotAllowed,
    /// A request body did not arrive within `--request-timeout-secs`.
    RequestTimeout,
    /// Something failed inside the server; the details are in its log only.
    Internal,
    /// A multi-room connection's `subscribe` over `--max-rooms-per-connection`.
    TooManyRooms,
    /// A multi-room connection named a room it is not subscribed to.
    NotSubscribed,
}

impl ErrorCode {
    /// Every code, in declaration order (metrics pre-register from it).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::UnknownCommand,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::Internal,
        ErrorCode::TooManyRooms,
        ErrorCode::NotSubscribed,
    ];

    /// Whether an `error` frame may carry this code; the others are HTTP's
    /// only (PROTOCOL.md, "HTTP error codes beyond the frame codes").
    pub fn in_frames(self) -> bool {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::TooLarge
            | ErrorCode::RateLimited
            | ErrorCode::UnknownCommand
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::Forbidden
            | ErrorCode::Unavailable
            | ErrorCode::TooManyRooms
            | ErrorCode::NotSubscribed => true,
            ErrorCode::Unauthorized
            | ErrorCode::MethodNotAllowed
            | ErrorCode::RequestTimeout
            | ErrorCode::Internal => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::NotSubscribed => "not_subscribed",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnknownCommand | ErrorCode::NotSubscribed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::TooManyRooms => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn all_lists_each_code_once() {
        let mut names = ErrorCode::ALL.map(ErrorCode::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        let frames = ErrorCode::ALL.into_iter().filter(|c| c.in_frames()).count();
        assert_eq!(frames, 10);
    }
}
