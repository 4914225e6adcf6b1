//! `history-hidden`: a room where H private messages between two users (alice
//! → bob) lie between a few public ones. A third user (carol) joins and pages:
//! her history holds only the public messages, so every page that has to
//! skip the privates shows what skipping them costs. Measures carol's
//! join→history, carol's `before` page across the hidden run, and bob's join
//! (who sees the privates) for comparison.

use std::time::Instant;

use anyhow::{anyhow, bail};
use hubbub_client::Account;
use hubbub_client::protocol::{Cursor, PageDir, Username};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::durable::{PhaseCfg, PhaseStats, phase};
use crate::history::{join_timed, page};
use crate::net::{self, Target};
use crate::stats::{Hist, padded, round3};
use crate::{Args, Outcome};

/// Public messages before and after the hidden run.
const PUBLIC: u64 = 5;

/// Sends `count` messages from `account` (chat, or private to `target`) over
/// `conns` sockets in a closed loop; returns the merged stats.
async fn send(
    args: &Args,
    t: &Target,
    room: &str,
    account: &Account,
    count: u64,
    target: Option<Username>,
    conns: usize,
) -> anyhow::Result<PhaseStats> {
    let run = net::run_id();
    let mut set = JoinSet::new();
    for i in 0..conns {
        let n = count / conns as u64 + u64::from((i as u64) < count % conns as u64);
        let c = PhaseCfg::closed_loop(args, run, i + 1, n, target.clone());
        let (ep, rb, path, size) = (t.ep.clone(), args.read_buffer, t.ws_path(room), args.size);
        let account = account.clone();
        set.spawn(async move {
            let mut ws = net::join(&ep, false, &path, Some(&account), rb).await?;
            let make = move |q: u64| padded(format!("hidden {i}-{q} "), size);
            let mut seq = 0;
            anyhow::Ok(phase(&mut ws, c, &mut seq, &make).await)
        });
    }
    let mut all = PhaseStats::default();
    while let Some(r) = set.join_next().await {
        all.merge(&r??);
    }
    if all.saved < count {
        bail!(
            "pre-fill incomplete: {} of {count} saved ({} unavailable, {} rate limited)",
            all.saved,
            all.unavailable,
            all.rate_limited
        );
    }
    Ok(all)
}

/// The newest public message of a join's history.
fn last_content(h: &Value) -> Option<String> {
    h["messages"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|v| v["content"].as_str())
        .map(str::to_owned)
}

pub async fn run(args: &Args, t: &Target) -> anyhow::Result<Outcome> {
    let hidden = args.hidden;
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("hidden-{hidden}"));
    let (accounts, _) = net::accounts(t, 3, args.concurrency).await?;
    let [alice, bob, carol] =
        <[Account; 3]>::try_from(accounts).map_err(|_| anyhow!("three accounts needed"))?;
    let rb = args.read_buffer;
    let conns = args.senders.unwrap_or(4).max(1);

    let start = Instant::now();
    let marker = format!("hidden-done {hidden}");
    let (_, _, h) = join_timed(t, &room, &carol, rb).await?;
    let fill = if last_content(&h).as_deref() == Some(&marker) {
        eprintln!("room {room} already holds {hidden} hidden messages; reusing it");
        json!({"reused": true})
    } else {
        eprintln!(
            "pre-filling {room}: {PUBLIC} public, {hidden} private alice->bob, {PUBLIC} public"
        );
        // A private message needs a target who has joined the room.
        drop(join_timed(t, &room, &bob, rb).await?);
        send(args, t, &room, &alice, PUBLIC, None, 1).await?;
        let st = send(
            args,
            t,
            &room,
            &alice,
            hidden,
            Some(
                Username::parse(&bob.username)
                    .ok_or_else(|| anyhow!("invalid username {}", bob.username))?,
            ),
            conns,
        )
        .await?;
        send(args, t, &room, &alice, PUBLIC - 1, None, 1).await?;
        // The marker last: a later run sees the room is complete.
        let run = net::run_id();
        let mut ws = net::join(&t.ep, false, &t.ws_path(&room), Some(&alice), rb).await?;
        let mk = marker.clone();
        let m = phase(
            &mut ws,
            PhaseCfg::closed_loop(args, run, 0, 1, None),
            &mut 0,
            &move |_| mk.clone(),
        )
        .await;
        if m.saved != 1 {
            bail!("marker not saved");
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("pre-filled in {secs:.1}s");
        json!({"reused": false, "seconds": round3(secs), "private_saved": st.saved})
    };

    // 1. carol's join → history (only the public messages are hers to see).
    let (mut carol_h, mut carol_n) = (Hist::default(), 0);
    for _ in 0..args.samples {
        let (ws, took, h) = join_timed(t, &room, &carol, rb).await?;
        carol_h.record(took.as_nanos() as u64);
        carol_n = h["messages"].as_array().map_or(0, Vec::len);
        drop(ws);
    }
    // 2. carol pages back from the oldest later public message: across the hidden run.
    let (mut ws, _, h) = join_timed(t, &room, &carol, rb).await?;
    let before = h["messages"][PUBLIC as usize]["cursor"]
        .as_str()
        .and_then(Cursor::parse)
        .ok_or_else(|| anyhow!("carol's history is missing public messages: {h}"))?;
    let mut page_h = Hist::default();
    let mut page_n = 0;
    for i in 0..args.samples {
        let req = format!("b{i}");
        let t0 = Instant::now();
        let h = page(&mut ws, PageDir::Before(before), 50, &req).await?;
        page_h.record(t0.elapsed().as_nanos() as u64);
        page_n = h["messages"].as_array().map_or(0, Vec::len);
    }
    drop(ws);
    // 3. bob's join (he sees the privates: no skipping) for comparison.
    let mut bob_h = Hist::default();
    for _ in 0..args.samples {
        let (ws, took, _) = join_timed(t, &room, &bob, rb).await?;
        bob_h.record(took.as_nanos() as u64);
        drop(ws);
    }
    let results = json!({
        "room": room,
        "hidden": hidden,
        "prefill": fill,
        "third_user_join_to_history": carol_h.json_ms(),
        "third_user_join_messages": carol_n,
        "third_user_page_before": page_h.json_ms(),
        "third_user_page_messages": page_n,
        "target_join_to_history": bob_h.json_ms(),
    });
    let summary = format!(
        "history-hidden: room {room}, {hidden} privates between two others\n\
         third user's join->history ({carol_n} msgs): {}\n\
         third user's page before ({page_n} msgs):   {}\n\
         the target's join->history:                {}",
        carol_h.short(),
        page_h.short(),
        bob_h.short()
    );
    Ok((results, summary))
}
