//! Runs hostile cases over many connections and checks every answer.
//!
//! Each connection works in rounds: a batch of cases that keep it open, sent
//! in one write while its answers are read, then (sometimes) one case that
//! must close it, sent alone once the round is fully answered (the server may
//! drop queued replies when it closes), then a reconnect.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cases::{self, Ctx};
use super::raw::{RawReader, RawWs, ServerFrame};
use super::{Case, Expect, Rng};
use crate::client::{Account, Endpoint};

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
    /// The first few mismatches, for the report.
    pub samples: Vec<String>,
    pub connects: u64,
    pub connect_failures: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
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
        for s in &o.samples {
            if self.samples.len() < 20 {
                self.samples.push(s.clone());
            }
        }
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
    }

    fn miss(&mut self, what: String) {
        self.mismatches += 1;
        if self.samples.len() < 20 {
            self.samples.push(what);
        }
    }

    fn answer(&mut self, kind: impl Into<String>) {
        *self.answers.entry(kind.into()).or_default() += 1;
    }

    pub fn json(&self) -> Value {
        json!({
            "frames": self.frames, "cases": self.cases, "bytes": self.bytes,
            "classes": self.classes, "answers": self.answers,
            "mismatches": self.mismatches, "mismatch_samples": self.samples,
            "connects": self.connects, "connect_failures": self.connect_failures,
        })
    }
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
    let path = format!("/ws?room={}{i}", s.room_prefix);
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
        let (mut rd, mut wr) = ws.split();
        let max_frame = match joined(&mut rd, s.answer_timeout).await {
            Ok(m) => m,
            Err(e) => {
                t.miss(format!("conn {i}: join: {e}"));
                continue;
            }
        };
        let ctx = Ctx { max_frame };
        let me = Me {
            user: &acct.username,
            room: format!("{}{i}", s.room_prefix),
        };
        // Rounds until a closing case (or a failure) ends this connection.
        loop {
            let closing = rng.chance(s.close_chance);
            let cases: Vec<Case> = if closing {
                vec![cases::closing(&mut rng, &ctx)]
            } else {
                (0..s.round).map(|_| cases::text(&mut rng, &ctx)).collect()
            };
            let frames: u64 = cases.iter().map(|c| c.frames.len() as u64).sum();
            if !take(budget, frames) || Instant::now() >= deadline {
                wr.shutdown().await;
                break;
            }
            let mut bytes = Vec::new();
            let mut pending = Pending::default();
            for c in &cases {
                for f in &c.frames {
                    f.encode(
                        rng.next_u64().to_le_bytes()[..4]
                            .try_into()
                            .unwrap_or([7; 4]),
                        &mut bytes,
                    );
                }
                *t.classes.entry(c.class).or_default() += 1;
                pending.add(c);
            }
            t.frames += frames;
            t.cases += cases.len() as u64;
            t.bytes += bytes.len() as u64;
            // Write and read at once: a peer that only writes would fill its queue.
            let (w, open) = tokio::join!(
                wr.write(&bytes),
                pending.answer(&mut rd, &me, &mut t, s.answer_timeout)
            );
            // A closing case may find the socket closed before all of it is written.
            if let Err(e) = w
                && !closing
            {
                t.miss(format!("conn {i}: write failed: {e}"));
            }
            if !open {
                break;
            }
        }
    }
    t
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

struct Me<'a> {
    user: &'a str,
    room: String,
}

