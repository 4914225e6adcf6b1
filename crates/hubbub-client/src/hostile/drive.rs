//! Runs hostile cases over many connections and checks every answer.
//!
//! Each connection works in rounds: a batch of cases that keep it open, sent
//! in one write while its answers are read, then (sometimes) one case that
//! must close it, sent alone once the round is fully answered (the server may
//! drop queued replies when it closes), then a reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::answers::{Me, Pending};
use super::cases::{self, Ctx};
use super::closing;
use super::raw::{RawReader, RawWriter, RawWs, ServerFrame};
pub use super::tally::Tally;
use super::{Case, Rng};
use crate::{Account, Endpoint};

/// How hard and how long to push.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Raw WebSocket frames to send in total (fragments and control frames count).
    pub frames: u64,
    /// Stop sending after this long even if `frames` is not reached.
    pub max_time: Duration,
    /// Cases per round.
    pub round: usize,
    /// Chance that a round is followed by a case that closes the connection.
    pub close_chance: f64,
    /// How long a round's answers may take before the missing ones count as mismatches.
    pub answer_timeout: Duration,
    pub seed: u64,
    /// Each connection gets its own room `<prefix><index>`.
    pub room_prefix: String,
}

/// Runs one hostile connection loop per account until the frame budget or
/// the time is used up; returns the merged tally.
pub async fn run(ep: &Endpoint, accounts: &[Account], s: &Settings) -> Tally {
    let budget = Arc::new(AtomicU64::new(s.frames));
    let deadline = Instant::now() + s.max_time;
    let mut set = tokio::task::JoinSet::new();
    for (i, acct) in accounts.iter().enumerate() {
        let (ep, acct, s, budget) = (ep.clone(), acct.clone(), s.clone(), budget.clone());
        set.spawn(async move { connection(i, &ep, &acct, &s, &budget, deadline).await });
    }
    let mut total = Tally::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(t) => total.add(&t),
            Err(e) => total.miss(format!("fuzz task failed: {e}")),
        }
    }
    total
}

async fn connection(
    i: usize,
    ep: &Endpoint,
    acct: &Account,
    s: &Settings,
    budget: &AtomicU64,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(s.seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let room = format!("{}{i}", s.room_prefix);
    let path = format!("/ws?room={room}");
    let mut failures = 0;
    while budget.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        let ws = match RawWs::connect(ep, &path, acct).await {
            Ok(ws) => ws,
            Err(e) => {
                t.connect_failures += 1;
                failures += 1;
                if failures >= 5 {
                    t.miss(format!("conn {i}: cannot connect: {e:#}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        failures = 0;
        t.connects += 1;
        let (mut rd, wr) = ws.split();
        let max_frame = match joined(&mut rd, s.answer_timeout).await {
            Ok(m) => m,
            Err(e) => {
                t.miss(format!("conn {i}: join: {e}"));
                continue;
            }
        };
        let me = Me {
            user: &acct.username,
            room: room.clone(),
        };
        let mut conn = Conn {
            rd,
            wr,
            ctx: Ctx { max_frame },
            me,
        };
        // Rounds until a closing case (or a failure) ends this connection.
        while conn.round(&mut rng, s, budget, deadline, &mut t).await {}
    }
    t
}

/// One open hostile connection.
struct Conn<'a> {
    rd: RawReader,
    wr: RawWriter,
    ctx: Ctx,
    me: Me<'a>,
}

impl Conn<'_> {
    /// Sends one round and checks its answers; false when the connection is done.
    async fn round(
        &mut self,
        rng: &mut Rng,
        s: &Settings,
        budget: &AtomicU64,
        deadline: Instant,
        t: &mut Tally,
    ) -> bool {
        let closing = rng.chance(s.close_chance);
        let cases: Vec<Case> = if closing {
            vec![closing::closing(rng, &self.ctx)]
        } else {
            (0..s.round).map(|_| cases::text(rng, &self.ctx)).collect()
        };
        let frames: u64 = cases.iter().map(|c| c.frames.len() as u64).sum();
        if !take(budget, frames) || Instant::now() >= deadline {
            self.wr.shutdown().await;
            return false;
        }
        let mut bytes = Vec::new();
        let mut pending = Pending::default();
        for c in &cases {
            for f in &c.frames {
                let key = rng.next_u64().to_le_bytes();
                f.encode([key[0], key[1], key[2], key[3]], &mut bytes);
            }
            *t.classes.entry(c.class).or_default() += 1;
            pending.add(c);
        }
        t.frames += frames;
        t.cases += cases.len() as u64;
        t.bytes += bytes.len() as u64;
        // Write and read at once: a peer that only writes would fill its queue.
        let (w, open) = tokio::join!(
            self.wr.write(&bytes),
            pending.answer(&mut self.rd, &self.me, t, s.answer_timeout)
        );
        // Even a closing case is written in full: the server discards what
        // follows the frame it closed on (its lingering close) instead of
        // resetting the socket under the rest of the write.
        if let Err(e) = w {
            t.miss(format!("{}: write failed: {e}", self.me.room));
        }
        open
    }
}

/// Takes `n` frames from the budget; false when it is used up.
fn take(budget: &AtomicU64, n: u64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            b.checked_sub(n).or((b > 0).then_some(0))
        })
        .is_ok_and(|b| b > 0)
}

/// Reads `welcome` then `history`; returns the frame limit `welcome` announced.
async fn joined(rd: &mut RawReader, limit: Duration) -> Result<usize, String> {
    let mut max_frame = None;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let f = tokio::time::timeout_at(deadline, rd.next()).await;
        let text = match f {
            Ok(Ok(Some(ServerFrame::Text(t)))) => t,
            Ok(Ok(Some(_))) => continue,
            other => return Err(format!("no welcome/history: {other:?}")),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("welcome") => max_frame = v["limits"]["max_frame"].as_u64(),
            Some("history") => {
                return max_frame
                    .map(|m| m as usize)
                    .ok_or_else(|| "history before welcome".to_owned());
            }
            _ => {}
        }
    }
}

/// A flag the well-behaved clients watch to know when the fuzz is over.
pub type StopFlag = Arc<AtomicBool>;
