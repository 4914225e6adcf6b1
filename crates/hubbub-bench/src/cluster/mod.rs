//! `hubbub-bench cluster --what W --spawn`: three `hubbub` nodes (n1..n3 in
//! temp dirs, n2 and n3 seeded with n1) and, for the load measurements, a
//! single node as the baseline in the same run — one after the other, so
//! that they never share the cores.
//!
//! W is one of:
//! - `latency`: one sender on n1 at `--rate` (default 100/s), receivers on
//!   n1 (same node) and n2 (cross node); the single node with both on it.
//! - `saved`: send→`saved` at 1000 and 5000 msgs/s offered (or `--rate`),
//!   `--senders` (default 100) spread over the nodes, each in its own room.
//! - `max`: the same senders closed loop (`--window` unsaved each).
//! - `fanout`: `-n` (default 1000) receivers spread over the nodes, one
//!   sender on n1 at `--rate` (default 1000/s).
//! - `failover`, `detection`: `--kills` (default 10) kill -9s (cluster only).
//! - `gossip`: gossip bytes/s per node over `--gossip-secs` idle (cluster only).
//! - `kick`: `--kicks` (default 20) times, one (user, client id) on node A
//!   replaced from node B: B's `welcome` → A's 4001 (cluster only).
//! - `move`: `--kills` SIGTERMs of a client's home: its 1001 → its
//!   `welcome` at the new home (cluster only).
//!
//! Sessions a measurement puts on a given node are placed there with
//! `from=` (`net::placed`); a cluster would otherwise redirect each to its
//! user's home.

mod faults;
mod kick;
mod load;
mod moved;
mod nodes;

use std::time::Duration;

use anyhow::bail;
use hubbub_client::Endpoint;
use serde_json::{Value, json};

use crate::{Args, Outcome};
use nodes::{Node, Root};

/// What one setup (the cluster or the single node) is measured on.
struct Setup<'a> {
    name: &'static str,
    nodes: &'a [Node],
}

impl Setup<'_> {
    fn eps(&self) -> Vec<Endpoint> {
        self.nodes.iter().map(Node::ep).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Outcome> {
    if !args.spawn {
        bail!("cluster scenarios start their own nodes: pass --spawn (and --server-bin)");
    }
    let what = args.what.as_str();
    let known = [
        "latency",
        "saved",
        "max",
        "fanout",
        "failover",
        "detection",
        "gossip",
        "kick",
        "move",
    ];
    if !known.contains(&what) {
        bail!("--what must be one of {known:?}");
    }
    let bin = nodes::server_bin(args)?;
    let root = Root::new(args)?;
    let mut results = serde_json::Map::new();
    let with_baseline = matches!(what, "latency" | "saved" | "max" | "fanout");
    if with_baseline {
        eprintln!("single node:");
        let mut single = vec![nodes::spawn(args, &bin, &root.0, "single", None).await?];
        let r = measure(
            args,
            &Setup {
                name: "single",
                nodes: &single,
            },
        )
        .await;
        single[0].stop().await;
        results.insert("single".into(), r?);
    }
    eprintln!("three nodes:");
    let mut three = nodes::spawn_three(args, &bin, &root.0).await?;
    let r = on_three(args, &bin, &root.0, &mut three).await;
    for n in &mut three {
        n.stop().await;
    }
    results.insert("cluster".into(), r?);
    results.insert("what".into(), json!(what));
    let v = Value::Object(results);
    let summary = format!("cluster {what}: {}", serde_json::to_string_pretty(&v)?);
    Ok((v, summary))
}

/// `--what` on the three nodes.
async fn on_three(
    args: &Args,
    bin: &std::path::Path,
    root: &std::path::Path,
    three: &mut [Node],
) -> anyhow::Result<Value> {
    match args.what.as_str() {
        "failover" => {
            let acct = one_account(args, &three[0].ep()).await?;
            faults::failover(args, bin, root, three, &acct).await
        }
        "detection" => faults::detection(args, bin, root, three).await,
        "kick" => {
            let acct = one_account(args, &three[0].ep()).await?;
            kick::kick(args, three, &acct).await
        }
        "move" => {
            let accts = load::accounts(args, &three[0].ep(), 10).await?;
            moved::moved(args, bin, root, three, &accts).await
        }
        "gossip" => {
            // Let the join traffic settle first.
            tokio::time::sleep(Duration::from_secs(5)).await;
            faults::gossip(args, three).await
        }
        _ => {
            let s = Setup {
                name: "cluster",
                nodes: three,
            };
            measure(args, &s).await
        }
    }
}

/// One account `bench_0`, signed up (or in) at `ep`.
async fn one_account(args: &Args, ep: &Endpoint) -> anyhow::Result<hubbub_client::Account> {
    let acct = load::accounts(args, ep, 1).await?;
    acct.into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no account"))
}

/// The load measurement `--what` on one setup.
async fn measure(args: &Args, s: &Setup<'_>) -> anyhow::Result<Value> {
    let eps = s.eps();
    let dur = Duration::from_secs_f64(args.duration);
    let n1 = eps[0].clone();
    match args.what.as_str() {
        "latency" => {
            let recv: Vec<(String, Endpoint)> = if s.name == "single" {
                vec![("single".into(), n1.clone())]
            } else {
                vec![
                    ("same_node_n1".into(), n1.clone()),
                    ("cross_node_n2".into(), eps[1].clone()),
                ]
            };
            load::fan(args, &n1, &recv, args.rate.unwrap_or(100.0), dur).await
        }
        "fanout" => {
            let n = args.connections.unwrap_or(1000);
            let recv: Vec<(String, Endpoint)> = (0..n)
                .map(|i| {
                    let j = i % eps.len();
                    (
                        format!(
                            "{}{}",
                            if s.name == "single" { "single" } else { "n" },
                            if s.name == "single" {
                                String::new()
                            } else {
                                (j + 1).to_string()
                            }
                        ),
                        eps[j].clone(),
                    )
                })
                .collect();
            load::fan(args, &n1, &recv, args.rate.unwrap_or(1000.0), dur).await
        }
        "saved" => {
            let rates = args.rate.map_or(vec![1000.0, 5000.0], |r| vec![r]);
            load::saved(args, &eps, args.senders.unwrap_or(100), &rates, &s.pids()).await
        }
        "max" => load::saved(args, &eps, args.senders.unwrap_or(100), &[0.0], &s.pids()).await,
        w => bail!("{w} has no single-node baseline"),
    }
}
