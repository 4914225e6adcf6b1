//! Load on a cluster or on the single-node baseline: send→receive latency
//! (same node and across nodes), fan-out over the nodes, and send→`saved`
//! at an offered rate or closed loop with the senders spread over the nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hubbub_client::protocol::ClientMsg;
use hubbub_client::{Account, Endpoint, frames};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Args;
use crate::durable::{PhaseStats, every_sender};
use crate::net::{self, Ws};
use crate::sender::stamp;
use crate::stats::{Hist, now_ns, padded, round3};

/// How long receivers wait for the last deliveries after the sender stops.
const DRAIN: Duration = Duration::from_secs(5);

/// `n` accounts `bench_<i>` signed up (or in) at `ep`.
pub async fn accounts(args: &Args, ep: &Endpoint, n: usize) -> anyhow::Result<Vec<Account>> {
    let t = net::Target::at(ep.clone());
    Ok(net::accounts(&t, n, args.concurrency).await?.0)
}

/// Joins like [`net::join`] at `ep` itself (placed there with `from=`, see
/// [`net::placed`]: the measurements put sessions on chosen nodes), retried
/// for up to 10 s: an account signed up at n1 is refused (401) by a node
/// that has not applied its entry yet.
pub(super) async fn join(
    ep: &Endpoint,
    path: &str,
    a: Option<&Account>,
    rb: usize,
) -> anyhow::Result<Ws> {
    let t0 = std::time::Instant::now();
    loop {
        let r = match net::placed(ep, path, a).await {
            Ok(p) => net::join(ep, false, &p, a, rb).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(ws) => return Ok(ws),
            Err(e) if t0.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// What one receiver saw.
#[derive(Default)]
struct Recv {
    hist: Hist,
    delivered: u64,
    closed: Option<String>,
}

async fn receive(mut ws: Ws, stop: CancellationToken, live: Arc<AtomicU64>) -> Recv {
    let mut r = Recv::default();
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => break,
            m = ws.next() => m,
        };
        let text = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                r.closed = Some(format!("{:?}", f.map(|f| u16::from(f.code))));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                r.closed = Some(e.to_string());
                break;
            }
            None => {
                r.closed = Some("eof".into());
                break;
            }
        };
        let s = text.as_str();
        if !s.starts_with("{\"type\":\"chat\"") {
            continue;
        }
        if let Some((sent, _)) = stamp(s) {
            r.hist.record(now_ns().saturating_sub(sent));
            r.delivered += 1;
            live.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(None).await;
    r
}

/// Sends chat at `rate` msgs/s for `dur` (draining what comes back); returns the count sent.
async fn send_at(mut ws: Ws, rate: f64, dur: Duration, size: usize) -> anyhow::Result<u64> {
    let start = tokio::time::Instant::now();
    let end = start + dur;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= end { break; }
                let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                while sent < due {
                    let content = padded(format!("t={} s=0 ", now_ns()), size);
                    let f = frames::encode(&ClientMsg::Chat { id: Uuid::new_v4(), content });
                    ws.feed(Message::Text(f.into())).await.context("sending")?;
                    sent += 1;
                }
                ws.flush().await.context("sending")?;
            }
            m = ws.next() => if m.is_none() { anyhow::bail!("the sender's socket closed") },
        }
    }
    let _ = ws.close(None).await;
    Ok(sent)
}

