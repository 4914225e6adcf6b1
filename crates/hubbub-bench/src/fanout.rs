//! `fanout` (one room, N receivers, S senders) and `rooms` (many rooms of K
//! members, one sender each): deliveries/s, loss, evictions, latency.
//!
//! Every member (senders included: they get their own messages back) reads
//! on its own task and records send→receive latency from the `t=` stamp in
//! the content. A message counts as broadcast when any member of its room
//! received it; loss is what the members still connected at the end missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::net::{self, Target, Ws};
use crate::sender::{SendCfg, Sending, measure, stamp};
use crate::stats::{Hist, now_ns, round3};
use crate::{Args, Outcome, Scenario};

struct Group {
    room: String,
    receivers: usize,
    senders: usize,
}

#[derive(Default)]
pub(crate) struct MemberStats {
    pub(crate) hist: Hist,
    /// Messages received from each sender of the member's group.
    pub(crate) per_sender: Vec<u64>,
    pub(crate) delivered: u64,
    pub(crate) last_ns: u64,
    /// Ended before the stop signal, with this close code (None: no code).
    pub(crate) ended: Option<Option<u16>>,
    pub(crate) rate_limited: u64,
    pub(crate) unavailable: u64,
    pub(crate) other_errors: u64,
}

impl MemberStats {
    /// Counts one received message (`s`, a line) received at `now`; true
    /// for a delivery (a stamped chat).
    fn count(&mut self, s: &str, raw: bool, now: u64) -> bool {
        let body = if raw || s.starts_with("{\"type\":\"chat\"") {
            stamp(s)
        } else {
            if s.starts_with("{\"type\":\"error\"") {
                if s.contains("\"rate_limited\"") {
                    self.rate_limited += 1;
                } else if s.contains("\"unavailable\"") {
                    self.unavailable += 1;
                } else {
                    self.other_errors += 1;
                }
            }
            None
        };
        let Some((sent, from)) = body else {
            return false;
        };
        self.hist.record(now.saturating_sub(sent));
        self.last_ns = now;
        self.delivered += 1;
        if let Some(c) = self.per_sender.get_mut(from as usize) {
            *c += 1;
        }
        true
    }
}

struct Member {
    group: usize,
    sender: Option<usize>,
}

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let run = net::run_id();
    let (groups, rate) = match args.scenario {
        Scenario::Rooms => {
            let k = args.room_size.unwrap_or(10).max(2);
            let groups = (0..args.rooms.max(1))
                .map(|i| Group {
                    room: format!("r{:x}-{i}", run & 0xff_ffff),
                    receivers: k - 1,
                    senders: 1,
                })
                .collect::<Vec<_>>();
            (groups, args.rate.unwrap_or(10.0 * args.rooms.max(1) as f64))
        }
        _ => {
            let g = Group {
                room: format!("fan{:x}", run & 0xff_ffff),
                receivers: args.connections.unwrap_or(1000),
                senders: args.senders.unwrap_or(1).max(1),
            };
            (vec![g], args.rate.unwrap_or(1000.0))
        }
    };
    let mut members = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        members.extend((0..g.senders).map(|s| Member {
            group: gi,
            sender: Some(s),
        }));
        members.extend((0..g.receivers).map(|_| Member {
            group: gi,
            sender: None,
        }));
    }
    let total_senders: usize = groups.iter().map(|g| g.senders).sum();
    let spu = net::sessions_per_user(args, t);
    // Senders get accounts of their own: `saved` receipts go to every session
    // of the sender's account in the room, so a receiver sharing it would get
    // two frames per message and be the first evicted.
    let sender_accounts = total_senders.div_ceil(spu);
    let receivers_total = members.len() - total_senders;
    let (accounts, login_s) = net::accounts(
        t,
        sender_accounts + receivers_total.div_ceil(spu),
        args.concurrency,
    )
    .await?;
    let (mut nth_sender, mut nth_receiver) = (0usize, 0usize);
    let account_of: Vec<usize> = members
        .iter()
        .map(|m| {
            if m.sender.is_some() {
                nth_sender += 1;
                (nth_sender - 1) / spu
            } else {
                nth_receiver += 1;
                sender_accounts + (nth_receiver - 1) / spu
            }
        })
        .collect();
    eprintln!(
        "{} members in {} room(s), {} accounts in {login_s:.1}s; connecting",
        members.len(),
        groups.len(),
        accounts.len()
    );

    // Connect everyone; each member's task starts reading at once so join
    // chatter never piles up. A sender reads and writes on the same task (no
    // split lock between a reading and a writing half), as a browser tab would.
    let stop = CancellationToken::new();
    let go = CancellationToken::new();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let live = Arc::new(AtomicU64::new(0));
    let groups = Arc::new(groups);
    let connect_start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let per_sender = rate / total_senders as f64;
    let mut readers = JoinSet::new();
    let mut connected = 0usize;
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut connects = JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let room = groups[m.group].room.clone();
        let account = accounts.get(account_of[i]).cloned();
        let sem = sem.clone();
        let mut path = t.ws_path(&room);
        if !t.raw && !args.no_batch {
            path.push_str("&batch=1");
        }
        let (rb, ep, raw) = (args.read_buffer, t.ep.clone(), t.raw);
        connects.spawn(async move {
            let _p = sem.acquire_owned().await?;
            let ws = net::join(&ep, raw, &path, account.as_ref(), rb).await?;
            anyhow::Ok((i, ws))
        });
    }
    while let Some(r) = connects.join_next().await {
        let (i, ws) = r?.context("connecting a member")?;
        let n = groups[members[i].group].senders;
        let plan = members[i].sender.map(|s| SendCfg {
            local: s,
            global: i,
            rate: per_sender,
            phase: i as f64 / total_senders as f64,
            size: args.size,
            duration,
            raw: t.raw,
            run,
            go: go.clone(),
            report: report_tx.clone(),
        });
        let ctx = MemberCtx {
            idx: i,
            raw: t.raw,
            senders: n,
            stop: stop.clone(),
            live: live.clone(),
        };
        readers.spawn(run_member(ws, ctx, plan));
        connected += 1;
    }
    drop(report_tx);
    let connect_s = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "connected {} in {connect_s:.1}s; settling, then {:.0} msgs/s for {}s",
        connected, rate, args.duration
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let m = measure(go, &mut report_rx, total_senders, duration, &live, t.pid).await;
    stop.cancel();
    let mut stats: Vec<(usize, MemberStats)> = Vec::new();
    while let Some(r) = readers.join_next().await {
        stats.push(r?);
    }
    Ok(summarize(
        args,
        &groups,
        &members,
        stats,
        Totals {
            rate,
            sent: m.sent,
            send_s: m.send_s,
            measure_start: m.start_ns,
            connect_s,
            login_s,
            accounts: accounts.len(),
            cpu: m.cpu,
        },
    ))
}

