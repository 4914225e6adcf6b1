//! `durable`: S senders, each alone in its own room (so fan-out costs nothing),
//! time from send to the `saved` receipt. Phase `rate`: a total offered rate R.
//! Phase `max`: closed loop, each sender keeps up to `--window` unsaved
//! messages in flight; the result is saved receipts per second.
//!
//! During the rate phase a probe times this disk's own fsync (4 KiB write +
//! fdatasync, every `PROBE_EVERY`) on a file in the server's data dir, so
//! that send→`saved` can be read against what one fsync costs in the same run.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hubbub_client::frames;
use hubbub_client::protocol::{ClientMsg, Username};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::net::{self, Target, Ws};
use crate::stats::{Hist, now_ns, padded, round3};
use crate::{Args, Outcome};

/// How long a phase waits for the last receipts after it stops sending.
const DRAIN: Duration = Duration::from_secs(10);
/// The fsync probe's pace: ~400 samples in a 10 s phase, a small share of the
/// disk's fsyncs next to the server's (one per group commit).
const PROBE_EVERY: Duration = Duration::from_millis(25);
/// The probe file's size: it rewrites these 4 KiB blocks in turn.
const PROBE_BLOCKS: u64 = 64;

#[derive(Clone)]
pub struct PhaseCfg {
    /// Msgs/s for this sender; 0 = closed loop with `window`.
    pub rate: f64,
    pub window: usize,
    pub duration: Duration,
    pub size: usize,
    pub run: u64,
    pub sender: usize,
    /// Messages to send at most in this phase.
    pub count: u64,
    /// Send private messages to this user instead of chat (history-hidden pre-fill).
    pub target: Option<Username>,
}

impl PhaseCfg {
    /// A closed-loop sender as the pre-fills run it: `--window` unsaved at
    /// most, `--size` bytes, for up to `--max-secs`.
    pub fn closed_loop(
        args: &crate::Args,
        run: u64,
        sender: usize,
        count: u64,
        target: Option<Username>,
    ) -> PhaseCfg {
        PhaseCfg {
            rate: 0.0,
            window: args.window.max(1),
            duration: Duration::from_secs(args.max_secs),
            size: args.size,
            run,
            sender,
            count,
            target,
        }
    }
}

/// Sender `i`'s share of `total` messages split over `senders` (the first
/// `total % senders` send one more).
pub fn share(total: u64, senders: usize, i: usize) -> u64 {
    let n = senders.max(1) as u64;
    total / n + u64::from((i as u64) < total % n)
}

#[derive(Default)]
pub struct PhaseStats {
    pub hist: Hist,
    pub sent: u64,
    pub saved: u64,
    pub saved_in_window: u64,
    pub unavailable: u64,
    pub rate_limited: u64,
    pub other_errors: u64,
    pub unsaved: u64,
    pub closed: bool,
    /// The close code the server sent, if it closed the socket with one.
    pub close_code: Option<u16>,
}

impl PhaseStats {
    pub fn merge(&mut self, o: &PhaseStats) {
        self.hist.merge(&o.hist);
        self.sent += o.sent;
        self.saved += o.saved;
        self.saved_in_window += o.saved_in_window;
        self.unavailable += o.unavailable;
        self.rate_limited += o.rate_limited;
        self.other_errors += o.other_errors;
        self.unsaved += o.unsaved;
        self.closed |= o.closed;
        self.close_code = self.close_code.or(o.close_code);
    }
}

fn msg_id(c: &PhaseCfg, seq: u64) -> Uuid {
    Uuid::from_u128(
        ((c.run as u128) << 64) | ((c.sender as u128) << 32) | (seq as u128 & 0xffff_ffff),
    )
}

/// The in-flight key of a message: its id's low 64 bits (sender << 32 | seq).
fn key(id: Uuid) -> u64 {
    id.as_u128() as u64
}

/// The key of the id found after `"id":"` in a frame. Receipts for the same
/// account's other sessions in the room arrive too; their keys never match.
fn key_of(s: &str) -> Option<u64> {
    let i = s.find("\"id\":\"")? + 6;
    Some(key(Uuid::parse_str(s.get(i..i + 36)?).ok()?))
}

