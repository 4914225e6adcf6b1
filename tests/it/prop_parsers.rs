//! Property tests of the two parsers a client reaches with every frame: the
//! frame parser (`protocol::frames::parse_client`) and the `/command` parser
//! (`session::commands::parse`). Fixed case counts and a fixed seed keep this
//! a few seconds in `cargo test` and the same on every run.
//!
//! Properties: no input panics; every valid frame round-trips through its
//! JSON; every rejection carries a code PROTOCOL.md lists for frames and
//! echoes the frame's `id` only when the client sent one as a string.

use hubbub::protocol::ErrorCode;
use hubbub::protocol::frames::{MAX_ACK_IDS, MAX_CONTENT_CHARS, MAX_PAGE, parse_client};
use hubbub::protocol::{ClientMsg, Cursor, FrameError, PageDir, Status, Username};
use hubbub::session::commands::{self, Command};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Map, Value, json};
use uuid::Uuid;

const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failures are shrunk and printed; no regression files in the tree.
        failure_persistence: None,
        // The same cases on every run (CI included); PROPTEST_RNG_SEED overrides.
        rng_seed: std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(RngSeed::Fixed(0x6875_6262_7562), RngSeed::Fixed),
        ..ProptestConfig::default()
    }
}

/// The codes a frame parse may answer with (PROTOCOL.md, "Error codes").
fn check_rejection(text: &str, e: &FrameError) {
    assert!(
        matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
        "{text:?} -> unexpected code {:?}",
        e.code
    );
    assert!(!e.message.is_empty(), "{text:?} -> empty message");
    // The echoed id is exactly the string id the client sent, if any.
    let sent_id = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
    if let Some(echo) = &e.id {
        assert_eq!(Some(echo), sent_id.as_ref(), "{text:?} echoed a foreign id");
    }
}

/// Parses and checks the rejection invariants; returns the result.
fn parse_checked(text: &str) -> Result<ClientMsg, FrameError> {
    let r = parse_client(text);
    if let Err(e) = &r {
        check_rejection(text, e);
    }
    r
}

// ---------------------------------------------------------------------------
// Generators

/// Any JSON value, nested a few levels, with the field names frames use.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        field_value_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "type", "id", "ids", "content", "target", "active", "status", "before",
            "after", "limit", "req", "room", "sender", "ts",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{0,8}",
    ]
}

/// Strings that are close to what a field expects.
fn field_value_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "chat",
            "private",
            "typing",
            "ack",
            "history",
            "delivered",
            "seen",
            "saved",
            "",
            " ",
            "/shrug",
            "/me",
            "/msg bob hi",
            "/nope",
            "bob",
            "general",
        ])
        .prop_map(str::to_owned),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        any::<(u64, u64)>().prop_map(|(ms, seq)| Cursor { ms, seq }.to_string()),
        "[a-z0-9_]{0,40}",
        "/[a-z]{0,12}( .{0,20})?",
    ]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn username() -> impl Strategy<Value = Username> {
    "[a-z0-9_]{3,32}".prop_map(|s| Username::parse(&s).unwrap())
}

/// Content that survives trimming and fits the limit.
fn content() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.,!?é✨𝄞\"\\\\<>{}]{1,20}( [a-zA-Z0-9_.,!?é✨𝄞\"\\\\<>{}]{1,20}){0,3}"
        .prop_filter("not a command", |s| !s.starts_with('/'))
        .prop_filter("fits", |s| s.chars().count() <= MAX_CONTENT_CHARS)
}

fn page_dir() -> impl Strategy<Value = PageDir> {
    let cursor = any::<(u64, u64)>().prop_map(|(ms, seq)| Cursor { ms, seq });
    prop_oneof![
        Just(PageDir::Latest),
        cursor.clone().prop_map(PageDir::Before),
        cursor.prop_map(PageDir::After),
    ]
}

/// Any frame the parser accepts, as the value it should parse to.
fn valid_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (uuid(), content()).prop_map(|(id, content)| ClientMsg::Chat { id, content }),
        (uuid(), username(), content()).prop_map(|(id, target, content)| ClientMsg::Private {
            id,
            target,
            content
        }),
        any::<bool>().prop_map(|active| ClientMsg::Typing { active }),
        (
            prop_oneof![
                9 => prop::collection::vec(uuid(), 1..8),
                1 => prop::collection::vec(uuid(), MAX_ACK_IDS),
            ],
            prop::bool::ANY.prop_map(|s| if s { Status::Seen } else { Status::Delivered })
        )
            .prop_map(|(ids, status)| ClientMsg::Ack { ids, status }),
        (page_dir(), 1..=MAX_PAGE, prop::option::of("[ -~]{0,20}"))
            .prop_map(|(dir, limit, req)| ClientMsg::History { dir, limit, req }),
        any::<(u64, u64)>().prop_map(|(ms, seq)| ClientMsg::Read {
            cursor: Cursor { ms, seq }
        }),
    ]
}