pub(crate) struct MemberCtx {
    pub(crate) idx: usize,
    pub(crate) raw: bool,
    pub(crate) senders: usize,
    pub(crate) stop: CancellationToken,
    pub(crate) live: Arc<AtomicU64>,
}

pub(crate) async fn run_member(
    mut ws: Ws,
    c: MemberCtx,
    plan: Option<SendCfg>,
) -> (usize, MemberStats) {
    let MemberCtx {
        idx,
        raw,
        senders,
        stop,
        live,
    } = c;
    let mut st = MemberStats {
        per_sender: vec![0; senders],
        ..Default::default()
    };
    let mut sender = plan.map(Sending::new);
    let go = sender
        .as_ref()
        .map_or_else(CancellationToken::new, |s| s.cfg.go.clone());
    let go_signal = go.cancelled();
    tokio::pin!(go_signal);
    let mut unpublished = 0u64;
    // One `Notified` for the whole loop: a fresh one per frame shows in profiles.
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    loop {
        let sending = sender
            .as_ref()
            .is_some_and(|s| s.start.is_some() && !s.done);
        let waiting = sender.as_ref().is_some_and(|s| s.start.is_none());
        let m = tokio::select! {
            _ = &mut cancelled => break,
            _ = &mut go_signal, if waiting => {
                if let Some(s) = sender.as_mut() {
                    s.begin();
                }
                continue;
            }
            _ = tick_of(&mut sender), if sending => {
                if let Some(s) = sender.as_mut()
                    && s.send_due(&mut ws).await.is_err()
                {
                    st.ended = Some(None);
                    break;
                }
                continue;
            }
            m = ws.next() => m,
        };
        let text = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                st.ended = Some(f.map(|f| u16::from(f.code)));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                st.ended = Some(None);
                break;
            }
        };
        // batch=1 (hubbub) or a peer that joins its queue (the Go hub): one
        // message per line. Our JSON and the raw peers' payloads hold no raw newline.
        let now = now_ns();
        for s in net::lines(text.as_str()) {
            if st.count(s, raw, now) {
                unpublished += 1;
            }
        }
        if unpublished >= 64 {
            live.fetch_add(unpublished, Ordering::Relaxed);
            unpublished = 0;
        }
    }
    live.fetch_add(unpublished, Ordering::Relaxed);
    if let Some(s) = sender
        && !s.done
    {
        let _ = s.cfg.report.send(s.seq);
    }
    (idx, st)
}

async fn tick_of(s: &mut Option<Sending>) {
    if let Some(s) = s {
        s.tick.tick().await;
    }
}

struct Totals {
    rate: f64,
    sent: u64,
    send_s: f64,
    measure_start: u64,
    connect_s: f64,
    login_s: f64,
    accounts: usize,
    cpu: serde_json::Value,
}

