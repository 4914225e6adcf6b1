//! Client frames on the wire, from `hubbub::protocol`'s own [`ClientMsg`]: the
//! client sends exactly the frames the server's parser accepts, and a new
//! variant on the server side does not compile here until it is encoded.

use hubbub::protocol::{ClientMsg, PageDir};
use serde::Serialize;
use uuid::Uuid;

/// The JSON shape of each [`ClientMsg`] (PROTOCOL.md, "Client → server").
/// The server's type is parse-only (it reads frames leniently through a raw
/// struct), so the client keeps this serialize-only mirror next to it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire<'a> {
    Chat {
        id: &'a Uuid,
        content: &'a str,
    },
    Private {
        id: &'a Uuid,
        target: &'a str,
        content: &'a str,
    },
    Typing {
        active: bool,
    },
    Ack {
        ids: &'a [Uuid],
        status: &'static str,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        limit: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: Option<&'a str>,
    },
    Subscribe {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<&'a str>,
    },
    Unsubscribe {
        room: &'a str,
    },
    Read {
        cursor: String,
    },
}

impl<'a> From<&'a ClientMsg> for Wire<'a> {
    fn from(m: &'a ClientMsg) -> Self {
        match m {
            ClientMsg::Chat { id, content } => Wire::Chat { id, content },
            ClientMsg::Private {
                id,
                target,
                content,
            } => Wire::Private {
                id,
                target: target.as_str(),
                content,
            },
            ClientMsg::Typing { active } => Wire::Typing { active: *active },
            ClientMsg::Ack { ids, status } => Wire::Ack {
                ids,
                status: status.as_str(),
            },
            ClientMsg::History { dir, limit, req } => {
                let (before, after) = match dir {
                    PageDir::Latest => (None, None),
                    PageDir::Before(c) => (Some(c.to_string()), None),
                    PageDir::After(c) => (None, Some(c.to_string())),
                };
                Wire::History {
                    before,
                    after,
                    limit: *limit,
                    req: req.as_deref(),
                }
            }
            ClientMsg::Subscribe { room, since } => Wire::Subscribe {
                room: room.as_str(),
                since: since.as_deref(),
            },
            ClientMsg::Unsubscribe { room } => Wire::Unsubscribe {
                room: room.as_str(),
            },
            ClientMsg::Read { cursor } => Wire::Read {
                cursor: cursor.to_string(),
            },
        }
    }
}

/// The text of `msg` on a multi-room connection: the frame names `room`.
pub fn encode_in(msg: &ClientMsg, room: &str) -> String {
    let mut v = serde_json::to_value(Wire::from(msg)).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("room".into(), room.into());
    }
    v.to_string()
}

/// The text of one frame. `Wire` holds only strings, numbers, booleans and
/// sequences of them, for which serde_json cannot fail; the fallback is never taken.
pub fn encode(msg: &ClientMsg) -> String {
    serde_json::to_string(&Wire::from(msg)).unwrap_or_else(|_| String::from("{}"))
}

/// A chat line with a fresh id; returns the id too (receipts and the echo carry it).
pub fn chat(content: impl Into<String>) -> (Uuid, ClientMsg) {
    let id = Uuid::new_v4();
    let content = content.into();
    (id, ClientMsg::Chat { id, content })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use hubbub::protocol::frames::parse_client;
    use hubbub::protocol::{Cursor, RoomName, Status, Username};

    /// Every frame the client encodes is the frame the server parses.
    #[test]
    fn every_client_frame_round_trips_through_the_servers_parser() {
        let id = Uuid::new_v4();
        let c = Cursor {
            ms: 1_795_852_800_123,
            seq: 7,
        };
        let msgs = [
            ClientMsg::Chat {
                id,
                content: "hi \"there\" \u{1F600}".into(),
            },
            ClientMsg::Private {
                id,
                target: Username::parse("bob_2").unwrap(),
                content: "psst".into(),
            },
            ClientMsg::Typing { active: true },
            ClientMsg::Typing { active: false },
            ClientMsg::Subscribe {
                room: RoomName::parse("r-1").unwrap(),
                since: Some(c.to_string()),
            },
            ClientMsg::Subscribe {
                room: RoomName::parse("r2").unwrap(),
                since: None,
            },
            ClientMsg::Unsubscribe {
                room: RoomName::parse("r2").unwrap(),
            },
            ClientMsg::Read { cursor: c },
            ClientMsg::Read {
                cursor: Cursor::ZERO,
            },
            ClientMsg::Ack {
                ids: vec![id, Uuid::new_v4()],
                status: Status::Delivered,
            },
            ClientMsg::Ack {
                ids: vec![id],
                status: Status::Seen,
            },
            ClientMsg::History {
                dir: PageDir::Latest,
                limit: 50,
                req: None,
            },
            ClientMsg::History {
                dir: PageDir::Before(c),
                limit: 1,
                req: Some("r1".into()),
            },
            ClientMsg::History {
                dir: PageDir::After(c),
                limit: 100,
                req: None,
            },
        ];
        for m in msgs {
            let text = encode(&m);
            assert_eq!(parse_client(&text), Ok(m), "{text}");
        }
    }

    #[test]
    fn chat_gets_a_fresh_id() {
        let (a, ma) = chat("x");
        let (b, _) = chat("x");
        assert_ne!(a, b);
        assert_eq!(
            ma,
            ClientMsg::Chat {
                id: a,
                content: "x".into()
            }
        );
    }
}
