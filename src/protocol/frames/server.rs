//! Server to client: the frames the server sends, each encoded once.

use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use super::{Frame, FrameError};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::message::{Status, StoredMsg};
use crate::protocol::names::Username;
use crate::protocol::time::format_ts;

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
    /// Absent when empty.
    #[serde(skip_serializing_if = "<[Username]>::is_empty")]
    mentions: &'a [Username],
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
            mentions: &m.mentions,
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
        /// Absent on a multi-room connection (`subscribed` names each room).
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        node: &'a str,
        session: &'a str,
        client: &'a str,
        resumed: bool,
        limits: Limits,
    },
    /// A multi-room connection joined `room`; that room's `history` follows.
    Subscribed {
        room: &'a str,
        session: &'a str,
        resumed: bool,
    },
    /// A multi-room connection left `room`: nothing of it follows.
    Unsubscribed {
        room: &'a str,
    },
    History {
        messages: Vec<WireMsg<'a>>,
        more: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<&'a str>,
        /// Multi-room connections only: whose page this is (it may be empty).
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
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
    /// The user's read position in `room` moved (to every connection of theirs).
    Read {
        room: &'a str,
        cursor: String,
        unread: usize,
        mentions: usize,
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
///
/// The result never holds a raw `\n`: compact serde_json puts no whitespace
/// between tokens and escapes every control character inside strings. A
/// `batch=1` connection relies on it (frames joined by `\n`, one per line);
/// the frames tests check it over every frame kind with hostile content.
pub fn encode<T: Serialize>(msg: &T) -> Frame {
    let json = serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}"));
    debug_assert!(!json.contains('\n'), "a raw newline in an encoded frame");
    Frame::from(json)
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
    encode_history_in(page, req, None)
}

/// [`encode_history`] naming its room (multi-room connections).
pub fn encode_history_in(page: HistoryPage<'_>, req: Option<&str>, room: Option<&str>) -> Frame {
    encode(&ServerMsg::History {
        messages: page.messages,
        more: page.more,
        req,
        room,
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