fn summarize(
    args: &Args,
    groups: &[Group],
    members: &[Member],
    stats: Vec<(usize, MemberStats)>,
    t: Totals,
) -> Outcome {
    let mut hist = Hist::default();
    let (mut delivered, mut expected, mut broadcast) = (0u64, 0u64, 0u64);
    let (mut evicted, mut replaced, mut closed_other) = (0u64, 0u64, 0u64);
    let (mut rl, mut unavail, mut other_err, mut last_ns) = (0u64, 0u64, 0u64, 0u64);
    let mut senders_closed = 0u64;
    let mut by_group: Vec<Vec<&MemberStats>> = groups.iter().map(|_| Vec::new()).collect();
    for (i, s) in &stats {
        by_group[members[*i].group].push(s);
        hist.merge(&s.hist);
        delivered += s.delivered;
        last_ns = last_ns.max(s.last_ns);
        rl += s.rate_limited;
        unavail += s.unavailable;
        other_err += s.other_errors;
        if s.ended.is_some() && members[*i].sender.is_some() {
            senders_closed += 1;
        }
        match s.ended {
            Some(Some(4002)) => evicted += 1,
            Some(Some(4001)) => replaced += 1,
            Some(_) => closed_other += 1,
            None => {}
        }
    }
    let mut alive_delivered = 0u64;
    for (g, ms) in groups.iter().zip(&by_group) {
        let per: Vec<u64> = (0..g.senders)
            .map(|s| ms.iter().map(|m| m.per_sender[s]).max().unwrap_or(0))
            .collect();
        let b: u64 = per.iter().sum();
        broadcast += b;
        let alive = ms.iter().filter(|m| m.ended.is_none());
        for m in alive {
            expected += b;
            alive_delivered += m.delivered;
        }
    }
    let lost = expected.saturating_sub(alive_delivered);
    let window = (last_ns.saturating_sub(t.measure_start)) as f64 / 1e9;
    let dps = if window > 0.0 {
        delivered as f64 / window
    } else {
        0.0
    };
    let receivers: usize = groups.iter().map(|g| g.receivers).sum();
    let senders: usize = groups.iter().map(|g| g.senders).sum();
    let results = json!({
        "rooms": groups.len(),
        "receivers": receivers,
        "senders": senders,
        "members": members.len(),
        "accounts": t.accounts,
        "offered_rate": t.rate,
        "size": args.size,
        "duration_s": args.duration,
        "sent": t.sent,
        "send_s": round3(t.send_s),
        "broadcast": broadcast,
        "not_broadcast": t.sent.saturating_sub(broadcast),
        "broadcast_per_sec": round3(broadcast as f64 / t.send_s.max(1e-9)),
        "deliveries": delivered,
        "deliveries_per_sec": dps.round(),
        "expected_deliveries": expected,
        "lost": lost,
        "loss_ratio": if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
        "evicted": evicted,
        "senders_closed": senders_closed,
        "replaced": replaced,
        "closed_other": closed_other,
        "errors": {"rate_limited": rl, "unavailable": unavail, "other": other_err},
        "latency": hist.json_ms(),
        "login_s": round3(t.login_s),
        "connect_s": round3(t.connect_s),
        "cpu": t.cpu,
        "deliveries_per_server_cpu_s": t.cpu["server_cpu_s"]
            .as_f64()
            .filter(|s| *s > 0.0)
            .map(|s| (delivered as f64 / s).round()),
    });
    let summary = format!(
        "{} rooms, {} receivers + {} senders, offered {:.0} msgs/s x {} B for {}s\n\
         sent {} broadcast {} ({:.0}/s) deliveries {} ({:.0}/s)\n\
         lost {} of {} expected, evicted {} (senders closed: {senders_closed}), other closes {}, errors rl/unavail/other {}/{}/{}\n\
         latency {}\n\
         cpu: {}",
        groups.len(),
        receivers,
        senders,
        t.rate,
        args.size,
        args.duration,
        t.sent,
        broadcast,
        broadcast as f64 / t.send_s.max(1e-9),
        delivered,
        dps,
        lost,
        expected,
        evicted,
        closed_other + replaced,
        rl,
        unavail,
        other_err,
        hist.short(),
        t.cpu
    );
    (results, summary)
}

#[cfg(test)]
mod tests {
    use super::MemberStats;

    /// A batched text frame (hubbub's `batch=1`, the Go hub's joined queue)
    /// is one delivery per line, errors counted as such.
    #[test]
    fn every_line_of_a_joined_frame_counts() {
        let chat = |t: u64| {
            format!(r#"{{"type":"chat","id":"x","content":"t={t} s=0 pad","cursor":"a"}}"#)
        };
        let frame = [
            chat(10),
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#.to_owned(),
            chat(20),
            r#"{"type":"presence","room":"r","users":[],"count":0}"#.to_owned(),
            chat(30),
        ]
        .join("\n");
        let mut st = MemberStats {
            per_sender: vec![0],
            ..Default::default()
        };
        let counted = frame
            .split('\n')
            .filter(|l| st.count(l, false, 100))
            .count();
        assert_eq!((counted, st.delivered, st.per_sender[0]), (3, 3, 3));
        assert_eq!(st.rate_limited, 1);
        // Raw mode: the Go hub's newline-joined payloads.
        let raw = "t=1 s=0 a\nt=2 s=0 b";
        let mut st = MemberStats {
            per_sender: vec![0],
            ..Default::default()
        };
        assert_eq!(raw.split('\n').filter(|l| st.count(l, true, 5)).count(), 2);
    }
}