/// Runs one phase on one connection; `make` builds the content of message `seq`.
pub async fn phase(
    ws: &mut Ws,
    c: PhaseCfg,
    seq: &mut u64,
    make: &(dyn Fn(u64) -> String + Sync),
) -> PhaseStats {
    let mut st = PhaseStats::default();
    let mut inflight: HashMap<u64, u64> = HashMap::new();
    let start = Instant::now();
    let end = start + c.duration;
    let give_up = end + DRAIN;
    let period = Duration::from_secs_f64(if c.rate > 0.0 {
        (1.0 / c.rate).max(0.001)
    } else {
        0.01
    });
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let first = *seq;
    let mut want: u64 = if c.rate > 0.0 { 0 } else { c.window as u64 };
    loop {
        let now = Instant::now();
        let sending = now < end && st.sent - st.unavailable < c.count;
        if (!sending && inflight.is_empty()) || now >= give_up {
            break;
        }
        // Closed loop: top up when half the window is free (sends go out in batches).
        if sending && c.rate == 0.0 && inflight.len() <= c.window / 2 {
            want = (c.window - inflight.len()) as u64;
        }
        if sending && want > 0 {
            for _ in 0..want.min(c.count - (st.sent - st.unavailable)) {
                let id = msg_id(&c, *seq);
                let content = make(*seq);
                let frame = frames::encode(&match &c.target {
                    None => ClientMsg::Chat { id, content },
                    Some(to) => ClientMsg::Private {
                        id,
                        target: to.clone(),
                        content,
                    },
                });
                inflight.insert(key(id), now_ns());
                *seq += 1;
                st.sent += 1;
                if ws.feed(Message::Text(frame.into())).await.is_err() {
                    st.closed = true;
                    return st;
                }
            }
            want = 0;
            if ws.flush().await.is_err() {
                st.closed = true;
                return st;
            }
        }
        let wake = if sending { end } else { give_up };
        tokio::select! {
            _ = tick.tick(), if sending && c.rate > 0.0 => {
                let due = (start.elapsed().as_secs_f64() * c.rate) as u64 + 1;
                want = due.saturating_sub(*seq - first).min(10_000);
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        st.close_code = f.map(|f| u16::from(f.code));
                        st.closed = true;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => { st.closed = true; break; }
                };
                let s = text.as_str();
                if s.starts_with("{\"type\":\"receipt\"") && s.contains("\"saved\"") {
                    if let Some(sent) = key_of(s).and_then(|q| inflight.remove(&q)) {
                        st.hist.record(now_ns().saturating_sub(sent));
                        st.saved += 1;
                        if Instant::now() < end {
                            st.saved_in_window += 1;
                        }
                    }
                } else if s.starts_with("{\"type\":\"error\"") {
                    if s.contains("\"unavailable\"") {
                        st.unavailable += 1;
                        if let Some(q) = key_of(s) {
                            inflight.remove(&q);
                        }
                    } else if s.contains("\"rate_limited\"") {
                        st.rate_limited += 1;
                    } else {
                        st.other_errors += 1;
                    }
                }
            }
        }
    }
    st.unsaved = inflight.len() as u64;
    st
}

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let senders = args.senders.unwrap_or(100).max(1);
    let spu = net::sessions_per_user(args, t);
    let run = net::run_id();
    let (accounts, login_s) = net::accounts(t, senders.div_ceil(spu), args.concurrency).await?;
    let mut conns = JoinSet::new();
    for i in 0..senders {
        let path = t.ws_path(&format!("dur{:x}-{i}", run & 0xff_ffff));
        let account = accounts.get(i / spu).cloned();
        let (ep, rb) = (t.ep.clone(), args.read_buffer);
        conns.spawn(async move {
            anyhow::Ok((i, net::join(&ep, false, &path, account.as_ref(), rb).await?))
        });
    }
    let mut wss = Vec::new();
    while let Some(r) = conns.join_next().await {
        wss.push(r?.context("connecting a sender")?);
    }
    eprintln!(
        "{senders} senders connected ({} accounts in {login_s:.1}s)",
        accounts.len()
    );
    let rate = args.rate.unwrap_or(5000.0);
    let mut phases: Vec<(&str, f64)> = Vec::new();
    if matches!(args.phase.as_str(), "rate" | "both") && rate > 0.0 {
        phases.push(("rate", rate));
    }
    if matches!(args.phase.as_str(), "max" | "both") || rate == 0.0 {
        phases.push(("max", 0.0));
    }
    let mut results = serde_json::Map::new();
    let mut summary = format!(
        "durable: {senders} senders, one room each, {} B\n",
        args.size
    );
    let mut seqs = vec![0u64; senders];
    for (name, total) in phases {
        eprintln!(
            "phase {name}: {} for {}s",
            if total > 0.0 {
                format!("{total} msgs/s")
            } else {
                format!("window {}", args.window)
            },
            args.duration
        );
        let cpu = net::CpuMeter::start(t.pid);
        let probe = (total > 0.0).then(|| FsyncProbe::start(probe_dir(t)));
        let (all, _closed) = every_sender(args, &mut wss, &mut seqs, run, total).await?;
        let fsync = match probe {
            Some(p) => Some(p.finish().await),
            None => None,
        };
        let per_sec = all.saved_in_window as f64 / args.duration;
        let cpu = cpu.json();
        let mut pj = phase_json(&all, total, per_sec);
        pj["cpu"] = cpu.clone();
        if let Some(f) = &fsync {
            pj["fsync"] = f.json();
        }
        results.insert(name.into(), pj);
        summary.push_str(&format!(
            "{name:>4}: offered {} sent {} saved {} ({per_sec:.0} saved/s in window) unavailable {} rate_limited {} unsaved {}\n      send->saved {}\n      cpu {}\n",
            if total > 0.0 { format!("{total:.0}/s") } else { format!("window {}", args.window) },
            all.sent, all.saved, all.unavailable, all.rate_limited, all.unsaved, all.hist.short(), cpu
        ));
        if let Some(f) = &fsync {
            summary.push_str(&format!("      fsync probe {}\n", f.short()));
        }
    }
    results.insert("senders".into(), json!(senders));
    results.insert("size".into(), json!(args.size));
    results.insert("duration_s".into(), json!(args.duration));
    results.insert("login_s".into(), json!(round3(login_s)));
    Ok((Value::Object(results), summary.trim_end().to_string()))
}

