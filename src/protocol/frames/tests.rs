use uuid::Uuid;

use super::*;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::message::{Cursor, Status, StoredMsg};
use crate::protocol::names::Username;

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
        mentions: Vec::new(),
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

/// `batch=1` joins frames with `\n`, one JSON object per line: no encoded
/// frame may hold a raw newline, whatever a user typed. Every frame kind,
/// with hostile content in every string a user controls.
#[test]
fn no_frame_kind_ever_holds_a_raw_newline() {
    let hostile = "a\nb\r\nc\u{2028}d\u{2029}e\u{85}f\"\\\u{0}\t}\n{\"type\":\"chat\"}";
    let m = StoredMsg {
        id: Uuid::parse_str(ID).unwrap(),
        kind: crate::protocol::MsgKind::Private,
        room: crate::protocol::RoomName::parse("lobby").unwrap(),
        sender: Username::parse("ann").unwrap(),
        target: Some(Username::parse("bob").unwrap()),
        content: hostile.into(),
        action: true,
        ts_ms: 0,
        cursor: Cursor::ZERO,
        mentions: Vec::new(),
    };
    let msgs = vec![(std::sync::Arc::new(m.clone()), Some(Status::Seen))];
    let id = m.id;
    let frames = vec![
        encode_message(&m),
        encode_history(HistoryPage::new(&msgs, true), Some(hostile)),
        encode_history_in(HistoryPage::new(&msgs, true), None, Some(hostile)),
        encode(&ServerMsg::Subscribed {
            room: hostile,
            session: hostile,
            resumed: true,
        }),
        encode(&ServerMsg::Unsubscribed { room: hostile }),
        encode(&ServerMsg::Welcome {
            user: hostile,
            room: Some(hostile),
            node: hostile,
            session: hostile,
            client: hostile,
            resumed: true,
            limits: Limits {
                max_frame: 1,
                max_content: 1,
                msgs_per_sec: 1,
                burst: 1,
            },
        }),
        encode(&ServerMsg::Receipt {
            id: &id,
            status: "seen",
            by: Some(hostile),
        }),
        encode(&ServerMsg::Typing {
            room: hostile,
            sender: hostile,
            active: true,
        }),
        encode(&ServerMsg::Presence {
            room: hostile,
            users: vec![hostile, hostile],
            count: 2,
        }),
        encode(&ServerMsg::System {
            room: hostile,
            content: hostile,
        }),
        encode_error(&FrameError::new(
            ErrorCode::BadRequest,
            hostile,
            Some(hostile.into()),
        )),
        encode_saved(&id),
        encode_unavailable(hostile, Some(hostile), 5),
        encode_retry(ErrorCode::RateLimited, hostile, Some(hostile), 5),
    ];
    for f in &frames {
        assert!(!f.as_str().contains('\n'), "raw newline in {f:?}");
        // Each line parses back on its own, with the content intact.
        let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
        assert!(v["type"].is_string(), "{f:?}");
    }
    let v: serde_json::Value = serde_json::from_str(frames[0].as_str()).unwrap();
    assert_eq!(v["content"], hostile);
}

#[test]
fn subscribe_frames_parse_and_keep_room() {
    assert_eq!(
        parse_client(r#"{"type":"subscribe","room":"b","since":"x"}"#),
        Ok(ClientMsg::Subscribe {
            room: crate::protocol::RoomName::parse("b").unwrap(),
            since: Some("x".into()),
        })
    );
    assert_eq!(
        parse_client(r#"{"type":"unsubscribe","room":"b"}"#),
        Ok(ClientMsg::Unsubscribe {
            room: crate::protocol::RoomName::parse("b").unwrap(),
        })
    );
    assert_eq!(err(r#"{"type":"subscribe"}"#).code, ErrorCode::BadRequest);
    assert_eq!(
        err(r#"{"type":"subscribe","room":"A B"}"#).code,
        ErrorCode::BadRequest
    );
    // A single-room client's `room` of any type is still no error.
    let f = parse_client_frame(r#"{"type":"typing","active":true,"room":5}"#).unwrap();
    assert_eq!(f.room, Some(serde_json::json!(5)));
}

#[test]
fn read_frames_parse_and_reject_a_bad_cursor() {
    let c = Cursor { ms: 7, seq: 2 };
    assert_eq!(
        parse_client(&format!(r#"{{"type":"read","room":"b","cursor":"{c}"}}"#)),
        Ok(ClientMsg::Read { cursor: c })
    );
    for bad in [
        r#"{"type":"read"}"#,
        r#"{"type":"read","cursor":"zz"}"#,
        r#"{"type":"read","cursor":7}"#,
        r#"{"type":"read","cursor":"0000000000000000000000000000000A"}"#,
    ] {
        assert_eq!(err(bad).code, ErrorCode::BadRequest, "{bad}");
    }
}

#[test]
fn mentions_show_on_the_wire_only_when_there_are_some() {
    let mut m = StoredMsg {
        id: Uuid::parse_str(ID).unwrap(),
        kind: crate::protocol::MsgKind::Chat,
        room: crate::protocol::RoomName::parse("r").unwrap(),
        sender: Username::parse("ann").unwrap(),
        target: None,
        content: "hi @bob".into(),
        action: false,
        ts_ms: 0,
        cursor: Cursor::ZERO,
        mentions: Vec::new(),
    };
    let v: serde_json::Value = serde_json::from_str(encode_message(&m).as_str()).unwrap();
    assert!(v.get("mentions").is_none(), "{v}");
    m.mentions = vec![Username::parse("bob").unwrap()];
    let v: serde_json::Value = serde_json::from_str(encode_message(&m).as_str()).unwrap();
    assert_eq!(v["mentions"], serde_json::json!(["bob"]));
    let f = encode(&ServerMsg::Read {
        room: "r",
        cursor: Cursor::ZERO.to_string(),
        unread: 3,
        mentions: 1,
    });
    let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"read","room":"r","cursor":"0".repeat(32),"unread":3,"mentions":1})
    );
}
