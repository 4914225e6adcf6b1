//! A client's move when its home node is SIGTERMed (drained): the node
//! gossips that it drains, then closes its sessions with 1001; the client
//! reconnects at a survivor with `since` (the cursor of the last message it
//! saw), which redirects it to its new home. Measured from the 1001 close
//! frame arriving to the `welcome` at the new home; `resumed` is counted.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hubbub_client::Account;
use hubbub_client::frames;
use hubbub_client::protocol::ClientMsg;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::faults::{restart, spread};
use super::kick::{close_of, welcome};
use super::nodes::Node;
use crate::Args;
use crate::net::{self, Ws};

/// The longest a drain's close or a reconnect may take.
const LIMIT: Duration = Duration::from_secs(60);

/// `--kills` drains, each of the home of `accts[k % len]`; the drained node
/// is restarted and the cluster re-forms before the next.
pub async fn moved(
    args: &Args,
    bin: &Path,
    root: &Path,
    nodes: &mut [Node],
    accts: &[Account],
) -> anyhow::Result<Value> {
    let room = format!("/ws?room=clmove{:x}", net::run_id() & 0xff_ffff);
    let (mut times, mut resumed) = (Vec::new(), 0);
    for k in 0..args.kills {
        let acct = &accts[k % accts.len()];
        // Through the redirect: served at home, the node its welcome names.
        let entry = nodes[k % nodes.len()].ep();
        let (ws, _, w) = rejoin(&entry, &room, acct, args).await?;
        let home = node_of(&w)?;
        let hi = nodes
            .iter()
            .position(|n| n.name == home)
            .context("the home is not among the nodes")?;
        let survivor = nodes[(hi + 1) % nodes.len()].ep();
        let (ws, cursor) = last_cursor(ws).await?;
        nodes[hi].term();
        let (closed, code) = close_of(ws).await?;
        if code != Some(1001) {
            bail!("the session on {home} closed with {code:?}, not 1001");
        }
        let since = format!("{room}&since={}", escape(&cursor));
        let (mut ws, welcomed, w) = rejoin(&survivor, &since, acct, args).await?;
        resumed += usize::from(w["resumed"] == true);
        let t = welcomed.duration_since(closed).as_secs_f64();
        let to = node_of(&w)?;
        eprintln!(
            "  drain {}: {home} closed the session (1001); welcome at {to} after {:.1} ms (resumed {})",
            k + 1,
            t * 1000.0,
            w["resumed"]
        );
        times.push(t);
        let _ = ws.close(None).await;
        nodes[hi].stop().await;
        restart(args, bin, root, nodes, hi).await?;
    }
    let mut v = spread(&times);
    v["resumed"] = resumed.into();
    Ok(v)
}

/// The node a `welcome` names.
fn node_of(welcome: &Value) -> anyhow::Result<String> {
    let n = welcome["node"].as_str();
    Ok(n.context("a welcome without a node")?.to_owned())
}

/// Sends one chat message and waits for it to come back: `ws` and the
/// message's `cursor`, what a client resumes from.
async fn last_cursor(mut ws: Ws) -> anyhow::Result<(Ws, String)> {
    let id = Uuid::new_v4();
    let f = frames::encode(&ClientMsg::Chat {
        id,
        content: "move probe".into(),
    });
    ws.send(Message::Text(f.into())).await?;
    loop {
        let m = tokio::time::timeout(LIMIT, ws.next())
            .await
            .context("timed out waiting for the probe's echo")?;
        let Some(Ok(Message::Text(t))) = m else {
            bail!("the session ended before the probe came back: {m:?}");
        };
        let v: Value = serde_json::from_str(t.as_str())?;
        if v["type"] == "chat" && v["id"] == id.to_string() {
            let c = v["cursor"].as_str().context("a chat without a cursor")?;
            return Ok((ws, c.to_owned()));
        }
    }
}

/// Percent-encodes everything but unreserved characters (a query value).
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Connects at `ep` (following the redirect) until a `welcome` arrives,
/// retrying every 20 ms; the socket, when its `welcome` arrived, and it.
async fn rejoin(
    ep: &hubbub_client::Endpoint,
    room: &str,
    acct: &Account,
    args: &Args,
) -> anyhow::Result<(Ws, Instant, Value)> {
    let t0 = Instant::now();
    let cookie = acct.cookie_header();
    loop {
        let e = match net::ws_connect(ep, room, Some(&cookie), args.read_buffer).await {
            Ok(ws) => match welcome(ws).await {
                Ok((ws, w)) => return Ok((ws, Instant::now(), w)),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if t0.elapsed() > LIMIT {
            bail!("no welcome within {LIMIT:?} of the drain: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