/// The answers a round still waits for.
#[derive(Default)]
struct Pending {
    /// Errors and echoes that name an id.
    by_id: HashMap<String, Vec<(&'static str, Expect)>>,
    /// Errors without an id, in the order their frames were sent.
    no_id: VecDeque<(&'static str, &'static str)>,
    systems: VecDeque<(&'static str, String)>,
    histories: HashMap<String, &'static str>,
    pongs: Vec<(&'static str, Vec<u8>)>,
    close: Option<(&'static str, u16)>,
    left: usize,
}

impl Pending {
    fn add(&mut self, c: &Case) {
        for e in &c.expect {
            self.left += 1;
            match e {
                Expect::Error { code, id: None } => self.no_id.push_back((c.class, code)),
                Expect::Error { id: Some(id), .. } | Expect::Echo { id, .. } => self
                    .by_id
                    .entry(id.clone())
                    .or_default()
                    .push((c.class, e.clone())),
                Expect::System(s) => self.systems.push_back((c.class, s.clone())),
                Expect::History(r) => {
                    self.histories.insert(r.clone(), c.class);
                }
                Expect::Pong(p) => self.pongs.push((c.class, p.clone())),
                Expect::Close(code) => self.close = Some((c.class, *code)),
                Expect::Silent => self.left -= 1,
            }
        }
    }

    /// Reads until every answer came (true: the connection stays open), the
    /// expected close came, or something went wrong (false: reconnect).
    async fn answer(
        &mut self,
        rd: &mut RawReader,
        me: &Me<'_>,
        t: &mut Tally,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.left > 0 {
            let f = match tokio::time::timeout_at(deadline, rd.next()).await {
                Ok(Ok(Some(f))) => f,
                other => {
                    t.miss(format!(
                        "{} answers missing ({other:?}): {}",
                        self.left,
                        self.describe()
                    ));
                    return false;
                }
            };
            match f {
                ServerFrame::Text(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v) => self.text(&v, me, t),
                    Err(e) => t.miss(format!("server sent non-JSON ({e}): {text:.200}")),
                },
                ServerFrame::Pong(p) => match self.pongs.iter().position(|(_, q)| *q == p) {
                    Some(i) => {
                        self.pongs.swap_remove(i);
                        self.done(t, "pong");
                    }
                    None => t.miss(format!("unexpected pong {p:?}")),
                },
                ServerFrame::Close(code, reason) => {
                    match self.close.take() {
                        Some((_, want)) if want == code && self.left == 1 => self.done(t, format!("close:{code}")),
                        Some((class, want)) => {
                            t.miss(format!("{class}: close {code} ({reason}), expected {want} with {} other answers pending", self.left - 1))
                        }
                        None => t.miss(format!("unexpected close {code} ({reason}): {}", self.describe())),
                    }
                    return false;
                }
                ServerFrame::Ping(_) => {}
                ServerFrame::Binary(b) => t.miss(format!("server sent binary ({} bytes)", b.len())),
            }
        }
        self.close.is_none()
    }

    fn done(&mut self, t: &mut Tally, kind: impl Into<String>) {
        self.left -= 1;
        t.answer(kind);
    }

    fn text(&mut self, v: &Value, me: &Me<'_>, t: &mut Tally) {
        let ty = v["type"].as_str().unwrap_or("");
        let id = v["id"].as_str();
        match ty {
            "error" => {
                let code = v["code"].as_str().unwrap_or("");
                let found = match id {
                    Some(id) => self.take_id(
                        id,
                        |e| matches!(e, Expect::Error { code: c, .. } if *c == code),
                    ),
                    None => match self.no_id.front() {
                        Some((_, c)) if *c == code => self.no_id.pop_front().is_some(),
                        _ => false,
                    },
                };
                if found {
                    self.done(t, format!("error:{code}"));
                } else {
                    t.miss(format!("unexpected {v}; waiting for {}", self.describe()));
                }
            }
            "chat" | "private" => {
                let want = id.and_then(|id| {
                    let mut got = None;
                    self.take_id(id, |e| match e {
                        Expect::Echo { content, .. } => {
                            got = Some(content.clone());
                            true
                        }
                        _ => false,
                    });
                    got
                });
                match want {
                    Some(content)
                        if v["content"] == content.as_str()
                            && v["sender"] == me.user
                            && v["room"] == me.room.as_str()
                            && v.get("action").is_none() =>
                    {
                        self.done(t, "echo")
                    }
                    Some(content) => t.miss(format!(
                        "echo differs: want {content:?} from {} in {}: {v}",
                        me.user, me.room
                    )),
                    None => t.miss(format!("unexpected message {v}")),
                }
            }
            "system" => match self.systems.front() {
                Some((_, s)) if v["content"] == s.as_str() => {
                    self.systems.pop_front();
                    self.done(t, "system");
                }
                _ => t.miss(format!("unexpected {v}")),
            },
            "history" => match v["req"].as_str().and_then(|r| self.histories.remove(r)) {
                Some(_) => self.done(t, "history"),
                None => t.miss(format!("unexpected history page (req {:?})", v["req"])),
            },
            // Receipts for earlier chats, presence and typing of the room: not answers.
            "receipt" | "presence" | "typing" => {}
            _ => t.miss(format!("unexpected {v:.300}")),
        }
    }

    /// Removes the first expectation for `id` that `pred` accepts.
    fn take_id(&mut self, id: &str, mut pred: impl FnMut(&Expect) -> bool) -> bool {
        let Some(list) = self.by_id.get_mut(id) else {
            return false;
        };
        let Some(i) = list.iter().position(|(_, e)| pred(e)) else {
            return false;
        };
        list.remove(i);
        if list.is_empty() {
            self.by_id.remove(id);
        }
        true
    }

    /// A short list of what is still missing.
    fn describe(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        out.extend(self.no_id.iter().map(|(c, code)| format!("{c}:{code}")));
        out.extend(
            self.by_id
                .values()
                .flatten()
                .map(|(c, e)| format!("{c}:{e:?}")),
        );
        out.extend(self.systems.iter().map(|(c, s)| format!("{c}:system {s}")));
        out.extend(self.histories.values().map(|c| format!("{c}:history")));
        out.extend(self.pongs.iter().map(|(c, _)| format!("{c}:pong")));
        out.extend(
            self.close
                .iter()
                .map(|(c, code)| format!("{c}:close {code}")),
        );
        out.truncate(6);
        out.join(", ")
    }
}

/// A flag the well-behaved clients watch to know when the fuzz is over.
pub type StopFlag = Arc<AtomicBool>;
