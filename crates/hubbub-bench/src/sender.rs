//! A fan-out sender's pacing and frames, and the stamp receivers read back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hubbub_client::frames;
use hubbub_client::protocol::ClientMsg;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::net::{self, Ws};
use crate::stats::{now_ns, padded};

/// The `t=<ns> s=<sender>` stamp at the start of the content. In a chat
/// frame the first `=` is the stamp's (ids, room and user names have none,
/// and `ts`/`cursor` come after `content`), so one byte scan finds it.
pub(crate) fn stamp(s: &str) -> Option<(u64, u64)> {
    let b = s.as_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    if eq == 0 || b[eq - 1] != b't' || (eq > 1 && b[eq - 2] != b'"') {
        return None;
    }
    let digits = |from: usize| -> Option<(u64, usize)> {
        let n = b
            .get(from..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let v = s.get(from..from + n)?.parse().ok()?;
        Some((v, from + n))
    };
    let (sent, end) = digits(eq + 1)?;
    if b.get(end..end + 3)? != b" s=" {
        return None;
    }
    let (from, _) = digits(end + 3)?;
    Some((sent, from))
}

pub(crate) struct SendCfg {
    pub(crate) local: usize,
    pub(crate) global: usize,
    pub(crate) rate: f64,
    pub(crate) phase: f64,
    pub(crate) size: usize,
    pub(crate) duration: Duration,
    pub(crate) raw: bool,
    pub(crate) run: u64,
    /// Cancelled when everyone is connected: start sending.
    pub(crate) go: CancellationToken,
    /// Gets this sender's count when it stops.
    pub(crate) report: tokio::sync::mpsc::UnboundedSender<u64>,
}

/// A sender's state: `rate` msgs/s (0 = 32 per millisecond) for `duration`.
pub(crate) struct Sending {
    pub(crate) cfg: SendCfg,
    pub(crate) tick: tokio::time::Interval,
    pub(crate) start: Option<Instant>,
    pub(crate) seq: u64,
    pub(crate) done: bool,
}

impl Sending {
    pub(crate) fn new(cfg: SendCfg) -> Self {
        Sending {
            tick: tokio::time::interval(Duration::from_millis(1)),
            cfg,
            start: None,
            seq: 0,
            done: false,
        }
    }

    fn period(&self) -> Duration {
        if self.cfg.rate > 0.0 {
            Duration::from_secs_f64((1.0 / self.cfg.rate).max(0.001))
        } else {
            Duration::from_millis(1)
        }
    }

    /// Starts the clock, offset by this sender's phase so senders interleave.
    pub(crate) fn begin(&mut self) {
        let p = self.period();
        let first = tokio::time::Instant::now() + p.mul_f64(self.cfg.phase);
        self.tick = tokio::time::interval_at(first, p);
        self.tick
            .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        self.start = Some(Instant::now());
    }

    fn frame(&self, seq: u64) -> String {
        let c = &self.cfg;
        let content = padded(format!("t={} s={} ", now_ns(), c.local), c.size);
        if c.raw {
            return content;
        }
        let id = Uuid::from_u128(
            ((c.run as u128) << 64) | ((c.global as u128) << 32) | (seq as u128 & 0xffff_ffff),
        );
        frames::encode(&ClientMsg::Chat { id, content })
    }

    /// Sends what is due by now (one flush), or reports and stops after `duration`.
    pub(crate) async fn send_due(
        &mut self,
        ws: &mut Ws,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let el = self.start.map_or(Duration::ZERO, |s| s.elapsed());
        if el >= self.cfg.duration {
            self.done = true;
            let _ = self.cfg.report.send(self.seq);
            return Ok(());
        }
        let due = if self.cfg.rate > 0.0 {
            ((el.as_secs_f64() * self.cfg.rate) as u64 + 1).min(self.seq + 10_000)
        } else {
            self.seq + 32
        };
        while self.seq < due {
            ws.feed(Message::Text(self.frame(self.seq).into())).await?;
            self.seq += 1;
        }
        ws.flush().await
    }
}

/// What the sending stretch measured.
pub(crate) struct Measured {
    pub(crate) sent: u64,
    pub(crate) send_s: f64,
    pub(crate) start_ns: u64,
    pub(crate) cpu: serde_json::Value,
}

/// Starts the senders (`go`), waits for each to report its count (or for
/// its connection to end), then drains until nothing arrives for a second
/// (at most 15 s). The server's CPU is metered over send and drain.
pub(crate) async fn measure(
    go: CancellationToken,
    report_rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
    total_senders: usize,
    duration: Duration,
    live: &AtomicU64,
    pid: Option<u32>,
) -> Measured {
    let start_ns = now_ns();
    let cpu = net::CpuMeter::start(pid);
    go.cancel();
    let (mut sent, mut reports) = (0u64, 0usize);
    let deadline = tokio::time::Instant::now() + duration + Duration::from_secs(30);
    while reports < total_senders {
        match tokio::time::timeout_at(deadline, report_rx.recv()).await {
            Ok(Some(n)) => {
                sent += n;
                reports += 1;
            }
            _ => break,
        }
    }
    let send_s = (now_ns() - start_ns) as f64 / 1e9;
    let drain_start = Instant::now();
    let mut last = live.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(15)
        && quiet.elapsed() < Duration::from_secs(1)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = live.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    Measured {
        sent,
        send_s,
        start_ns,
        cpu: cpu.json(),
    }
}

#[cfg(test)]
mod tests {
    use super::stamp;

    #[test]
    fn finds_the_stamp() {
        let chat = r#"{"type":"chat","id":"0190-ab","room":"fan1","sender":"bench_0","content":"t=123 s=4 xxx","ts":"2026-11-28T08:00:00.123Z","cursor":"a=b"}"#;
        assert_eq!(stamp(chat), Some((123, 4)));
        assert_eq!(stamp("t=9 s=0 pad"), Some((9, 0)));
        assert_eq!(stamp(r#"{"type":"chat","content":"x=1"}"#), None);
        assert_eq!(stamp("t=9 pad"), None);
    }
}
