//! The hostile frame generator: every case carries the answer PROTOCOL.md
//! documents for it, derived from the document, not from the server's parser.

use serde_json::{Value, json};
use uuid::Uuid;

use super::raw::{OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawFrame};
use super::{Case, Expect, Rng};

/// Text cases (the connection stays open) by weight; the rest close it.
const TEXT_CASES: &[(u32, &str)] = &[
    (12, "not_json"),
    (2, "json_array"),
    (10, "truncated"),
    (14, "wrong_type"),
    (6, "huge_number"),
    (3, "deep_nesting"),
    (6, "unknown_type"),
    (6, "missing_field"),
    (8, "bad_value"),
    (2, "too_long"),
    (5, "command_error"),
    (2, "ping_command"),
    (2, "forged_chat"),
    (2, "private_unknown"),
    (3, "typing"),
    (3, "ack"),
    (2, "history"),
    (8, "fragmented"),
    (4, "control_ping"),
    (2, "control_pong"),
];

/// What the generator needs to know about the connection.
pub struct Ctx {
    pub max_frame: usize,
}

pub(super) fn pick_weighted(rng: &mut Rng, table: &[(u32, &'static str)]) -> &'static str {
    let total: u32 = table.iter().map(|(w, _)| w).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for (w, name) in table {
        if x < *w {
            return name;
        }
        x -= w;
    }
    table[0].1
}

pub(super) fn err(code: &'static str, id: Option<&str>) -> Expect {
    Expect::Error {
        code,
        id: id.map(str::to_owned),
    }
}

fn one(class: &'static str, frame: RawFrame, expect: Expect) -> Case {
    Case {
        class,
        frames: vec![frame],
        expect: vec![expect],
    }
}

fn text_case(class: &'static str, text: String, expect: Expect) -> Case {
    one(class, RawFrame::text(text), expect)
}

const MALFORMED: &[&str] = &[
    "not_json",
    "json_array",
    "truncated",
    "huge_number",
    "deep_nesting",
];
const INVALID: &[&str] = &["unknown_type", "missing_field", "too_long", "command_error"];

/// Every class above has an arm; this only keeps the generator total.
fn unreachable_case(class: &'static str) -> Case {
    text_case(class, "{".to_owned(), err("bad_request", None))
}

/// A text case that keeps the connection open.
pub fn text(rng: &mut Rng, ctx: &Ctx) -> Case {
    let class = pick_weighted(rng, TEXT_CASES);
    let id = rng.uuid();
    let ids = id.as_str();
    match class {
        "wrong_type" => wrong_type(rng, ids),
        "bad_value" => bad_value(rng, ids),
        "fragmented" => fragmented(rng, ctx),
        "control_ping" => {
            let n = rng.below(126) as usize;
            let p = rng.bytes(n);
            one(class, RawFrame::new(OP_PING, p.clone()), Expect::Pong(p))
        }
        "control_pong" => one(class, RawFrame::new(OP_PONG, rng.bytes(8)), Expect::Silent),
        c if MALFORMED.contains(&c) => malformed(c, rng, ctx, ids),
        c if INVALID.contains(&c) => invalid(c, rng, ctx, ids),
        c => accepted(c, rng, ids),
    }
}

/// Frames that are not a JSON object, or not one serde can read.
fn malformed(class: &'static str, rng: &mut Rng, ctx: &Ctx, ids: &str) -> Case {
    match class {
        "not_json" => {
            // Anything whose first character is not `{` cannot be an object.
            let first = *rng.pick(&["x", "[", "\"", "1", "nul", "tru", "]", "}", "é", " ,"]);
            let tail = rng.garbage(64);
            text_case(class, format!("{first}{tail}"), err("bad_request", None))
        }
        "json_array" => {
            // A valid chat with its fields by position (serde would take it).
            let v = json!([
                "chat", ids, null, "hi", null, null, null, null, null, null, null
            ]);
            text_case(class, v.to_string(), err("bad_request", None))
        }
        "truncated" => {
            let full = valid_frame(rng, ids).to_string();
            let cut = rng.below(full.len() as u64) as usize;
            let cut = (0..=cut)
                .rev()
                .find(|i| full.is_char_boundary(*i))
                .unwrap_or(0);
            text_case(class, full[..cut].to_owned(), err("bad_request", None))
        }
        "huge_number" => {
            let big = *rng.pick(&[
                "18446744073709551616",
                "-9223372036854775809",
                "1e999",
                "-1e400",
                "123456789012345678901234567890123456789",
                "0.0000000000000000000000000000000000001e-400",
            ]);
            let (text, echo) = match rng.below(4) {
                0 => (format!(r#"{{"type":"history","limit":{big}}}"#), None),
                1 => (format!(r#"{{"type":"typing","active":{big}}}"#), None),
                2 => (
                    format!(r#"{{"type":"chat","id":"{ids}","content":{big}}}"#),
                    Some(ids),
                ),
                _ => (
                    format!(r#"{{"type":"chat","id":{big},"content":"x"}}"#),
                    None,
                ),
            };
            text_case(class, text, err("bad_request", echo))
        }
        "deep_nesting" => {
            // Far past serde_json's depth limit (128), within the frame limit.
            let depth = (ctx.max_frame.saturating_sub(64) / 2).clamp(200, 10_000);
            let (open, close) = if rng.chance(0.5) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let depth = depth * 2 / (open.len() + close.len());
            let body = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let text = match rng.below(3) {
                0 => body,
                1 => format!(r#"{{"type":"chat","content":{body}}}"#),
                _ => open.repeat(depth),
            };
            text_case(class, text, err("bad_request", None))
        }
        _ => unreachable_case(class),
    }
}

/// Well-formed objects the protocol rejects.
fn invalid(class: &'static str, rng: &mut Rng, ctx: &Ctx, ids: &str) -> Case {
    match class {
        "unknown_type" => {
            let t = rng.pick(&["dance", "CHAT", "chat ", "", "welcome", "error", "admin"]);
            text_case(
                class,
                json!({"type": t, "id": ids, "content": "x"}).to_string(),
                err("bad_request", Some(ids)),
            )
        }
        "missing_field" => match rng.below(4) {
            0 => text_case(
                class,
                json!({"type":"chat","id":ids}).to_string(),
                err("bad_request", Some(ids)),
            ),
            1 => text_case(
                class,
                json!({"id":ids,"content":"hi"}).to_string(),
                err("bad_request", Some(ids)),
            ),
            2 => text_case(
                class,
                json!({"type":"typing"}).to_string(),
                err("bad_request", None),
            ),
            _ => text_case(
                class,
                json!({"type":"private","id":ids,"content":"hi"}).to_string(),
                err("bad_request", Some(ids)),
            ),
        },
        "too_long" => {
            // Over 4000 characters, within the frame limit (the smallest is 8 KiB...
            // or less: `x` still fits 4001 in 4.1 KB).
            let fits = |u: &&str| ctx.max_frame.saturating_sub(80) / u.len() > 4001;
            let units: Vec<&str> = ["x", "é", "✨"].into_iter().filter(fits).collect();
            let unit = *rng.pick(if units.is_empty() { &["x"] } else { &units[..] });
            let room = ctx.max_frame.saturating_sub(80) / unit.len();
            let n = (4001 + rng.below(200) as usize).min(room.max(4001));
            text_case(
                class,
                json!({"type":"chat","id":ids,"content":unit.repeat(n)}).to_string(),
                err("too_large", Some(ids)),
            )
        }
        "command_error" => {
            let (content, code) = match rng.below(5) {
                0 => (format!("/zz{}", rng.below(1 << 20)), "unknown_command"),
                1 => ("/Shrug".to_owned(), "unknown_command"),
                2 => ("/me".to_owned(), "bad_request"),
                3 => ("/sparkles    ".to_owned(), "bad_request"),
                _ => ("/msg B@d hi".to_owned(), "bad_request"),
            };
            text_case(
                class,
                json!({"type":"chat","id":ids,"content":content}).to_string(),
                err(code, Some(ids)),
            )
        }
        _ => unreachable_case(class),
    }
}

/// Valid frames: their normal answer (or none).
fn accepted(class: &'static str, rng: &mut Rng, ids: &str) -> Case {
    match class {
        "ping_command" => text_case(
            class,
            json!({"type":"chat","id":ids,"content":" /ping "}).to_string(),
            Expect::System("pong".into()),
        ),
        "forged_chat" => {
            let word = format!("w{}", rng.garbage(12)).replace(char::is_whitespace, "_");
            let (content, want) = if rng.chance(0.3) {
                (format!("/shrug {word}"), format!("{word} ¯\\_(ツ)_/¯"))
            } else {
                (format!("  hello {word}  "), format!("hello {word}"))
            };
            let v = json!({"type":"chat","id":ids,"content":content,
            "room":"admin","sender":"root","ts":"1970-01-01T00:00:00.000Z","action":true});
            text_case(
                class,
                v.to_string(),
                Expect::Echo {
                    id: ids.to_owned(),
                    content: want,
                },
            )
        }
        "private_unknown" => {
            let target = format!("nobody_{}", rng.below(1 << 30));
            text_case(
                class,
                json!({"type":"private","id":ids,"target":target,"content":"psst"}).to_string(),
                err("not_found", Some(ids)),
            )
        }
        "typing" => text_case(
            class,
            json!({"type":"typing","active":rng.chance(0.5)}).to_string(),
            Expect::Silent,
        ),
        "ack" => {
            let n = 1 + rng.below(100) as usize;
            let ids: Vec<String> = (0..n).map(|_| rng.uuid()).collect();
            text_case(
                class,
                json!({"type":"ack","ids":ids,"status":"seen"}).to_string(),
                Expect::Silent,
            )
        }
        "history" => {
            let req = format!("r{}", rng.below(1 << 40));
            text_case(
                class,
                json!({"type":"history","limit":1 + rng.below(100),"req":req}).to_string(),
                Expect::History(req),
            )
        }
        _ => unreachable_case(class),
    }
}

/// A valid frame of any type, as JSON.
fn valid_frame(rng: &mut Rng, id: &str) -> Value {
    match rng.below(5) {
        0 => json!({"type":"chat","id":id,"content":"hello"}),
        1 => json!({"type":"private","id":id,"target":"bob_1","content":"hi"}),
        2 => json!({"type":"typing","active":true}),
        3 => json!({"type":"ack","id":id,"status":"delivered"}),
        _ => json!({"type":"history","limit":10,"req":"r"}),
    }
}

/// One field of a valid frame replaced with a value of the wrong JSON type.
fn wrong_type(rng: &mut Rng, id: &str) -> Case {
    let wrong = |rng: &mut Rng, not: &str| -> Value {
        let all: [(&str, Value); 6] = [
            ("number", json!(42)),
            ("bool", json!(true)),
            ("array", json!(["x", 1])),
            ("object", json!({"a": "b"})),
            ("string", json!("7")),
            ("float", json!(1.5)),
        ];
        loop {
            let (kind, v) = rng.pick(&all).clone();
            if kind != not {
                return v;
            }
        }
    };
    let (mut frame, field, keeps_id) = match rng.below(7) {
        0 => (
            json!({"type":"chat","id":id,"content":"x"}),
            "content",
            true,
        ),
        1 => (json!({"type":"chat","id":id,"content":"x"}), "id", false),
        2 => (json!({"type":"chat","id":id,"content":"x"}), "type", true),
        3 => (json!({"type":"typing","active":true}), "active", false),
        4 => (json!({"type":"history","limit":5}), "limit", false),
        5 => (
            json!({"type":"ack","ids":[id],"status":"seen"}),
            "ids",
            false,
        ),
        _ => (
            json!({"type":"private","id":id,"target":"bob_1","content":"x"}),
            "target",
            true,
        ),
    };
    let expected = match field {
        "active" => "bool",
        "limit" => "number",
        "ids" => "array",
        _ => "string",
    };
    let mut v = wrong(rng, expected);
    if field == "ids" && rng.chance(0.5) {
        v = json!([1, 2, 3]);
    }
    frame[field] = v;
    let echo = keeps_id.then_some(id);
    text_case("wrong_type", frame.to_string(), err("bad_request", echo))
}

/// Right types, wrong values.
fn bad_value(rng: &mut Rng, id: &str) -> Case {
    let c = |v: Value, echo: Option<&str>| {
        text_case("bad_value", v.to_string(), err("bad_request", echo))
    };
    match rng.below(9) {
        0 => c(json!({"type":"chat","id":id,"content":" \t\n "}), Some(id)),
        1 => {
            let bad = format!("not-a-uuid-{}", rng.below(1000));
            text_case(
                "bad_value",
                json!({"type":"chat","id":bad,"content":"x"}).to_string(),
                err("bad_request", Some(&bad)),
            )
        }
        2 => c(
            json!({"type":"private","id":id,"target":"B@d","content":"x"}),
            Some(id),
        ),
        3 => c(
            json!({"type":"history","limit":*rng.pick(&[0, 101, -1])}),
            None,
        ),
        4 => c(
            json!({"type":"history","before":"00","after":"0000000000000000000000000000000a"}),
            None,
        ),
        5 => c(json!({"type":"history","before":"ZZZZ"}), None),
        6 => c(json!({"type":"ack","id":id,"status":"saved"}), Some(id)),
        7 => {
            let many: Vec<String> = (0..101).map(|_| Uuid::nil().to_string()).collect();
            c(json!({"type":"ack","ids":many,"status":"seen"}), None)
        }
        _ => c(json!({"type":"ack","ids":["nope"],"status":"seen"}), None),
    }
}

/// A text case split into 2..=4 fragments, sometimes with a ping between them.
fn fragmented(rng: &mut Rng, ctx: &Ctx) -> Case {
    let mut inner = text(rng, ctx);
    while inner.frames.len() != 1 || inner.frames[0].opcode != OP_TEXT {
        inner = text(rng, ctx);
    }
    let payload = std::mem::take(&mut inner.frames[0].payload);
    let parts = 2 + rng.below(3) as usize;
    let mut cuts: Vec<usize> = (0..parts - 1)
        .map(|_| rng.below(payload.len() as u64 + 1) as usize)
        .collect();
    cuts.sort_unstable();
    let mut frames = Vec::new();
    let mut start = 0;
    for (i, end) in cuts.into_iter().chain([payload.len()]).enumerate() {
        let op = if i == 0 { OP_TEXT } else { OP_CONT };
        frames.push(
            RawFrame::new(op, payload[start..end].to_vec())
                .fin(end == payload.len() && i == parts - 1),
        );
        start = end;
    }
    if rng.chance(0.3) {
        // Control frames may come between fragments (RFC 6455 §5.4).
        let p = rng.bytes(4);
        frames.insert(1, RawFrame::new(OP_PING, p.clone()));
        inner.expect.push(Expect::Pong(p));
    }
    Case {
        class: "fragmented",
        frames,
        expect: inner.expect,
    }
}