/// The JSON a client sends for `m` (the inverse of the parser).
fn to_json(m: &ClientMsg) -> Value {
    match m {
        ClientMsg::Chat { id, content } => json!({"type":"chat","id":id,"content":content}),
        ClientMsg::Private {
            id,
            target,
            content,
        } => json!({"type":"private","id":id,"target":target.as_str(),"content":content}),
        ClientMsg::Typing { active } => json!({"type":"typing","active":active}),
        ClientMsg::Ack { ids, status } => json!({"type":"ack","ids":ids,"status":status.as_str()}),
        ClientMsg::History { dir, limit, req } => {
            let mut v = json!({"type":"history","limit":limit});
            match dir {
                PageDir::Latest => {}
                PageDir::Before(c) => v["before"] = json!(c.to_string()),
                PageDir::After(c) => v["after"] = json!(c.to_string()),
            }
            if let Some(r) = req {
                v["req"] = json!(r);
            }
            v
        }
        ClientMsg::Subscribe { room, since } => {
            json!({"type":"subscribe","room":room.as_str(),"since":since})
        }
        ClientMsg::Unsubscribe { room } => json!({"type":"unsubscribe","room":room.as_str()}),
        ClientMsg::Read { cursor } => json!({"type":"read","cursor":cursor.to_string()}),
    }
}

/// One mutation of a valid frame's JSON object.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replace a present field's value with any JSON value.
    Retype(usize, Value),
    /// Drop a present field.
    Remove(usize),
    /// Add (or overwrite) a field.
    Insert(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (field_name(), any_json()).prop_map(|(k, v)| Mutation::Insert(k, v)),
    ]
}

fn apply(mut v: Value, muts: &[Mutation]) -> Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    for m in muts {
        let keys: Vec<String> = obj.keys().cloned().collect();
        match m {
            Mutation::Retype(i, val) if !keys.is_empty() => {
                obj.insert(keys[i % keys.len()].clone(), val.clone());
            }
            Mutation::Remove(i) if !keys.is_empty() => {
                obj.remove(&keys[i % keys.len()]);
            }
            Mutation::Insert(k, val) => {
                obj.insert(k.clone(), val.clone());
            }
            _ => {}
        }
    }
    v
}

/// Byte-level damage to a frame's text: truncation, a flipped byte, an insertion.
fn damage(text: &str, at: usize, byte: u8, how: u8) -> String {
    let mut b = text.as_bytes().to_vec();
    let i = at % (b.len() + 1);
    match how % 3 {
        0 => b.truncate(i),
        1 if i < b.len() => b[i] = byte,
        _ => b.insert(i, byte),
    }
    String::from_utf8_lossy(&b).into_owned()
}

