//! The fuzz's score: what was sent and what came back, per connection and
//! merged. A leaf: the driver fills it, the answer checks add to it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What was sent and what came back, merged over all connections.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub frames: u64,
    pub cases: u64,
    pub bytes: u64,
    /// Cases per class.
    pub classes: BTreeMap<&'static str, u64>,
    /// Documented answers seen, by kind (`error:bad_request`, `close:1002`, `pong`, ...).
    pub answers: BTreeMap<String, u64>,
    pub mismatches: u64,
    /// Client closes whose reply never came (the socket just ended): the
    /// race the fuzz found in the session's close, reported by name.
    pub lost_close_replies: u64,
    /// The first few mismatches, for the report.
    pub samples: Vec<String>,
    pub connects: u64,
    pub connect_failures: u64,
}

impl Tally {
    pub(super) fn add(&mut self, o: &Tally) {
        self.frames += o.frames;
        self.cases += o.cases;
        self.bytes += o.bytes;
        for (k, v) in &o.classes {
            *self.classes.entry(k).or_default() += v;
        }
        for (k, v) in &o.answers {
            *self.answers.entry(k.clone()).or_default() += v;
        }
        self.mismatches += o.mismatches;
        self.lost_close_replies += o.lost_close_replies;
        for s in &o.samples {
            if self.samples.len() < 20 {
                self.samples.push(s.clone());
            }
        }
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
    }

    pub(super) fn miss(&mut self, what: String) {
        self.mismatches += 1;
        if self.samples.len() < 20 {
            self.samples.push(what);
        }
    }

    pub(super) fn answer(&mut self, kind: impl Into<String>) {
        *self.answers.entry(kind.into()).or_default() += 1;
    }

    pub fn json(&self) -> Value {
        json!({
            "frames": self.frames, "cases": self.cases, "bytes": self.bytes,
            "classes": self.classes, "answers": self.answers,
            "mismatches": self.mismatches, "mismatch_samples": self.samples,
            "lost_close_replies": self.lost_close_replies,
            "connects": self.connects, "connect_failures": self.connect_failures,
        })
    }
}
