//! Multi-room connections (`/ws?multi=1`, issue 14): the `multi-rooms`
//! fan-out (N users, each one connection subscribed to K of R rooms, one
//! sender per room) and the connect helper `idle --rooms-per-conn` shares.
//!
//! The pattern is fixed: user `u` is in rooms `(u + j·R/K) mod R`, j < K,
//! so with N·K a multiple of R every room has N·K/R members. Each sender is
//! a single-room connection of its own account (its `saved` receipts go to
//! its own sessions only) and counts its own echo, as in `rooms`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hubbub_client::{Account, Endpoint};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::fanout::{MemberCtx, MemberStats, run_member};
use crate::net::{self, Target, Ws};
use crate::sender::{Measured, SendCfg, measure};
use crate::stats::{Hist, round3};
use crate::{Args, Outcome};

/// The `k` rooms (indices < `pool`) of member `u`: distinct, spread evenly.
pub fn rooms_of(u: usize, k: usize, pool: usize) -> Vec<usize> {
    let stride = (pool / k.max(1)).max(1);
    (0..k.min(pool)).map(|j| (u + j * stride) % pool).collect()
}

/// A multi-room connection (`/ws?multi=1`, plus `extra` query) subscribed
/// to `rooms`: waits for `welcome`, sends every `subscribe` at once, then
/// for each room's `history` (its `subscribed` comes just before).
pub async fn join_multi(
    ep: &Endpoint,
    extra: &str,
    account: Option<&Account>,
    read_buffer: usize,
    rooms: &[String],
) -> anyhow::Result<Ws> {
    let cookie = account.map(Account::cookie_header);
    let path = format!("/ws?multi=1{extra}");
    let mut ws = net::ws_connect(ep, &path, cookie.as_deref(), read_buffer).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut welcomed, mut histories) = (false, 0usize);
    while histories < rooms.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .context("timed out waiting for welcome/subscribed/history")?;
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => bail!("closed on join: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed on join"),
        };
        for s in net::lines(t.as_str()) {
            if !welcomed && s.starts_with("{\"type\":\"welcome\"") {
                welcomed = true;
                for r in rooms {
                    let sub = json!({"type": "subscribe", "room": r});
                    ws.feed(Message::Text(sub.to_string().into())).await?;
                }
                ws.flush().await?;
            } else if s.starts_with("{\"type\":\"history\"") {
                histories += 1;
            } else if s.starts_with("{\"type\":\"error\"") {
                bail!("subscribing: {s}");
            }
        }
    }
    Ok(ws)
}

/// Who a member is: the sender of one room, or a user in several.
enum Role {
    Sender(usize),
    User(Vec<usize>),
}

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    if t.raw {
        bail!("multi-rooms needs hubbub (multi=1)");
    }
    let run = net::run_id();
    let n = args.connections.unwrap_or(1000);
    let k = args.rooms_per_conn.unwrap_or(10).max(1);
    let pool = args.rooms.max(k);
    let rate = args.rate.unwrap_or(1000.0);
    let names: Vec<String> = (0..pool)
        .map(|i| format!("m{:x}-{i}", run & 0xff_ffff))
        .collect();
    let mut roles: Vec<Role> = (0..pool).map(Role::Sender).collect();
    roles.extend((0..n).map(|u| Role::User(rooms_of(u, k, pool))));
    let spu = net::sessions_per_user(args, t);
    let sender_accounts = pool.div_ceil(spu);
    let (accounts, login_s) =
        net::accounts(t, sender_accounts + n.div_ceil(spu), args.concurrency).await?;
    eprintln!(
        "{n} users in {k} of {pool} rooms each + {pool} senders, {} accounts in {login_s:.1}s; connecting",
        accounts.len()
    );
    let batch = if args.no_batch { "" } else { "&batch=1" };
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut connects = JoinSet::new();
    let connect_start = Instant::now();
    for (i, role) in roles.iter().enumerate() {
        let account = match role {
            Role::Sender(r) => accounts.get(r / spu),
            Role::User(_) => accounts.get(sender_accounts + (i - pool) / spu),
        }
        .cloned();
        let (ep, rb, sem) = (t.ep.clone(), args.read_buffer, sem.clone());
        let (path, rooms) = match role {
            Role::Sender(r) => (format!("{}{batch}", t.ws_path(&names[*r])), Vec::new()),
            Role::User(rs) => (
                batch.to_owned(),
                rs.iter().map(|r| names[*r].clone()).collect(),
            ),
        };
        let single = matches!(role, Role::Sender(_));
        connects.spawn(async move {
            let _p = sem.acquire_owned().await?;
            let ws = if single {
                net::join(&ep, false, &path, account.as_ref(), rb).await?
            } else {
                join_multi(&ep, &path, account.as_ref(), rb, &rooms).await?
            };
            anyhow::Ok((i, ws))
        });
    }
    let stop = CancellationToken::new();
    let go = CancellationToken::new();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let live = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.duration);
    let mut readers = JoinSet::new();
    while let Some(r) = connects.join_next().await {
        let (i, ws) = r?.context("connecting a member")?;
        let plan = match roles[i] {
            Role::Sender(r) => Some(SendCfg {
                local: r,
                global: i,
                rate: rate / pool as f64,
                phase: r as f64 / pool as f64,
                size: args.size,
                duration,
                raw: false,
                run,
                go: go.clone(),
                report: report_tx.clone(),
            }),
            Role::User(_) => None,
        };
        let ctx = MemberCtx {
            idx: i,
            raw: false,
            senders: pool,
            stop: stop.clone(),
            live: live.clone(),
        };
        readers.spawn(run_member(ws, ctx, plan));
    }
    drop(report_tx);
    let connect_s = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "connected in {connect_s:.1}s; settling, then {rate:.0} msgs/s for {}s",
        args.duration
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = measure(go, &mut report_rx, pool, duration, &live, t.pid).await;
    stop.cancel();
    let mut stats: Vec<(usize, MemberStats)> = Vec::new();
    while let Some(r) = readers.join_next().await {
        stats.push(r?);
    }
    let head = json!({
        "users": n, "rooms_per_conn": k, "rooms": pool, "members_per_room": n * k / pool,
        "accounts": accounts.len(), "offered_rate": rate, "size": args.size,
        "duration_s": args.duration, "login_s": round3(login_s), "connect_s": round3(connect_s),
    });
    Ok(summarize(&roles, stats, head, m))
}

