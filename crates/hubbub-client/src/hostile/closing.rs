//! Cases after which the server must close the connection, each with the
//! close code PROTOCOL.md documents (1002, 1003, 1007, 1009, or the client's own).

use serde_json::json;

use super::cases::{Ctx, pick_weighted};
use super::raw::{OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, RawFrame};
use super::{Case, Expect, Rng};

/// Cases that close the connection, by weight.
const CLOSE_CASES: &[(u32, &str)] = &[
    (3, "binary"),
    (4, "invalid_utf8"),
    (3, "oversize"),
    (6, "bad_framing"),
    (2, "client_close"),
];

/// A case after which the server must close with the documented code.
pub fn closing(rng: &mut Rng, ctx: &Ctx) -> Case {
    let class = pick_weighted(rng, CLOSE_CASES);
    let (frames, code) = match class {
        "binary" => {
            let n = rng.below(64) as usize;
            (vec![RawFrame::new(OP_BINARY, rng.bytes(n))], 1003)
        }
        "invalid_utf8" => (invalid_utf8(rng), 1007),
        "oversize" => (oversize(rng, ctx), 1009),
        "bad_framing" => (bad_framing(rng), 1002),
        _ => client_close(rng),
    };
    Case {
        class,
        frames,
        expect: vec![Expect::Close(code)],
    }
}

/// A chat whose content holds a broken UTF-8 sequence, sometimes split over two fragments.
fn invalid_utf8(rng: &mut Rng) -> Vec<RawFrame> {
    let bad: &[u8] = rng.pick::<&[u8]>(&[
        &b"\xff"[..],
        &b"\xc0\xaf"[..],
        &b"\xed\xa0\x80"[..],
        &b"\xe2\x82"[..],
        &b"\xf8\x88\x80\x80\x80"[..],
    ]);
    let mut p = br#"{"type":"chat","content":""#.to_vec();
    let mid = p.len() + 1;
    p.extend_from_slice(bad);
    p.extend_from_slice(br#""}"#);
    if rng.chance(0.3) {
        // The cut falls after the sequence's first byte.
        vec![
            RawFrame::text(p[..mid].to_vec()).fin(false),
            RawFrame::new(OP_CONT, p[mid..].to_vec()),
        ]
    } else {
        vec![RawFrame::text(p)]
    }
}

fn oversize(rng: &mut Rng, ctx: &Ctx) -> Vec<RawFrame> {
    match rng.below(3) {
        // The header alone is over the limit: the server refuses there.
        0 => {
            let mut f = RawFrame::text(Vec::new());
            f.claimed_len = Some(ctx.max_frame as u64 + 1 + rng.below(1 << 20));
            vec![f]
        }
        // The whole payload follows: the server closes with most of it
        // unread, and its lingering close must still get the Close frame
        // through instead of a reset.
        1 => vec![RawFrame::text(vec![
            b' ';
            ctx.max_frame
                + 1
                + rng.below(64 << 10) as usize
        ])],
        // Each fragment fits; together they do not.
        _ => vec![
            RawFrame::text(vec![b' '; ctx.max_frame - 8]).fin(false),
            RawFrame::new(OP_CONT, vec![b' '; 16]),
        ],
    }
}

/// RFC 6455 violations, each around an otherwise valid frame.
fn bad_framing(rng: &mut Rng) -> Vec<RawFrame> {
    let valid = json!({"type":"typing","active":true})
        .to_string()
        .into_bytes();
    match rng.below(7) {
        0 => vec![RawFrame::new(OP_CONT, valid)],
        1 => vec![
            RawFrame::text(valid[..5].to_vec()).fin(false),
            RawFrame::text(valid),
        ],
        2 => vec![RawFrame::new(OP_PING, b"x".to_vec()).fin(false)],
        3 => vec![RawFrame::new(OP_PING, vec![b'x'; 126])],
        4 => vec![RawFrame::new(*rng.pick(&[3u8, 7, 0xB, 0xF]), valid)],
        5 => {
            let mut f = RawFrame::text(valid);
            f.rsv = 1 + rng.below(7) as u8;
            vec![f]
        }
        _ => {
            let mut f = RawFrame::text(valid);
            f.masked = false;
            vec![f]
        }
    }
}

/// A client close is answered with its own code; a code no endpoint may send,
/// or a 1-byte payload, is a protocol error; a reason that is not UTF-8 is 1007.
fn client_close(rng: &mut Rng) -> (Vec<RawFrame>, u16) {
    if rng.chance(0.3) {
        return if rng.chance(0.5) {
            (vec![RawFrame::new(OP_CLOSE, vec![0x03])], 1002)
        } else {
            (
                vec![RawFrame::new(OP_CLOSE, b"\x03\xe8bye\xff".to_vec())],
                1007,
            )
        };
    }
    let (code, want) = *rng.pick(&[
        (1000u16, 1000u16),
        (4000, 4000),
        (3001, 3001),
        (1005, 1002),
        (999, 1002),
    ]);
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(b"bye");
    (vec![RawFrame::new(OP_CLOSE, p)], want)
}
