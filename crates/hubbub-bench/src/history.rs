//! `history`: pre-fill a room with M messages (closed loop, many senders),
//! then measure join→history (connect, upgrade, `welcome`, `history` with the
//! last 50), the latest page over an open socket, and paging backwards with
//! `before`. A room whose newest message is the `fill-done M` marker is reused.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hubbub_client::Account;
use hubbub_client::frames;
use hubbub_client::protocol::frames::DEFAULT_PAGE;
use hubbub_client::protocol::{ClientMsg, Cursor, PageDir};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::durable::{PhaseCfg, PhaseStats, phase, share};
use crate::net::{self, Target, Ws};
use crate::stats::{Hist, padded, round3};
use crate::{Args, Outcome};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects and reads up to the join `history`; returns the socket, the time it took, and the frame.
pub async fn join_timed(
    t: &Target,
    room: &str,
    account: &Account,
    rb: usize,
) -> anyhow::Result<(Ws, Duration, Value)> {
    let t0 = Instant::now();
    let cookie = account.cookie_header();
    let mut ws = net::ws_connect(&t.ep, &t.ws_path(room), Some(&cookie), rb).await?;
    let frame = next_of(&mut ws, "{\"type\":\"history\"", None).await?;
    Ok((ws, t0.elapsed(), frame))
}

/// Asks for one history page (tagged `req`) and returns the server's answer to it.
pub async fn page(ws: &mut Ws, dir: PageDir, limit: usize, req: &str) -> anyhow::Result<Value> {
    let f = ClientMsg::History {
        dir,
        limit,
        req: Some(req.to_owned()),
    };
    ws.send(Message::Text(frames::encode(&f).into())).await?;
    next_of(ws, "{\"type\":\"history\"", Some(req)).await
}

/// The next text frame that starts with `prefix` (and has `"req":"REQ"`), parsed.
pub async fn next_of(ws: &mut Ws, prefix: &str, req: Option<&str>) -> anyhow::Result<Value> {
    let want_req = req.map(|r| format!("\"req\":\"{r}\""));
    loop {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {prefix}"))?;
        match m {
            Some(Ok(Message::Text(t))) => {
                let s = t.as_str();
                if s.starts_with(prefix) && want_req.as_ref().is_none_or(|r| s.contains(r)) {
                    return Ok(serde_json::from_str(s)?);
                }
            }
            Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed"),
        }
    }
}

fn marker(m: usize) -> String {
    format!("fill-done {m}")
}

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let m = args.messages;
    let room = args.room.clone().unwrap_or_else(|| format!("hist-{m}"));
    let senders = args.senders.unwrap_or(8).max(1);
    // One account per pre-fill sender: `saved` receipts go to every session of
    // the sender's account in the room.
    let (accounts, login_s) = net::accounts(t, senders, args.concurrency).await?;
    let me = accounts
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no account"))?;
    let rb = args.read_buffer;

    // Already filled?
    let (ws, _, hist) = join_timed(t, &room, &me, rb).await?;
    let last = hist["messages"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|v| v["content"].as_str())
        .map(str::to_owned);
    let mut fill = json!({"reused": true});
    drop(ws);
    if last.as_deref() != Some(marker(m).as_str()) {
        fill = prefill(args, t, &room, &accounts, senders).await?;
    } else {
        eprintln!("room {room} already holds {m} messages; reusing it");
    }

    // 1. join → history (last 50), sequential.
    let mut join_h = Hist::default();
    let mut join_size = 0usize;
    for _ in 0..args.samples {
        let (ws, took, h) = join_timed(t, &room, &me, rb).await?;
        join_h.record(took.as_nanos() as u64);
        join_size = h["messages"].as_array().map_or(0, Vec::len);
        drop(ws);
    }
    // 2. the latest page over an open socket.
    let (mut ws, _, _) = join_timed(t, &room, &me, rb).await?;
    let mut latest_h = Hist::default();
    let mut oldest = None;
    for i in 0..args.samples {
        let req = format!("l{i}");
        let t0 = Instant::now();
        let h = page(&mut ws, PageDir::Latest, DEFAULT_PAGE, &req).await?;
        latest_h.record(t0.elapsed().as_nanos() as u64);
        oldest = h["messages"][0]["cursor"].as_str().and_then(Cursor::parse);
    }
    // 3. paging backwards with `before`.
    let mut page_h = Hist::default();
    let mut walked = 0usize;
    for i in 0..args.pages {
        let Some(before) = oldest.take() else { break };
        let req = format!("p{i}");
        let t0 = Instant::now();
        let h = page(&mut ws, PageDir::Before(before), 50, &req).await?;
        page_h.record(t0.elapsed().as_nanos() as u64);
        walked += h["messages"].as_array().map_or(0, Vec::len);
        if h["more"] != json!(true) {
            break;
        }
        oldest = h["messages"][0]["cursor"].as_str().and_then(Cursor::parse);
    }
    drop(ws);
    let results = json!({
        "room": room,
        "messages": m,
        "prefill": fill,
        "login_s": round3(login_s),
        "join_to_history": join_h.json_ms(),
        "join_history_messages": join_size,
        "latest_page": latest_h.json_ms(),
        "paging_before": page_h.json_ms(),
        "paged_messages": walked,
    });
    let fill_text = match fill["saved_per_sec"].as_f64() {
        Some(r) => format!("pre-filled at {r:.0} saved/s"),
        None => "reused".to_string(),
    };
    let summary = format!(
        "history: room {room} with {m} messages ({fill_text})\n\
         join->history (last {join_size}): {}\n\
         latest page on open socket:     {}\n\
         page with before ({walked} msgs): {}",
        join_h.short(),
        latest_h.short(),
        page_h.short()
    );
    Ok((results, summary))
}

