//! Client to server: the frames a client may send, and their strict parse.

use serde::Deserialize;
use uuid::Uuid;

use crate::protocol::error_code::ErrorCode;
use crate::protocol::message::{Cursor, Status};
use crate::protocol::names::{RoomName, Username};

/// Content limit in Unicode scalar values, after trimming.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// Ack batch limit.
pub const MAX_ACK_IDS: usize = 100;
/// Page limits for `history` and the HTTP history endpoint.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

/// Which page of history a client asked for. Cursors are exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageDir {
    Latest,
    Before(Cursor),
    After(Cursor),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ClientMsg {
    /// A chat line; content may still be a `/command` (the session parses those).
    Chat {
        id: Uuid,
        content: String,
    },
    Private {
        id: Uuid,
        target: Username,
        content: String,
    },
    Typing {
        active: bool,
    },
    Ack {
        ids: Vec<Uuid>,
        status: Status,
    },
    History {
        dir: PageDir,
        limit: usize,
        req: Option<String>,
    },
    /// Multi-room connections: join `room` on this socket, resuming after
    /// `since` (kept as sent: an unknown cursor is not an error, as on `/ws`).
    Subscribe {
        room: RoomName,
        since: Option<String>,
    },
    /// Multi-room connections: leave `room`.
    Unsubscribe {
        room: RoomName,
    },
    /// Moves the user's read position in the room forward to `cursor`.
    Read {
        cursor: Cursor,
    },
}

/// A parsed frame and the `room` it named, as sent. Only a multi-room
/// connection reads `room` (a single-room one ignores it, so it is kept raw:
/// a non-string or invalid one is that connection's error to give, not the parser's).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientFrame {
    pub msg: ClientMsg,
    pub room: Option<serde_json::Value>,
}

/// A frame the client got wrong; answered with an `error` frame, connection kept.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `id` as the client sent it, echoed back.
    pub id: Option<String>,
}

impl FrameError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            id,
        }
    }
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    ids: Option<Vec<String>>,
    content: Option<String>,
    target: Option<String>,
    active: Option<bool>,
    status: Option<String>,
    before: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
    req: Option<String>,
    /// Any JSON: a single-room connection ignores it whatever it is.
    room: Option<serde_json::Value>,
    since: Option<String>,
    cursor: Option<String>,
}

/// Second chance after a failed parse: find the `id` to echo in the error.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<serde_json::Value>,
}

/// Parses one text frame. Every failure is a `FrameError` with the code PROTOCOL.md names.
pub fn parse_client(text: &str) -> Result<ClientMsg, FrameError> {
    parse_client_frame(text).map(|f| f.msg)
}

