//! A hostile client for fuzzing a running server over real sockets.
//!
//! [`cases`] makes random and mutated frames (wrong types, huge numbers, deep
//! nesting, invalid UTF-8, binary, fragments, oversize, broken framing,
//! control frames), each with the answer docs/PROTOCOL.md documents for it.
//! [`raw`] frames them by hand (tungstenite refuses to send most of them),
//! [`drive`] sends them over many connections and checks every answer, and
//! [`calm`] keeps a well-behaved pair chatting meanwhile. Used by
//! `hubbub-bench fuzz` and tests/it/fuzz_live.rs; the server never uses it.

mod answers;
pub mod calm;
pub mod cases;
pub mod closing;
pub mod drive;
pub mod raw;
mod tally;

use raw::RawFrame;

/// The documented answer to one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// An `error` frame with this code, echoing `id` when given (none otherwise).
    Error {
        code: &'static str,
        id: Option<String>,
    },
    /// The sender's own copy of a `chat`: this id and content, with the
    /// session's room and user (forged fields ignored) and no `action`.
    Echo { id: String, content: String },
    /// A `system` line with this content.
    System(String),
    /// A `history` page echoing this `req`.
    History(String),
    /// A pong with this payload.
    Pong(Vec<u8>),
    /// A close frame with this code, then the end of the connection.
    Close(u16),
    /// No answer at all.
    Silent,
}

/// Frames to send and the answers they must get.
#[derive(Clone, Debug)]
pub struct Case {
    /// A short name of the kind of abuse, for the counts.
    pub class: &'static str,
    pub frames: Vec<RawFrame>,
    pub expect: Vec<Expect>,
}

/// splitmix64: small, seedable, good enough to pick cases; runs repeat by seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A UUID from the stream (not v4-tagged; the server takes any UUID).
    pub fn uuid(&mut self) -> String {
        let n = u128::from(self.next_u64()) << 64 | u128::from(self.next_u64());
        uuid::Uuid::from_u128(n).to_string()
    }

    /// Up to `n` characters of mixed ASCII, JSON punctuation, controls and non-ASCII.
    pub fn garbage(&mut self, n: usize) -> String {
        const POOL: &[&str] = &[
            "a", "Z", "0", "9", " ", "\t", "\n", "{", "}", "[", "]", ":", ",", "\"", "\\", "/",
            "\u{0}", "\u{1f}", "é", "✨", "\u{feff}", "\u{202e}", "𝄞", "null", "true", "-", "e",
        ];
        let len = self.below(n as u64 + 1) as usize;
        (0..len).map(|_| *self.pick(POOL)).collect()
    }
}
