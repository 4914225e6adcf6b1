//! `idle`: open N connections, keep them reading (so join chatter never
//! fills a session queue), and report the server's VmRSS per connection and
//! the connect rate (upgrade with a ready token + welcome + history, per second).
//! With `--rooms-per-conn K` each is one `multi=1` connection subscribed to K
//! rooms of `--rooms` (a connect then includes the K subscribes and histories).
//! With `--history N` every room first gets N messages, so each join replays
//! them: what a burst (the `history` frame) leaves pinned per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::durable::{PhaseCfg, phase};
use crate::net::{self, Target};
use crate::stats::{Hist, round3};
use crate::{Args, Outcome};

/// How long the open connections sit before the second RSS reading.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let n = args.connections.unwrap_or(10_000);
    let room_size = args.room_size.unwrap_or(100).max(1);
    let spu = net::sessions_per_user(args, t);
    let run = net::run_id();
    let warmup = args.warmup.unwrap_or(n / 5);
    let (mut accounts, login_s) =
        net::accounts(t, (n + warmup).div_ceil(spu) + 1, args.concurrency).await?;
    // The last account only fills the rooms: its session is gone before the idle ones open.
    let filler = accounts.pop();
    if args.history_fill > 0 {
        let rooms = (n + warmup).div_ceil(room_size);
        let secs = prefill(args, t, filler, run, rooms).await?;
        eprintln!(
            "history: {} messages in each of {rooms} rooms in {secs:.1}s",
            args.history_fill
        );
    }
    let stop = CancellationToken::new();
    // Warm-up connections first, so memory the allocator kept from the log-ins
    // (argon2) and from first-time growth does not hide the per-connection cost.
    if warmup > 0 {
        let (h, failed, _, secs) = open(args, t, &accounts, spu, run, n..n + warmup, &stop).await?;
        eprintln!(
            "warm-up: {} connected ({failed} failed) in {secs:.1}s",
            h.count()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_before = t.pid.and_then(net::rss_kib);
    let shape = match args.rooms_per_conn {
        Some(k) => format!("multi=1, each in {k} of {} rooms", args.rooms.max(k)),
        None => format!("{room_size} per room"),
    };
    eprintln!(
        "{} accounts in {login_s:.1}s; opening {n} connections ({shape}), server RSS before {:?} KiB",
        accounts.len(),
        rss_before
    );
    let (hist, failed, first_err, connect_s) =
        open(args, t, &accounts, spu, run, 0..n, &stop).await?;
    let ok = hist.count();
    let rate = ok as f64 / connect_s.max(1e-9);
    eprintln!("{ok} connected ({failed} failed) in {connect_s:.1}s ({rate:.0}/s); settling");
    tokio::time::sleep(SETTLE).await;
    let rss_after = t.pid.and_then(net::rss_kib);
    stop.cancel();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if ok > 0 => Some(round3((a as f64 - b as f64) / ok as f64)),
        _ => None,
    };
    let results = json!({
        "connections": n,
        "warmup_connections": warmup,
        "connected": ok,
        "failed": failed,
        "first_error": first_err,
        "room_size": room_size,
        "rooms_per_conn": args.rooms_per_conn,
        "room_pool": args.rooms_per_conn.map(|k| args.rooms.max(k)),
        "history": args.history_fill,
        "accounts": accounts.len(),
        "login_s": round3(login_s),
        "logins_per_sec": if login_s > 0.0 { round3(accounts.len() as f64 / login_s) } else { 0.0 },
        "connect_s": round3(connect_s),
        "connects_per_sec": rate.round(),
        "connect_latency": hist.json_ms(),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_kib": per_conn,
    });
    let summary = format!(
        "idle: {ok}/{n} connected ({failed} failed, after {warmup} warm-up) in {connect_s:.1}s = {rate:.0} connects/s \
         (upgrade+welcome+history of {}, {} in flight)\nconnect latency {}\n\
         server RSS {rss_before:?} -> {rss_after:?} KiB = {} KiB per connection",
        args.history_fill,
        args.concurrency,
        hist.short(),
        per_conn.map_or("n/a (no --server-pid)".to_string(), |p| format!("{p:.2}")),
    );
    Ok((results, summary))
}