/// [`parse_client`], keeping the frame's `room` for a multi-room connection.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // serde's derived structs also accept a JSON array (fields by position):
    // a frame is an object, so anything else stops here (JSON whitespace only).
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(FrameError::new(
            ErrorCode::BadRequest,
            "not a JSON object",
            None,
        ));
    }
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
        let id = serde_json::from_str::<IdOnly>(text)
            .ok()
            .and_then(|f| f.id)
            .and_then(|v| v.as_str().map(str::to_owned));
        let what = if e.is_data() {
            "a field has the wrong type"
        } else {
            "not a JSON object"
        };
        FrameError::new(ErrorCode::BadRequest, what, id)
    })?;
    let echo = raw.id.clone();
    let bad = |msg: &str| FrameError::new(ErrorCode::BadRequest, msg, echo.clone());
    let id = || -> Result<Uuid, FrameError> {
        let s = raw.id.as_deref().ok_or_else(|| bad("missing field `id`"))?;
        Uuid::parse_str(s).map_err(|_| bad("`id` must be a UUID"))
    };
    let room = || -> Result<RoomName, FrameError> {
        let r = raw
            .room
            .as_ref()
            .ok_or_else(|| bad("missing field `room`"))?;
        r.as_str()
            .and_then(RoomName::parse)
            .ok_or_else(|| bad("`room` is not a valid room name"))
    };
    let msg = match raw.kind.as_deref() {
        Some("chat") => {
            let id = id()?;
            let content = content(raw.content.as_deref(), &echo)?;
            Ok(ClientMsg::Chat { id, content })
        }
        Some("private") => {
            let id = id()?;
            let target = raw
                .target
                .as_deref()
                .ok_or_else(|| bad("missing field `target`"))?;
            let target =
                Username::parse(target).ok_or_else(|| bad("`target` is not a valid username"))?;
            let content = content(raw.content.as_deref(), &echo)?;
            Ok(ClientMsg::Private {
                id,
                target,
                content,
            })
        }
        Some("typing") => {
            let active = raw.active.ok_or_else(|| bad("missing field `active`"))?;
            Ok(ClientMsg::Typing { active })
        }
        Some("ack") => {
            let status = match raw.status.as_deref() {
                Some("delivered") => Status::Delivered,
                Some("seen") => Status::Seen,
                _ => return Err(bad("`status` must be \"delivered\" or \"seen\"")),
            };
            let mut strs: Vec<String> = raw.ids.clone().unwrap_or_default();
            strs.extend(raw.id.clone());
            if strs.is_empty() {
                return Err(bad("missing field `id` or `ids`"));
            }
            if strs.len() > MAX_ACK_IDS {
                return Err(bad("at most 100 ids per ack"));
            }
            let ids = strs
                .iter()
                .map(|s| Uuid::parse_str(s).map_err(|_| bad("ids must be UUIDs")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClientMsg::Ack { ids, status })
        }
        Some("history") => {
            let cursor = |s: &str| Cursor::parse(s).ok_or_else(|| bad("invalid cursor"));
            let dir = match (raw.before.as_deref(), raw.after.as_deref()) {
                (Some(_), Some(_)) => return Err(bad("give `before` or `after`, not both")),
                (Some(b), None) => PageDir::Before(cursor(b)?),
                (None, Some(a)) => PageDir::After(cursor(a)?),
                (None, None) => PageDir::Latest,
            };
            let limit = page_limit(raw.limit).ok_or_else(|| bad("`limit` must be 1..=100"))?;
            Ok(ClientMsg::History {
                dir,
                limit,
                req: raw.req,
            })
        }
        Some("subscribe") => Ok(ClientMsg::Subscribe {
            room: room()?,
            since: raw.since.clone(),
        }),
        Some("unsubscribe") => Ok(ClientMsg::Unsubscribe { room: room()? }),
        Some("read") => {
            let c = raw
                .cursor
                .as_deref()
                .ok_or_else(|| bad("missing field `cursor`"))?;
            let cursor = Cursor::parse(c).ok_or_else(|| bad("invalid cursor"))?;
            Ok(ClientMsg::Read { cursor })
        }
        Some(other) => Err(bad(&format!("unknown type {:?}", truncate(other, 32)))),
        None => Err(bad("missing field `type`")),
    }?;
    Ok(ClientFrame {
        msg,
        room: raw.room,
    })
}

/// `limit` for a page: absent means the default, otherwise 1..=100.
pub fn page_limit(limit: Option<i64>) -> Option<usize> {
    match limit {
        None => Some(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Some(n as usize),
        Some(_) => None,
    }
}

/// Trims and checks message content.
pub fn content(raw: Option<&str>, echo: &Option<String>) -> Result<String, FrameError> {
    let raw = raw.ok_or_else(|| {
        FrameError::new(
            ErrorCode::BadRequest,
            "missing field `content`",
            echo.clone(),
        )
    })?;
    check_content(raw.trim()).map_err(|(code, msg)| FrameError::new(code, msg, echo.clone()))
}

/// The content rule on its own (also applied after a command rewrote the text).
pub fn check_content(s: &str) -> Result<String, (ErrorCode, &'static str)> {
    if s.is_empty() {
        return Err((ErrorCode::BadRequest, "content is empty"));
    }
    if s.chars().nth(MAX_CONTENT_CHARS).is_some() {
        return Err((ErrorCode::TooLarge, "content is over 4000 characters"));
    }
    Ok(s.to_owned())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
