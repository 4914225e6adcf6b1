//! One clock for every client in the process, a log-linear latency histogram,
//! and small formatting helpers.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the bench started (one clock for senders and receivers).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Sub-buckets per power of two: values keep 6 significant bits (≤ 1.6 % error).
const SUB: u64 = 64;
const BUCKETS: usize = 64 * 64;

/// A log-linear histogram of nanosecond values (HDR-style, no dependency).
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as u64; // ≥ 7
    let shift = e - 6;
    let sub = v >> shift; // in [64, 128)
    ((shift * SUB + sub) as usize).min(BUCKETS - 1)
}

fn value(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        return idx;
    }
    let shift = idx / SUB - 1;
    let sub = idx % SUB + SUB;
    (sub << shift) + (1u64 << shift) / 2
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// p50/p90/p99/p99.9/max/mean in milliseconds.
    pub fn json_ms(&self) -> Value {
        let ms = |ns: u64| round3(ns as f64 / 1e6);
        json!({
            "n": self.n,
            "p50_ms": ms(self.quantile(0.5)),
            "p90_ms": ms(self.quantile(0.9)),
            "p99_ms": ms(self.quantile(0.99)),
            "p999_ms": ms(self.quantile(0.999)),
            "max_ms": ms(self.max),
            "mean_ms": ms(if self.n == 0 { 0 } else { (self.sum / self.n as u128) as u64 }),
        })
    }

    /// "p50 1.2 / p99 3.4 / max 9.9 ms"
    pub fn short(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "p50 {:.2} / p90 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms (n={})",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.9)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.max),
            self.n
        )
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Content of `size` bytes: `head` padded with 'x'.
pub fn padded(head: String, size: usize) -> String {
    let mut s = head;
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips() {
        for v in [0u64, 1, 127, 128, 129, 1000, 123_456, 40_000_000, 1 << 40] {
            let got = value(index(v));
            let err = (got as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {got}");
        }
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02);
    }
}
