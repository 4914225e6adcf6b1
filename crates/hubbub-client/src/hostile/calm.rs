//! A well-behaved pair beside the fuzz: one user chats at a steady pace, the
//! other must receive every message; the send→receive latency is recorded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::drive::StopFlag;
use crate::{self as client, Account, Endpoint, Incoming, WsClient};

/// What the pair saw.
#[derive(Clone, Debug, Default)]
pub struct Calm {
    pub sent: u64,
    pub delivered: u64,
    /// Messages that did not reach the receiver (or the sender's own echo) in time.
    pub missing: u64,
    /// Send → receive, milliseconds, one per delivered message.
    pub latencies_ms: Vec<f64>,
    /// Set when a socket of the pair failed; the pair stops there.
    pub failure: Option<String>,
}

impl Calm {
    /// The `q` quantile (0..=1) of the latencies, milliseconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.latencies_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    pub fn json(&self) -> serde_json::Value {
        let r = |x: Option<f64>| x.map(|x| (x * 1000.0).round() / 1000.0);
        json!({
            "sent": self.sent, "delivered": self.delivered, "missing": self.missing,
            "p50_ms": r(self.quantile(0.5)), "p99_ms": r(self.quantile(0.99)),
            "max_ms": r(self.quantile(1.0)), "failure": self.failure,
        })
    }
}

/// The pair's two sockets in one room.
pub struct Pair {
    from: WsClient,
    to: WsClient,
    n: u64,
}

impl Pair {
    pub async fn join(ep: &Endpoint, a: &Account, b: &Account, room: &str) -> anyhow::Result<Pair> {
        let mut from = client::join(ep, a, room, None, None).await?;
        let mut to = client::join(ep, b, room, None, None).await?;
        for ws in [&mut from, &mut to] {
            ws.expect("welcome", Duration::from_secs(30)).await?;
            ws.expect("history", Duration::from_secs(30)).await?;
        }
        Ok(Pair { from, to, n: 0 })
    }

    /// Chats every `every` until `count` messages went out or `stop` is set.
    pub async fn chat(
        &mut self,
        every: Duration,
        count: Option<u64>,
        stop: &StopFlag,
        wait: Duration,
    ) -> Calm {
        let mut out = Calm::default();
        let mut tick = tokio::time::interval(every);
        while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| out.sent < c) {
            tick.tick().await;
            self.n += 1;
            let (id, msg) = crate::frames::chat(format!("calm {}", self.n));
            let id = id.to_string();
            let sent = Instant::now();
            if let Err(e) = self.from.send(&msg).await {
                out.failure = Some(format!("send: {e:#}"));
                break;
            }
            out.sent += 1;
            match until(&mut self.to, &id, wait).await {
                Ok(true) => {
                    out.delivered += 1;
                    out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(false) => out.missing += 1,
                Err(e) => {
                    out.failure = Some(format!("receiver: {e}"));
                    break;
                }
            }
            // The sender's own copy too (and its receipts), so its queue never fills.
            match until(&mut self.from, &id, wait).await {
                Ok(true) => {}
                Ok(false) => out.missing += 1,
                Err(e) => {
                    out.failure = Some(format!("sender: {e}"));
                    break;
                }
            }
        }
        out
    }
}

/// Reads until the chat `id` arrives (true), `wait` passes (false), or the socket closes.
async fn until(ws: &mut WsClient, id: &str, wait: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(v)) if v["type"] == "chat" && v["id"] == id => return Ok(true),
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(c)) => return Err(format!("closed: {c:?}")),
            None => return Ok(false),
        }
    }
}