/// One room: receivers `recv_eps` (label, endpoint) joined, one sender on
/// `send_ep` at `rate` for `dur`. Latency per label, deliveries, loss.
pub async fn fan(
    args: &Args,
    send_ep: &Endpoint,
    recv_eps: &[(String, Endpoint)],
    rate: f64,
    dur: Duration,
) -> anyhow::Result<Value> {
    let spu = args.sessions_per_user.unwrap_or(50).max(1);
    let accts = accounts(args, send_ep, (recv_eps.len() + 1).div_ceil(spu)).await?;
    let room = format!("/ws?room=clfan{:x}", net::run_id() & 0xff_ffff);
    let (stop, live) = (CancellationToken::new(), Arc::new(AtomicU64::new(0)));
    let mut recvs = start_receivers(args, &accts, recv_eps, &room, &stop, &live).await?;
    let a = accts.get(recv_eps.len() / spu).cloned();
    let sws = join(send_ep, &room, a.as_ref(), args.read_buffer).await?;
    eprintln!(
        "  {} receivers joined; sending {rate}/s for {dur:?}",
        recv_eps.len()
    );
    let cpu = net::CpuMeter::start(None);
    let sent = send_at(sws, rate, dur, args.size).await?;
    let in_window = live.load(Ordering::Relaxed);
    let want = sent * recv_eps.len() as u64;
    let t0 = std::time::Instant::now();
    while live.load(Ordering::Relaxed) < want && t0.elapsed() < DRAIN {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let mut by: std::collections::BTreeMap<String, Hist> = Default::default();
    let (mut all, mut delivered, mut closed) = (Hist::default(), 0u64, Vec::new());
    while let Some(r) = recvs.join_next().await {
        let (label, r) = r?;
        all.merge(&r.hist);
        by.entry(label).or_default().merge(&r.hist);
        delivered += r.delivered;
        closed.extend(r.closed);
    }
    closed.truncate(5);
    let by: serde_json::Map<String, Value> =
        by.into_iter().map(|(k, h)| (k, h.json_ms())).collect();
    Ok(json!({
        "receivers": recv_eps.len(),
        "offered_rate": rate,
        "sent": sent,
        "delivered": delivered,
        "deliveries_per_sec_in_window": (in_window as f64 / dur.as_secs_f64()).round(),
        "lost": want.saturating_sub(delivered),
        "loss_pct": if want > 0 { round3(100.0 * want.saturating_sub(delivered) as f64 / want as f64) } else { 0.0 },
        "closed_receivers_sample": closed,
        "latency_ms": all.json_ms(),
        "latency_ms_by_node": Value::Object(by),
        "bench_cpu": cpu.json()["bench_cores"],
    }))
}

/// Joins every receiver of `recv_eps` to `room`, then lets them read
/// until `stop`; each ends with its label and what it saw.
async fn start_receivers(
    args: &Args,
    accts: &[Account],
    recv_eps: &[(String, Endpoint)],
    room: &str,
    stop: &CancellationToken,
    live: &Arc<AtomicU64>,
) -> anyhow::Result<JoinSet<(String, Recv)>> {
    let spu = args.sessions_per_user.unwrap_or(50).max(1);
    let mut set = JoinSet::new();
    for (i, (label, ep)) in recv_eps.iter().enumerate() {
        let a = accts.get(i / spu).cloned();
        let (ep, room, label, rb) = (ep.clone(), room.to_owned(), label.clone(), args.read_buffer);
        set.spawn(async move {
            let ws = join(&ep, &room, a.as_ref(), rb).await?;
            anyhow::Ok((label, ws))
        });
    }
    let mut recvs = JoinSet::new();
    while let Some(r) = set.join_next().await {
        let (label, ws) = r?.context("joining a receiver")?;
        let (stop, live) = (stop.clone(), live.clone());
        recvs.spawn(async move { (label, receive(ws, stop, live).await) });
    }
    Ok(recvs)
}

/// S senders, each alone in its own room, spread round-robin over `eps`:
/// send→`saved` at each offered rate in `rates` (0 = closed loop, `--window`).
pub async fn saved(
    args: &Args,
    eps: &[Endpoint],
    senders: usize,
    rates: &[f64],
    pids: &[u32],
) -> anyhow::Result<Value> {
    let spu = args.sessions_per_user.unwrap_or(50).max(1);
    let accts = accounts(args, &eps[0], senders.div_ceil(spu)).await?;
    let run = net::run_id();
    let mut wss = Vec::new();
    for i in 0..senders {
        let path = format!("/ws?room=cldur{:x}-{i}", run & 0xff_ffff);
        let ep = &eps[i % eps.len()];
        let a = accts.get(i / spu);
        wss.push((i, join(ep, &path, a, args.read_buffer).await?));
    }
    let mut seqs = vec![0u64; senders];
    let mut out = serde_json::Map::new();
    for &rate in rates {
        let cpu0: Vec<Option<f64>> = pids.iter().map(|p| net::cpu_secs(Some(*p))).collect();
        let wall = std::time::Instant::now();
        let (all, closed) = every_sender(args, &mut wss, &mut seqs, run, rate).await?;
        let w = wall.elapsed().as_secs_f64();
        let cores: Vec<Option<f64>> = pids
            .iter()
            .zip(cpu0)
            .map(|(p, a)| Some(round3((net::cpu_secs(Some(*p))? - a?) / w)))
            .collect();
        let name = if rate > 0.0 {
            format!("rate_{rate}")
        } else {
            "max".into()
        };
        eprintln!(
            "  {name}: sent {} saved {} ({:.0}/s in window) unavailable {} unsaved {} closed {} (code {:?}) send->saved {}",
            all.sent,
            all.saved,
            all.saved_in_window as f64 / args.duration,
            all.unavailable,
            all.unsaved,
            closed,
            all.close_code,
            all.hist.short()
        );
        let mut v = rate_json(args, &all, rate, closed);
        v["server_cores_per_node"] = json!(cores);
        out.insert(name, v);
    }
    out.insert("senders".into(), json!(senders));
    Ok(Value::Object(out))
}

fn rate_json(args: &Args, all: &PhaseStats, rate: f64, closed: u64) -> Value {
    json!({
        "offered_rate": rate,
        "window": if rate > 0.0 { None } else { Some(args.window) },
        "sent": all.sent,
        "saved": all.saved,
        "saved_per_sec": (all.saved_in_window as f64 / args.duration).round(),
        "unavailable": all.unavailable,
        "rate_limited": all.rate_limited,
        "other_errors": all.other_errors,
        "unsaved": all.unsaved,
        "closed_senders": closed,
        "close_code": all.close_code,
        "send_to_saved": all.hist.json_ms(),
    })
}