async fn prefill(
    args: &Args,
    t: &Target,
    room: &str,
    accounts: &[Account],
    senders: usize,
) -> anyhow::Result<Value> {
    let m = args.messages as u64;
    let run = net::run_id();
    eprintln!(
        "pre-filling {room} with {m} messages from {senders} senders (window {})",
        args.window
    );
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..senders {
        let account = accounts.get(i).cloned();
        let (ep, rb, path, size) = (t.ep.clone(), args.read_buffer, t.ws_path(room), args.size);
        let c = PhaseCfg::closed_loop(args, run, i + 1, share(m, senders, i), None);
        set.spawn(async move {
            let mut ws = net::join(&ep, false, &path, account.as_ref(), rb).await?;
            let make = move |q: u64| padded(format!("fill {i}-{q} "), size);
            let mut seq = 0;
            anyhow::Ok(phase(&mut ws, c, &mut seq, &make).await)
        });
    }
    let mut all = PhaseStats::default();
    while let Some(r) = set.join_next().await {
        all.merge(&r?.context("a pre-fill sender")?);
    }
    let secs = start.elapsed().as_secs_f64();
    // The marker goes last, so a later run can see the room is complete.
    let c = PhaseCfg {
        rate: 0.0,
        window: 1,
        duration: TIMEOUT,
        size: 0,
        run,
        sender: 0,
        count: 1,
        target: None,
    };
    let mk = marker(args.messages);
    let make = move |_q: u64| mk.clone();
    let mut seq = 0;
    let mut marker_ws = net::join(
        &t.ep,
        false,
        &t.ws_path(room),
        accounts.first(),
        args.read_buffer,
    )
    .await?;
    let st = phase(&mut marker_ws, c, &mut seq, &make).await;
    if all.saved < m || st.saved != 1 {
        bail!(
            "pre-fill incomplete: {} of {m} saved ({} unavailable, {} rate limited, evicted: {}), marker saved {}",
            all.saved,
            all.unavailable,
            all.rate_limited,
            all.closed,
            st.saved
        );
    }
    let rate = all.saved as f64 / secs;
    eprintln!("pre-filled {} in {secs:.1}s ({rate:.0} saved/s)", all.saved);
    Ok(json!({
        "reused": false,
        "saved": all.saved,
        "seconds": round3(secs),
        "saved_per_sec": rate.round(),
        "unavailable": all.unavailable,
        "send_to_saved": all.hist.json_ms(),
    }))
}