fn summarize(
    roles: &[Role],
    stats: Vec<(usize, MemberStats)>,
    mut results: serde_json::Value,
    m: Measured,
) -> Outcome {
    let pool = roles
        .iter()
        .filter(|r| matches!(r, Role::Sender(_)))
        .count();
    let rooms = |i: usize| match &roles[i] {
        Role::Sender(r) => vec![*r],
        Role::User(rs) => rs.clone(),
    };
    // A room's message counts as broadcast when any of its members got it.
    let mut broadcast = vec![0u64; pool];
    for (i, s) in &stats {
        for r in rooms(*i) {
            broadcast[r] = broadcast[r].max(s.per_sender[r]);
        }
    }
    let mut hist = Hist::default();
    let (mut delivered, mut expected, mut alive_delivered, mut last_ns) = (0u64, 0u64, 0u64, 0u64);
    let (mut evicted, mut closed_other, mut errors) = (0u64, 0u64, 0u64);
    for (i, s) in &stats {
        hist.merge(&s.hist);
        delivered += s.delivered;
        last_ns = last_ns.max(s.last_ns);
        errors += s.rate_limited + s.unavailable + s.other_errors;
        match s.ended {
            Some(Some(4002)) => evicted += 1,
            Some(_) => closed_other += 1,
            None => {
                expected += rooms(*i).iter().map(|r| broadcast[*r]).sum::<u64>();
                alive_delivered += s.delivered;
            }
        }
    }
    let lost = expected.saturating_sub(alive_delivered);
    let window = last_ns.saturating_sub(m.start_ns) as f64 / 1e9;
    let dps = if window > 0.0 {
        delivered as f64 / window
    } else {
        0.0
    };
    let cpu_s = m.cpu["server_cpu_s"].as_f64().filter(|s| *s > 0.0);
    let cpu_per_m = cpu_s
        .filter(|_| delivered > 0)
        .map(|s| round3(s / delivered as f64 * 1e6));
    let total_broadcast: u64 = broadcast.iter().sum();
    let more = json!({
        "sent": m.sent, "send_s": round3(m.send_s), "broadcast": total_broadcast,
        "deliveries": delivered, "deliveries_per_sec": dps.round(),
        "expected_deliveries": expected, "lost": lost,
        "loss_ratio": if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
        "evicted": evicted, "closed_other": closed_other, "errors": errors,
        "latency": hist.json_ms(), "cpu": m.cpu,
        "server_cpu_s_per_million_deliveries": cpu_per_m,
    });
    if let (Some(r), Some(o)) = (results.as_object_mut(), more.as_object()) {
        r.extend(o.clone());
    }
    let summary = format!(
        "multi-rooms: {} users x {} rooms (of {pool}), sent {} broadcast {total_broadcast}\n\
         deliveries {delivered} ({dps:.0}/s), lost {lost} of {expected}, evicted {evicted}, other closes {closed_other}, errors {errors}\n\
         latency {}\nserver CPU s per million deliveries {cpu_per_m:?}; cpu {}",
        results["users"],
        results["rooms_per_conn"],
        m.sent,
        hist.short(),
        m.cpu
    );
    (results, summary)
}

#[cfg(test)]
mod tests {
    use super::rooms_of;

    /// Every member in K distinct rooms, every room with N·K/R members.
    #[test]
    fn the_pattern_is_even() {
        let (n, k, pool) = (1000, 10, 100);
        let mut per_room = vec![0; pool];
        for u in 0..n {
            let mut rs = rooms_of(u, k, pool);
            rs.sort_unstable();
            rs.dedup();
            assert_eq!(rs.len(), k);
            for r in rs {
                per_room[r] += 1;
            }
        }
        assert!(per_room.iter().all(|c| *c == n * k / pool));
    }
}