fn phase_json(s: &PhaseStats, offered: f64, per_sec: f64) -> Value {
    json!({
        "offered_rate": offered,
        "sent": s.sent,
        "saved": s.saved,
        "saved_per_sec": per_sec.round(),
        "unavailable": s.unavailable,
        "rate_limited": s.rate_limited,
        "other_errors": s.other_errors,
        "unsaved": s.unsaved,
        "closed": s.closed,
        "send_to_saved": s.hist.json_ms(),
    })
}

/// One phase on every sender at once (`rate` in total, 0 = closed loop); the merged stats and
/// how many senders the server closed.
pub async fn every_sender(
    args: &Args,
    wss: &mut Vec<(usize, Ws)>,
    seqs: &mut [u64],
    run: u64,
    rate: f64,
) -> anyhow::Result<(PhaseStats, u64)> {
    let senders = seqs.len();
    let mut set = JoinSet::new();
    for ((i, mut ws), seq0) in wss.drain(..).zip(seqs.iter().copied()) {
        let c = PhaseCfg {
            rate: rate / senders as f64,
            window: args.window.max(1),
            duration: Duration::from_secs_f64(args.duration),
            size: args.size,
            run,
            sender: i,
            count: u64::MAX,
            target: None,
        };
        set.spawn(async move {
            let mut seq = seq0;
            let make = move |q: u64| padded(format!("t={} d={q} ", now_ns()), c.size);
            let st = phase(&mut ws, c, &mut seq, &make).await;
            (i, ws, seq, st)
        });
    }
    let (mut all, mut closed) = (PhaseStats::default(), 0u64);
    while let Some(r) = set.join_next().await {
        let (i, ws, seq, st) = r?;
        closed += u64::from(st.closed);
        all.merge(&st);
        seqs[i] = seq;
        wss.push((i, ws));
    }
    Ok((all, closed))
}

/// Where the probe writes: the server's data dir (same filesystem as its
/// sled files), else the temp dir.
fn probe_dir(t: &Target) -> PathBuf {
    t.data_dir.clone().unwrap_or_else(std::env::temp_dir)
}

/// A thread that times 4 KiB write + fdatasync on one file until stopped.
struct FsyncProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<std::io::Result<Hist>>,
}

/// The probe's result: its histogram, or why it could not run.
enum ProbeResult {
    Ok(Hist),
    Err(String),
}

impl FsyncProbe {
    fn start(dir: PathBuf) -> FsyncProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || probe_loop(&dir, &flag));
        FsyncProbe { stop, task }
    }

    async fn finish(self) -> ProbeResult {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(Ok(h)) => ProbeResult::Ok(h),
            Ok(Err(e)) => ProbeResult::Err(e.to_string()),
            Err(e) => ProbeResult::Err(e.to_string()),
        }
    }
}

impl ProbeResult {
    fn json(&self) -> Value {
        match self {
            ProbeResult::Ok(h) => h.json_ms(),
            ProbeResult::Err(e) => json!({ "error": e }),
        }
    }

    fn short(&self) -> String {
        match self {
            ProbeResult::Ok(h) => h.short(),
            ProbeResult::Err(e) => format!("failed: {e}"),
        }
    }
}

fn probe_loop(dir: &std::path::Path, stop: &AtomicBool) -> std::io::Result<Hist> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // Removed however the loop ends.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path);
    let block = [0x5a_u8; 4096];
    // Allocate the blocks first: the timed writes overwrite, as sled's do.
    for b in 0..PROBE_BLOCKS {
        f.write_all_at(&block, b * 4096)?;
    }
    f.sync_all()?;
    let mut h = Hist::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let t0 = now_ns();
        f.write_all_at(&block, (i % PROBE_BLOCKS) * 4096)?;
        f.sync_data()?;
        h.record(now_ns().saturating_sub(t0));
        i += 1;
        std::thread::sleep(PROBE_EVERY);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        for (total, senders) in [(10, 3), (7, 8), (1_000_000, 8), (0, 4), (5, 1)] {
            let parts: Vec<u64> = (0..senders).map(|i| share(total, senders, i)).collect();
            assert_eq!(parts.iter().sum::<u64>(), total, "{total} over {senders}");
            let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            assert!(hi - lo <= 1, "{parts:?}");
        }
    }
}
