//! Frames on the wire: parsing what clients send, encoding what the server sends.
//! Parsing is strict about types and lenient about extra fields (`room`,
//! `sender`, `ts` sent by a client are ignored: the session supplies them).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error_code::ErrorCode;
use super::message::{Cursor, Status, StoredMsg};
use super::names::Username;
use super::time::format_ts;

/// An encoded server frame: JSON text, reference-counted so one broadcast is
/// serialized once and shared by every recipient's queue (a clone is a
/// reference-count bump, never a copy). Always valid UTF-8: it is built only
/// from a `String`, so the session writer hands it to the WebSocket library
/// as text without checking it again.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    pub fn as_str(&self) -> &str {
        // Built only from `String`s (see `From<String>`), so always UTF-8;
        // the fallback is never taken and needs no unsafe.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes, shared (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame(Bytes::from(s))
    }
}

impl From<&'static str> for Frame {
    fn from(s: &'static str) -> Self {
        Frame(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

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
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
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
}

/// Second chance after a failed parse: find the `id` to echo in the error.
#[derive(Deserialize)]
struct IdOnly {
    id: Option<serde_json::Value>,
}

/// Parses one text frame. Every failure is a `FrameError` with the code PROTOCOL.md names.
pub fn parse_client(text: &str) -> Result<ClientMsg, FrameError> {
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
    match raw.kind.as_deref() {
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
        Some(other) => Err(bad(&format!("unknown type {:?}", truncate(other, 32)))),
        None => Err(bad("missing field `type`")),
    }
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

// ---------------------------------------------------------------------------
// Server to client

fn is_false(b: &bool) -> bool {
    !*b
}

/// A `chat` or `private` message as clients see it.
#[derive(Serialize)]
pub struct WireMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a Uuid,
    room: &'a str,
    sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    content: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    action: bool,
    ts: String,
    cursor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

impl<'a> WireMsg<'a> {
    /// `status` is set for history (the highest any recipient reached), absent live.
    pub fn new(m: &'a StoredMsg, status: Option<Status>) -> Self {
        WireMsg {
            kind: m.kind.as_str(),
            id: &m.id,
            room: m.room.as_str(),
            sender: m.sender.as_str(),
            target: m.target.as_ref().map(Username::as_str),
            content: &m.content,
            action: m.action,
            ts: format_ts(m.ts_ms),
            cursor: m.cursor.to_string(),
            status: status.map(Status::as_str),
        }
    }
}

/// A page of history as clients see it, oldest first: the body of the HTTP
/// history endpoint, and (with `type` and `req`) of the `history` frame.
#[derive(Serialize)]
pub struct HistoryPage<'a> {
    pub messages: Vec<WireMsg<'a>>,
    pub more: bool,
}

impl<'a> HistoryPage<'a> {
    /// `msgs`: each message with its status (`None`: not on disk yet).
    pub fn new(msgs: &'a [(Arc<StoredMsg>, Option<Status>)], more: bool) -> Self {
        HistoryPage {
            messages: msgs.iter().map(|(m, s)| WireMsg::new(m, *s)).collect(),
            more,
        }
    }
}

#[derive(Serialize)]
pub struct Limits {
    pub max_frame: usize,
    pub max_content: usize,
    pub msgs_per_sec: u32,
    pub burst: u32,
}

/// Every frame the server sends. Serialize with [`encode`].
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Welcome {
        user: &'a str,
        room: &'a str,
        node: &'a str,
        session: &'a str,
        client: &'a str,
        resumed: bool,
        limits: Limits,
    },
    History {
        messages: Vec<WireMsg<'a>>,
        more: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<&'a str>,
    },
    Receipt {
        id: &'a Uuid,
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<&'a str>,
    },
    Typing {
        room: &'a str,
        sender: &'a str,
        active: bool,
    },
    Presence {
        room: &'a str,
        users: Vec<&'a str>,
        count: usize,
    },
    System {
        room: &'a str,
        content: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Serializes a frame once. Our frame types hold only strings, numbers and
/// sequences, for which serde_json cannot fail; the fallback is never taken.
pub fn encode<T: Serialize>(msg: &T) -> Frame {
    Frame::from(serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}")))
}

pub fn encode_message(m: &StoredMsg) -> Frame {
    encode(&WireMsg::new(m, None))
}

pub fn encode_error(e: &FrameError) -> Frame {
    encode(&ServerMsg::Error {
        code: e.code,
        message: &e.message,
        id: e.id.as_deref(),
        retry_after_ms: None,
    })
}

/// The `history` frame: one page, answering `req` if the client sent one.
pub fn encode_history(page: HistoryPage<'_>, req: Option<&str>) -> Frame {
    encode(&ServerMsg::History {
        messages: page.messages,
        more: page.more,
        req,
    })
}

/// The `saved` receipt to a message's sender: it is on disk.
pub fn encode_saved(id: &Uuid) -> Frame {
    encode(&ServerMsg::Receipt {
        id,
        status: Status::Saved.as_str(),
        by: None,
    })
}

/// `unavailable`: the message (its `id`, if any) was not accepted; resend
/// after `retry_after_ms`.
pub fn encode_unavailable(message: &str, id: Option<&str>, retry_after_ms: u64) -> Frame {
    encode_retry(ErrorCode::Unavailable, message, id, retry_after_ms)
}

pub fn encode_retry(
    code: ErrorCode,
    message: &str,
    id: Option<&str>,
    retry_after_ms: u64,
) -> Frame {
    encode(&ServerMsg::Error {
        code,
        message,
        id,
        retry_after_ms: Some(retry_after_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6f0a5e-3c3a-4f1e-9a59-1a2b3c4d5e6f";

    fn err(text: &str) -> FrameError {
        parse_client(text).unwrap_err()
    }

    #[test]
    fn parses_every_client_frame() {
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(
            parse_client(&format!(
                r#"{{"type":"chat","id":"{ID}","content":"  hi  ","room":"x","sender":"eve"}}"#
            )),
            Ok(ClientMsg::Chat {
                id,
                content: "hi".into()
            })
        );
        assert!(matches!(
            parse_client(&format!(
                r#"{{"type":"private","id":"{ID}","target":"bob","content":"psst"}}"#
            )),
            Ok(ClientMsg::Private { .. })
        ));
        assert_eq!(
            parse_client(r#"{"type":"typing","active":true}"#),
            Ok(ClientMsg::Typing { active: true })
        );
        assert_eq!(
            parse_client(&format!(
                r#"{{"type":"ack","ids":["{ID}"],"status":"seen"}}"#
            )),
            Ok(ClientMsg::Ack {
                ids: vec![id],
                status: Status::Seen
            })
        );
        assert_eq!(
            parse_client(r#"{"type":"history","limit":10,"req":"r1"}"#),
            Ok(ClientMsg::History {
                dir: PageDir::Latest,
                limit: 10,
                req: Some("r1".into())
            })
        );
    }

    #[test]
    fn rejects_bad_frames_with_codes() {
        assert_eq!(err("not json").code, ErrorCode::BadRequest);
        assert_eq!(err("[1,2]").code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"type":"dance"}"#).code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"content":"x"}"#).code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"type":"typing"}"#).code, ErrorCode::BadRequest);
        assert_eq!(
            err(r#"{"type":"typing","active":"yes"}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"chat","id":"nope","content":"x"}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"history","limit":0}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"history","limit":101}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"type":"history","before":"zz"}"#).code,
            ErrorCode::BadRequest
        );
        let long = "é".repeat(MAX_CONTENT_CHARS + 1);
        let e = err(&format!(
            r#"{{"type":"chat","id":"{ID}","content":"{long}"}}"#
        ));
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::TooLarge, Some(ID)));
        let e = err(&format!(r#"{{"type":"chat","id":"{ID}","content":"   "}}"#));
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::BadRequest, Some(ID)));
        // A mistyped field still echoes the id.
        let e = err(&format!(r#"{{"type":"chat","id":"{ID}","content":5}}"#));
        assert_eq!(e.id.as_deref(), Some(ID));
        let many: Vec<String> = (0..101).map(|_| format!("\"{ID}\"")).collect();
        assert_eq!(
            err(&format!(
                r#"{{"type":"ack","ids":[{}],"status":"seen"}}"#,
                many.join(",")
            ))
            .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(&format!(r#"{{"type":"ack","id":"{ID}","status":"saved"}}"#)).code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn exactly_4000_chars_is_fine() {
        let ok = "é".repeat(MAX_CONTENT_CHARS);
        assert!(
            parse_client(&format!(
                r#"{{"type":"chat","id":"{ID}","content":"{ok}"}}"#
            ))
            .is_ok()
        );
    }

    #[test]
    fn saved_and_unavailable_frames() {
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(
            encode_saved(&id).as_str(),
            format!(r#"{{"type":"receipt","id":"{ID}","status":"saved"}}"#)
        );
        assert_eq!(
            encode_unavailable("busy", Some(ID), 100).as_str(),
            format!(
                r#"{{"type":"error","code":"unavailable","message":"busy","id":"{ID}","retry_after_ms":100}}"#
            )
        );
    }

    #[test]
    fn a_frame_clone_shares_its_bytes() {
        let f = encode_message(&StoredMsg {
            id: Uuid::parse_str(ID).unwrap(),
            kind: crate::protocol::MsgKind::Chat,
            room: crate::protocol::RoomName::parse("lobby").unwrap(),
            sender: Username::parse("ann").unwrap(),
            target: None,
            content: "hi".into(),
            action: false,
            ts_ms: 0,
            cursor: Cursor::ZERO,
        });
        let g = f.clone();
        assert_eq!(f.as_str().as_ptr(), g.as_str().as_ptr());
        assert_eq!(f.into_bytes().as_ptr(), g.into_bytes().as_ptr());
    }

    #[test]
    fn encodes_error_without_empty_fields() {
        let f = encode_error(&FrameError::new(ErrorCode::BadRequest, "x", None));
        assert_eq!(
            f.as_str(),
            r#"{"type":"error","code":"bad_request","message":"x"}"#
        );
    }
}
