//! Kick latency across nodes: one user and one client id; a session on node
//! A, then the same (user, client id) joins on node B (placed there with
//! `from=`), which replaces A's session: A is closed with 4001. Measured to
//! A's close frame arriving, from B's `welcome` arriving and from B's
//! upgrade request being sent. Rounds walk n1→n2→n3→n1…: B of one round is
//! A of the next, so every ordered pair of neighbours takes its turn.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hubbub_client::{Account, Endpoint};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::load;
use super::nodes::Node;
use crate::Args;
use crate::net::{self, Ws};
use crate::stats::round3;

/// The longest a join or a kick may take before the run gives up.
const LIMIT: Duration = Duration::from_secs(30);

/// `--kicks` rounds on the three nodes as `acct`.
pub async fn kick(args: &Args, nodes: &[Node], acct: &Account) -> anyhow::Result<Value> {
    let run = net::run_id() & 0xff_ffff;
    let room = format!("/ws?room=clkick{run:x}");
    // Every node knows the account (signed up at n1) before the first round.
    for n in nodes {
        let mut ws = load::join(&n.ep(), &room, Some(acct), args.read_buffer).await?;
        let _ = ws.close(None).await;
    }
    let path = format!("{room}&client=kick{run:x}");
    let mut a = 0;
    let mut ws = load::join(&nodes[a].ep(), &path, Some(acct), args.read_buffer).await?;
    let (mut from_welcome, mut from_upgrade) = (Vec::new(), Vec::new());
    for k in 0..args.kicks {
        let b = (a + 1) % nodes.len();
        let closed = tokio::spawn(close_of(ws));
        let (next, upgrade, welcome) = join_timed(&nodes[b].ep(), &path, acct, args).await?;
        let (at, code) = closed.await?.context("waiting for the kicked session")?;
        if code != Some(4001) {
            bail!(
                "the session on {} closed with {code:?}, not 4001",
                nodes[a].name
            );
        }
        let ms = |from: Instant| signed_ms(from, at);
        eprintln!(
            "  kick {}: {}→{} closed {:.2} ms after welcome, {:.2} ms after the upgrade",
            k + 1,
            nodes[a].name,
            nodes[b].name,
            ms(welcome),
            ms(upgrade)
        );
        from_welcome.push(ms(welcome));
        from_upgrade.push(ms(upgrade));
        (ws, a) = (next, b);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ws.close(None).await;
    Ok(json!({
        "kicks": args.kicks,
        "welcome_to_4001_ms": summary(&from_welcome),
        "upgrade_to_4001_ms": summary(&from_upgrade),
    }))
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(from.duration_since(to).as_secs_f64() * 1000.0),
    }
}

/// Joins `path` at `ep` (placed there): the socket, when the upgrade request
/// went out (after the route lookup), and when `welcome` arrived.
async fn join_timed(
    ep: &Endpoint,
    path: &str,
    acct: &Account,
    args: &Args,
) -> anyhow::Result<(Ws, Instant, Instant)> {
    let placed = net::placed(ep, path, Some(acct)).await?;
    let cookie = acct.cookie_header();
    let upgrade = Instant::now();
    let ws = net::ws_connect(ep, &placed, Some(&cookie), args.read_buffer).await?;
    let (ws, _) = welcome(ws).await?;
    Ok((ws, upgrade, Instant::now()))
}

/// `ws` once its `welcome` arrived, and the `welcome`.
pub(super) async fn welcome(mut ws: Ws) -> anyhow::Result<(Ws, Value)> {
    loop {
        let m = tokio::time::timeout(LIMIT, ws.next())
            .await
            .context("timed out waiting for welcome")?;
        match m {
            Some(Ok(Message::Text(t))) if t.as_str().starts_with("{\"type\":\"welcome\"") => {
                return Ok((ws, serde_json::from_str(t.as_str())?));
            }
            Some(Ok(Message::Close(f))) => bail!("closed before welcome: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before welcome"),
        }
    }
}

/// Reads `ws` until it closes: when, and the close code.
pub(super) async fn close_of(mut ws: Ws) -> anyhow::Result<(Instant, Option<u16>)> {
    loop {
        let m = tokio::time::timeout(LIMIT, ws.next())
            .await
            .context("not closed in time")?;
        match m {
            Some(Ok(Message::Close(f))) => {
                return Ok((Instant::now(), f.map(|f| u16::from(f.code))));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("the socket failed instead of closing: {e}"),
            None => bail!("the socket ended without a close frame"),
        }
    }
}

/// min/median/p99/max in ms, and every sample.
fn summary(xs: &[f64]) -> Value {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).copied().map(round3)
    };
    json!({
        "n": v.len(),
        "min": v.first().copied().map(round3),
        "median": at(0.5),
        "p99": at(0.99),
        "max": v.last().copied().map(round3),
        "all": v.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_takes_nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = summary(&xs);
        assert_eq!(s["min"], 1.0);
        assert_eq!(s["median"], 100.0);
        assert_eq!(s["p99"], 198.0);
        assert_eq!(s["max"], 200.0);
        assert_eq!(summary(&[])["p99"], Value::Null);
    }

    #[test]
    fn a_close_before_the_welcome_is_negative() {
        let a = Instant::now();
        let b = a + Duration::from_millis(2);
        assert_eq!(signed_ms(a, b), 2.0);
        assert_eq!(signed_ms(b, a), -2.0);
    }
}
