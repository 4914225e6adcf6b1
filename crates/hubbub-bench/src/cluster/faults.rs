//! Faults on a three-node cluster: leader kills (time until a write is
//! `saved` again), node kills (time until the survivors show it dead), and
//! the idle gossip traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hubbub_client::Account;
use hubbub_client::frames;
use hubbub_client::protocol::ClientMsg;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::load;
use super::nodes::{self, Node};
use crate::Args;
use crate::net;
use crate::stats::{now_ns, round3};

/// The longest a failover or a detection may take before the run gives up.
const LIMIT: Duration = Duration::from_secs(60);
/// Probe writes go out this often during a failover.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// min/median/max of seconds, and every sample.
pub fn spread(xs: &[f64]) -> Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let ms = |x: f64| round3(x * 1000.0);
    json!({
        "n": v.len(),
        "min_ms": v.first().copied().map(ms),
        "median_ms": (!v.is_empty()).then(|| ms(v[v.len() / 2])),
        "max_ms": v.last().copied().map(ms),
        "all_ms": v.iter().map(|x| ms(*x)).collect::<Vec<_>>(),
    })
}

fn https(nodes: &[Node]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.http).collect()
}

/// Restarts `nodes[i]` (same name and data dir) seeded with the others.
pub(super) async fn restart(
    args: &Args,
    bin: &Path,
    root: &Path,
    nodes: &mut [Node],
    i: usize,
) -> anyhow::Result<()> {
    let seeds: Vec<SocketAddr> = nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, n)| n.cluster)
        .collect();
    let name = nodes[i].name.clone();
    nodes[i] = nodes::spawn(args, bin, root, &name, Some(&seeds)).await?;
    nodes::wait_formed(&https(nodes)).await?;
    Ok(())
}

/// Kills the leader `kills` times; each time, how long until a chat message
/// sent after the kill to a survivor is `saved`.
pub async fn failover(
    args: &Args,
    bin: &Path,
    root: &Path,
    nodes: &mut [Node],
    acct: &Account,
) -> anyhow::Result<Value> {
    let mut times = Vec::new();
    for k in 0..args.kills {
        let leader = nodes::wait_formed(&https(nodes)).await?;
        let li = nodes
            .iter()
            .position(|n| n.name == leader)
            .context("leader not among the nodes")?;
        let si = (li + 1) % nodes.len();
        let probe = nodes[si].ep();
        let room = format!("/ws?room=clfail{:x}", net::run_id() & 0xff_ffff);
        let mut ws = load::join(&probe, &room, Some(acct), args.read_buffer).await?;
        nodes[li].kill9().await;
        let killed = now_ns();
        let t = loop {
            match probe_until_saved(&mut ws, killed).await {
                Ok(t) => break t,
                Err(e) => {
                    if Duration::from_nanos(now_ns() - killed) > LIMIT {
                        bail!("no write saved within {LIMIT:?} of killing the leader: {e}");
                    }
                    // The survivor closed the session (no leader for long): come back.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if let Ok(w) = load::join(&probe, &room, Some(acct), args.read_buffer).await {
                        ws = w;
                    }
                }
            }
        };
        eprintln!(
            "  kill {}: leader {leader} killed, a write saved on {} after {:.0} ms",
            k + 1,
            nodes[si].name,
            t * 1000.0
        );
        times.push(t);
        let _ = ws.close(None).await;
        restart(args, bin, root, nodes, li).await?;
    }
    Ok(spread(&times))
}

/// Sends a chat message every 10 ms; seconds from `killed` to the first
/// `saved` receipt of a message sent after it. An error when the socket ends.
async fn probe_until_saved(ws: &mut net::Ws, killed: u64) -> anyhow::Result<f64> {
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let deadline = Instant::now() + LIMIT;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() > deadline { bail!("timed out"); }
                let id = Uuid::new_v4();
                let f = frames::encode(&ClientMsg::Chat { id, content: "failover probe".into() });
                sent.insert(id.to_string(), now_ns());
                ws.send(Message::Text(f.into())).await?;
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("closed"),
                };
                let s = text.as_str();
                if !(s.starts_with("{\"type\":\"receipt\"") && s.contains("\"saved\"")) {
                    continue;
                }
                let Some(i) = s.find("\"id\":\"").map(|i| i + 6) else { continue };
                if let Some(at) = s.get(i..i + 36).and_then(|id| sent.get(id))
                    && *at >= killed
                {
                    return Ok((now_ns() - killed) as f64 / 1e9);
                }
            }
        }
    }
}

/// Kills n3, n2, n1, n3… `kills` times; each time, how long until every
/// survivor's /api/admin/cluster shows it `live: false`.
pub async fn detection(
    args: &Args,
    bin: &Path,
    root: &Path,
    nodes: &mut [Node],
) -> anyhow::Result<Value> {
    let (mut last, mut each) = (Vec::new(), Vec::new());
    for k in 0..args.kills {
        nodes::wait_formed(&https(nodes)).await?;
        let vi = nodes.len() - 1 - k % nodes.len();
        let victim = nodes[vi].name.clone();
        let survivors: Vec<SocketAddr> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != vi)
            .map(|(_, n)| n.http)
            .collect();
        nodes[vi].kill9().await;
        let killed = Instant::now();
        let mut seen: Vec<Option<f64>> = vec![None; survivors.len()];
        while seen.iter().any(Option::is_none) {
            if killed.elapsed() > LIMIT {
                bail!("{victim} not marked dead within {LIMIT:?}");
            }
            for (a, s) in survivors.iter().zip(seen.iter_mut()) {
                if s.is_some() {
                    continue;
                }
                let st = nodes::status(*a).await?;
                let dead = st["members"].as_array().is_some_and(|m| {
                    m.iter()
                        .any(|m| m["node"] == victim.as_str() && m["live"] == false)
                });
                if dead {
                    *s = Some(killed.elapsed().as_secs_f64());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got: Vec<f64> = seen.into_iter().flatten().collect();
        let worst = got.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "  kill {}: {victim} dead on every survivor after {:.0} ms ({got:.3?} s)",
            k + 1,
            worst * 1000.0
        );
        last.push(worst);
        each.extend(got);
        restart(args, bin, root, nodes, vi).await?;
    }
    Ok(json!({ "all_survivors": spread(&last), "per_survivor": spread(&each) }))
}

/// Gossip bytes sent and received per second per node over `--gossip-secs` idle.
pub async fn gossip(args: &Args, nodes: &[Node]) -> anyhow::Result<Value> {
    const SENT: &str = "hubbub_gossip_sent_bytes_total";
    const RECV: &str = "hubbub_gossip_received_bytes_total";
    let mut before = Vec::new();
    for n in nodes {
        before.push((
            nodes::metric(n.http, SENT).await?,
            nodes::metric(n.http, RECV).await?,
        ));
    }
    let t0 = Instant::now();
    eprintln!("  idle for {} s", args.gossip_secs);
    tokio::time::sleep(Duration::from_secs(args.gossip_secs)).await;
    let mut per = serde_json::Map::new();
    for (n, (s0, r0)) in nodes.iter().zip(before) {
        let w = t0.elapsed().as_secs_f64();
        let (s1, r1) = (
            nodes::metric(n.http, SENT).await?,
            nodes::metric(n.http, RECV).await?,
        );
        let v = json!({ "sent_bytes_per_sec": round3((s1 - s0) / w), "received_bytes_per_sec": round3((r1 - r0) / w), "secs": round3(w) });
        eprintln!("  {}: {v}", n.name);
        per.insert(n.name.clone(), v);
    }
    Ok(Value::Object(per))
}
