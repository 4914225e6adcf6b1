//! `fuzz`: N hostile connections send random and mutated frames (wrong types,
//! huge numbers, deep nesting, invalid UTF-8, binary, fragments, oversize,
//! broken framing, control frames) until `--frames` raw frames went out, and
//! check that each got the answer docs/PROTOCOL.md documents; meanwhile a
//! well-behaved pair chats and every message must arrive. Reports frames/s,
//! the outcome counts, the pair's latency idle vs. under fuzz, healthz and RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hubbub_client::hostile::calm::{Calm, Pair};
use hubbub_client::hostile::drive::{self, Settings, Tally};
use serde_json::json;

use crate::net::{self, CpuMeter, Target};
use crate::stats::round3;
use crate::{Args, Outcome};

/// The well-behaved pair sends one message per this interval.
const CALM_EVERY: Duration = Duration::from_millis(20);
/// Messages the pair exchanges before the fuzz starts (the idle baseline).
const CALM_IDLE: u64 = 250;
/// How long one message (or one round of answers) may take before it counts as lost.
const WAIT: Duration = Duration::from_secs(20);

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    if t.raw {
        bail!("fuzz needs hubbub (it checks hubbub's documented answers)");
    }
    let n = args.connections.unwrap_or(16).max(1);
    let run = net::run_id();
    let (accounts, login_s) = net::accounts(t, n + 2, args.concurrency).await?;
    let (fuzzers, pair) = accounts.split_at(n);
    let mut calm = Pair::join(
        &t.ep,
        &pair[0],
        &pair[1],
        &format!("calm-{}", run % 1_000_000),
    )
    .await
    .context("joining the well-behaved pair")?;
    eprintln!(
        "{} accounts in {login_s:.1}s; idle baseline: {CALM_IDLE} messages",
        accounts.len()
    );
    let never = Arc::new(AtomicBool::new(false));
    let idle = calm.chat(CALM_EVERY, Some(CALM_IDLE), &never, WAIT).await;

    let settings = Settings {
        frames: args.frames,
        // Leave time for the report inside --max-secs.
        max_time: Duration::from_secs(args.max_secs.saturating_sub(60).max(10)),
        round: 32,
        close_chance: 0.05,
        answer_timeout: WAIT,
        seed: args.seed,
        room_prefix: format!("fz{}-", run % 1_000_000),
    };
    eprintln!(
        "fuzzing with {n} connections, {} frames, seed {}",
        settings.frames, settings.seed
    );
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let stop = stop.clone();
        tokio::spawn(async move { calm.chat(CALM_EVERY, None, &stop, WAIT).await })
    };
    let cpu = CpuMeter::start(t.pid);
    let start = Instant::now();
    let tally = drive::run(&t.ep, fuzzers, &settings).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.json();
    stop.store(true, Ordering::Relaxed);
    let during = during.await.context("well-behaved pair task")?;
    let health = hubbub_client::request(&t.ep, "GET", "/healthz", &[], None)
        .await
        .map(|r| r.status)
        .ok();
    let rss = t.pid.and_then(net::rss_kib);

    let fps = tally.frames as f64 / secs.max(1e-9);
    let ok = tally.mismatches == 0
        && tally.lost_close_replies == 0
        && during.missing == 0
        && idle.missing == 0
        && health == Some(200);
    let results = json!({
        "connections": n,
        "seed": args.seed,
        "frames_per_s": round3(fps),
        "cases_per_s": round3(tally.cases as f64 / secs.max(1e-9)),
        "fuzz_s": round3(secs),
        "fuzz": tally.json(),
        "calm_idle": idle.json(),
        "calm_during_fuzz": during.json(),
        "healthz_after": health,
        "server_rss_kib_after": rss,
        "cpu": cpu,
        "pass": ok,
    });
    let summary = summary(&tally, secs, n, &idle, &during, health, rss, ok);
    Ok((results, summary))
}

/// The human summary on stderr.
#[allow(clippy::too_many_arguments)]
fn summary(
    tally: &Tally,
    secs: f64,
    n: usize,
    idle: &Calm,
    during: &Calm,
    health: Option<u16>,
    rss: Option<u64>,
    ok: bool,
) -> String {
    let fps = tally.frames as f64 / secs.max(1e-9);
    let q = |c: &Calm, x: f64| c.quantile(x).map_or("-".into(), |v| format!("{v:.1}"));
    format!(
        "fuzz: {} frames ({} cases) in {secs:.1}s = {fps:.0} frames/s over {n} connections, {} reconnects\n\
         answers: {:?}\n\
         mismatches: {} {:?}; client closes without a reply: {}\n\
         well-behaved pair: idle p50 {} / p99 {} ms ({} msgs, {} missing); during fuzz p50 {} / p99 {} ms ({} msgs, {} missing)\n\
         healthz after: {health:?}; server RSS after: {rss:?} KiB; {}",
        tally.frames,
        tally.cases,
        tally.connects,
        tally.answers,
        tally.mismatches,
        tally.samples.iter().take(5).collect::<Vec<_>>(),
        tally.lost_close_replies,
        q(idle, 0.5),
        q(idle, 0.99),
        idle.sent,
        idle.missing,
        q(during, 0.5),
        q(during, 0.99),
        during.sent,
        during.missing,
        if ok { "PASS" } else { "FAIL" },
    )
}