/// The room of idle connection `i`.
fn room_of(run: u64, i: usize, room_size: usize) -> String {
    format!("idle{:x}-{}", run & 0xff_ffff, i / room_size)
}

/// Puts `--history` messages (closed loop, `--size` bytes) into each of the
/// first `rooms` rooms through one sender, room after room; returns seconds.
async fn prefill(
    args: &Args,
    t: &Target,
    account: Option<hubbub_client::Account>,
    run: u64,
    rooms: usize,
) -> anyhow::Result<f64> {
    let room_size = args.room_size.unwrap_or(100).max(1);
    let start = Instant::now();
    let mut seq = 0u64;
    for r in 0..rooms {
        let path = t.ws_path(&room_of(run, r * room_size, room_size));
        let mut ws = net::join(&t.ep, t.raw, &path, account.as_ref(), args.read_buffer).await?;
        let want = args.history_fill as u64;
        let c = PhaseCfg::closed_loop(args, run, 0, want, None);
        let make = |q: u64| {
            format!(
                "idle history {r}-{q} {}",
                "x".repeat(args.size.saturating_sub(24))
            )
        };
        let st = phase(&mut ws, c, &mut seq, &make).await;
        anyhow::ensure!(
            st.saved >= want,
            "history pre-fill of room {r}: {} of {want} saved",
            st.saved
        );
        let _ = ws.close(None).await;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Opens connections `range` (room = index / room size) and keeps each one
/// reading until `stop`; returns connect latencies, failures, the first error, seconds.
async fn open(
    args: &Args,
    t: &Target,
    accounts: &[hubbub_client::Account],
    spu: usize,
    run: u64,
    range: std::ops::Range<usize>,
    stop: &CancellationToken,
) -> anyhow::Result<(Hist, u64, Option<String>, f64)> {
    let room_size = args.room_size.unwrap_or(100).max(1);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut connects = JoinSet::new();
    let start = Instant::now();
    let name = |r: usize| room_of(run, r * room_size, room_size);
    for i in range {
        let path = t.ws_path(&name(i / room_size));
        // --rooms-per-conn K: one multi=1 connection in K rooms of the pool.
        let multi: Option<Vec<String>> = args.rooms_per_conn.map(|k| {
            let pool = args.rooms.max(k);
            crate::multi::rooms_of(i, k, pool)
                .into_iter()
                .map(name)
                .collect()
        });
        let account = accounts.get(i / spu).cloned();
        let (ep, raw, rb, sem, stop) = (
            t.ep.clone(),
            t.raw,
            args.read_buffer,
            sem.clone(),
            stop.clone(),
        );
        connects.spawn(async move {
            let permit = sem.acquire_owned().await?;
            let t0 = Instant::now();
            let ws = match &multi {
                Some(rooms) => {
                    crate::multi::join_multi(&ep, "", account.as_ref(), rb, rooms).await?
                }
                None => net::join(&ep, raw, &path, account.as_ref(), rb).await?,
            };
            let took = t0.elapsed();
            drop(permit);
            // Keep reading (and answering pings) until the end; discard everything.
            let mut ws = ws;
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                }
            });
            anyhow::Ok(took)
        });
    }
    let mut hist = Hist::default();
    let mut failed = 0u64;
    let mut first_err = None;
    while let Some(r) = connects.join_next().await {
        match r.context("connect task")? {
            Ok(d) => hist.record(d.as_nanos() as u64),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(format!("{e:#}"));
            }
        }
    }
    Ok((hist, failed, first_err, start.elapsed().as_secs_f64()))
}