// ---------------------------------------------------------------------------
// Frame parser

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        parse_checked(&s).ok();
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        // A text frame is UTF-8 by the time it reaches the parser (tungstenite
        // checks it); feed what a lossy decode of any bytes gives.
        parse_checked(&String::from_utf8_lossy(&b)).ok();
    }

    #[test]
    fn arbitrary_json_is_parsed_or_rejected_with_a_protocol_code(v in any_json()) {
        let text = v.to_string();
        let r = parse_checked(&text);
        // Independent of the parser: only an object with a known type can pass.
        let known = v.get("type").and_then(Value::as_str).is_some_and(|t| {
            ["chat", "private", "typing", "ack", "history"].contains(&t)
        });
        if !known {
            prop_assert_eq!(r.unwrap_err().code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn valid_frames_round_trip(m in valid_msg(), room in "[a-z]{0,8}", sender in "[a-z]{0,8}") {
        let mut v = to_json(&m);
        // Forged fields are ignored: the session supplies room, sender and time.
        v["room"] = json!(room);
        v["sender"] = json!(sender);
        v["ts"] = json!("2026-01-01T00:00:00.000Z");
        let got = parse_checked(&v.to_string());
        prop_assert_eq!(got, Ok(m));
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        m in valid_msg(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let v = apply(to_json(&m), &muts);
        if let Ok(back) = parse_checked(&v.to_string()) {
            // Whatever passed still round-trips to an equivalent frame.
            prop_assert_eq!(parse_checked(&to_json(&back).to_string()), Ok(back));
        }
    }

    #[test]
    fn damaged_valid_frames_never_panic(
        m in valid_msg(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let mut text = to_json(&m).to_string();
        for (at, byte, how) in edits {
            text = damage(&text, at, byte, how);
        }
        parse_checked(&text).ok();
    }

}

proptest! {
    // Each case parses up to 40 KB three times: fewer cases, same reach.
    #![proptest_config(ProptestConfig { cases: 300, ..config() })]
    #[test]
    fn huge_numbers_and_deep_nesting_are_bad_request(
        depth in 1usize..20_000,
        digits in 20usize..400,
        field in prop::sample::select(vec!["limit", "active", "id", "content", "extra"]),
    ) {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let big = "9".repeat(digits);
        for (text, why) in [
            (format!(r#"{{"type":"history","{field}":{deep}}}"#), "deep"),
            (format!(r#"{{"type":"history","{field}":{big}}}"#), "huge"),
            (format!(r#"{{"type":"history","{field}":-{big}e999}}"#), "huge exponent"),
        ] {
            let r = parse_checked(&text);
            // An unknown field is skipped without recursion (serde_json's
            // IgnoredAny), so any nesting or number there is fine.
            if field != "extra" {
                prop_assert_eq!(r.unwrap_err().code, ErrorCode::BadRequest, "{}", why);
            }
        }
    }
}

/// Found by `arbitrary_json_is_parsed_or_rejected_with_a_protocol_code`:
/// serde's derived structs also accept a JSON array (fields by position), so
/// an 11-element array was a valid `chat` and `["x"]` echoed `x` as the id.
#[test]
fn json_arrays_are_not_frames() {
    let id = Uuid::new_v4().to_string();
    let positional = json!([
        "chat", id, null, "hi", null, null, null, null, null, null, null
    ]);
    for text in [
        positional.to_string(),
        json!([id]).to_string(),
        format!(" \n[\"{id}\"]"),
    ] {
        let e = parse_client(&text).unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None), "{text}");
    }
}

#[test]
fn content_over_the_limit_is_too_large_with_id() {
    let id = Uuid::new_v4().to_string();
    for n in [MAX_CONTENT_CHARS + 1, MAX_CONTENT_CHARS * 2] {
        let text = json!({"type":"chat","id":id,"content":"x".repeat(n)}).to_string();
        let e = parse_client(&text).unwrap_err();
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::TooLarge, Some(&*id)));
    }
}

// ---------------------------------------------------------------------------
// Command parser

/// The outcome rules of PROTOCOL.md's command table, independent of the parser.
fn check_command(input: &str, r: &Result<Command, (ErrorCode, String)>) {
    let body = &input[1..];
    let word = body.split(char::is_whitespace).next().unwrap_or("");
    match r {
        Ok(Command::Chat { content, .. }) => assert!(!content.is_empty(), "{input:?}"),
        Ok(Command::Private { target, content }) => {
            assert!(Username::parse(target.as_str()).is_some());
            assert!(
                !content.is_empty() && content.trim() == content,
                "{input:?}"
            );
        }
        Ok(Command::Who) => assert_eq!(word, "who"),
        Ok(Command::Reply(t)) => assert!(["help", "ping"].contains(&word) && !t.is_empty()),
        Err((code, msg)) => {
            assert!(!msg.is_empty());
            match code {
                ErrorCode::BadRequest => {
                    assert!(["me", "sparkles", "msg"].contains(&word), "{input:?}")
                }
                ErrorCode::UnknownCommand => assert!(
                    !["me", "sparkles", "msg", "who", "help", "ping", "shrug"].contains(&word),
                    "{input:?}"
                ),
                other => panic!("{input:?} -> unexpected code {other:?}"),
            }
        }
    }
}

fn command_word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "shrug",
            "lenny",
            "tableflip",
            "unflip",
            "bear",
            "disapprove",
            "hug",
            "dance",
            "flex",
            "cry",
            "coffee",
            "fix",
            "deploy",
            "sparkles",
            "me",
            "msg",
            "who",
            "help",
            "ping",
            "Shrug",
            "",
            "msg\u{a0}",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_commands_follow_the_table(word in command_word(), rest in any::<String>(), sep in "[ \t\n\u{3000}]{0,3}") {
        // The session passes trimmed content that starts with `/`.
        let input = format!("/{word}{sep}{rest}");
        let input = input.trim();
        if input.starts_with('/') {
            check_command(input, &commands::parse(input));
        }
    }

    #[test]
    fn msg_commands_become_privates(user in username(), text in content()) {
        let r = commands::parse(&format!("/msg {} {text}", user.as_str()));
        prop_assert_eq!(r, Ok(Command::Private { target: user, content: text.trim().to_owned() }));
    }
}
