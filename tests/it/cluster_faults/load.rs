//! Load for the fault tests: clients that each send their own ids, one at a
//! time, keep what they saw, and when their node goes away reconnect to
//! another with `since` = the last cursor they saw, resending what has no
//! `saved` yet (as the protocol tells clients to).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubbub_client::{self as client, Account, Incoming, WsClient};
use serde_json::{Value, json};

use crate::support::*;

pub const ROOM: &str = "faults";
/// A client sends at most one message this often (a few hundred a second in all).
const PACE: Duration = Duration::from_millis(100);
/// After `stop`, a client waits this long for the `saved` of what it sent.
const DRAIN: Duration = Duration::from_secs(20);

/// The nodes' HTTP addresses by index; `None` while a node is down.
#[derive(Clone)]
pub struct Addrs(pub Arc<Mutex<Vec<Option<SocketAddr>>>>);

impl Addrs {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Addrs(Arc::new(Mutex::new(addrs.into_iter().map(Some).collect())))
    }
    pub fn set(&self, i: usize, a: Option<SocketAddr>) {
        self.0.lock().unwrap()[i] = a;
    }
    fn get(&self, i: usize) -> Option<SocketAddr> {
        self.0.lock().unwrap()[i]
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// What every client shares: when each `saved` came (for the write pauses),
/// the flag that ends the sending, and which nodes a client may use.
pub struct Load {
    pub addrs: Addrs,
    /// When each `saved` came, and from which node.
    pub saves: Mutex<Vec<(Instant, usize)>>,
    pub stop: AtomicBool,
    /// Nodes a client must not (re)connect to (e.g. one cut off): by index.
    pub avoid: Mutex<BTreeSet<usize>>,
}

/// What one client did and saw.
#[derive(Default, Debug)]
pub struct Report {
    pub name: String,
    pub saved: BTreeSet<String>,
    /// Every chat frame seen (history and live): id → cursor.
    pub seen: BTreeMap<String, String>,
    /// Ids seen more than once (over all of this client's connections) on
    /// connections whose `since` was honoured.
    pub dups: Vec<String>,
    /// Joins with `since` that came back `resumed: false` (the node did not
    /// know the cursor), and the ids seen again on those connections (the
    /// protocol's answer to an unknown cursor is the latest page, which the
    /// client pages back from and dedupes by id).
    pub unresumed: usize,
    pub repeats: Vec<String>,
    /// `(node index, id)` of every chat frame seen, for tests that ask where.
    pub seen_on: Vec<(usize, String)>,
    /// `(node index, code)` of every error frame, and the close codes.
    pub errors: Vec<(usize, String)>,
    pub closes: Vec<(usize, Option<u16>)>,
    pub reconnects: usize,
}

/// Signs `names` up, user `i` on node `i % nodes`: accounts go through the
/// log and every node shares the JWT secret, so one login is good on every
/// node: `[user][node]`, the same account for each node.
pub async fn accounts(addrs: &[SocketAddr], names: &[String]) -> Vec<Vec<Account>> {
    let signups = names
        .iter()
        .enumerate()
        .map(|(i, n)| user_at(addrs[i % addrs.len()], n));
    futures_util::future::join_all(signups)
        .await
        .into_iter()
        .map(|a| vec![a; addrs.len()])
        .collect()
}

/// Starts `accts.len()` clients, client `i` first on node `i % nodes`.
pub fn start(load: &Arc<Load>, accts: Vec<Vec<Account>>) -> Vec<tokio::task::JoinHandle<Report>> {
    let n = load.addrs.len();
    accts
        .into_iter()
        .enumerate()
        .map(|(i, a)| tokio::spawn(run(load.clone(), a, i % n, format!("c{i}"))))
        .collect()
}

/// Stops the sending and collects the reports (bounded by the drain time).
pub async fn finish(load: &Load, tasks: Vec<tokio::task::JoinHandle<Report>>) -> Vec<Report> {
    load.stop.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    for t in tasks {
        let r = tokio::time::timeout(DRAIN + Duration::from_secs(30), t)
            .await
            .expect("a client did not finish")
            .expect("a client panicked");
        out.push(r);
    }
    out
}

/// The longest time between two `saved` receipts (of any client) after `from`.
pub fn longest_pause(load: &Load, from: Instant) -> Duration {
    let mut t: Vec<Instant> = load.saves.lock().unwrap().iter().map(|s| s.0).collect();
    t.retain(|x| *x >= from);
    t.sort();
    let mut longest = t.first().map(|f| *f - from).unwrap_or_default();
    for w in t.windows(2) {
        longest = longest.max(w[1] - w[0]);
    }
    longest
}

/// How many `saved` came between `from` and `to` from nodes for which `on` holds.
pub fn saves_between(load: &Load, from: Instant, to: Instant, on: impl Fn(usize) -> bool) -> usize {
    let saves = load.saves.lock().unwrap();
    saves
        .iter()
        .filter(|(t, n)| *t > from && *t < to && on(*n))
        .count()
}

/// Waits until `n` more `saved` receipts arrived (any client) after `from`.
pub async fn saves_after(load: &Load, from: Instant, n: usize, limit: Duration) -> Duration {
    wait_for("writes resume", limit, || async {
        load.saves
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.0 >= from)
            .count()
            >= n
    })
    .await
}

struct Client {
    load: Arc<Load>,
    accts: Vec<Account>,
    node: usize,
    ws: Option<WsClient>,
    last_cursor: Option<String>,
    /// This connection's `since` was not honoured: older pages are fetched
    /// down to this cursor, and ids seen again are repeats, not duplicates.
    unresumed: bool,
    fill_to: Option<String>,
    rep: Report,
}

async fn run(load: Arc<Load>, accts: Vec<Account>, node: usize, name: String) -> Report {
    let mut c = Client {
        load,
        accts,
        node,
        ws: None,
        last_cursor: None,
        unresumed: false,
        fill_to: None,
        rep: Report {
            name,
            ..Report::default()
        },
    };
    c.connect().await;
    let mut seq = 0u64;
    let mut pending: Option<(String, String)> = None;
    let mut next_send = Instant::now();
    let mut drain_until = None;
    loop {
        let stopping = c.load.stop.load(Ordering::SeqCst);
        if stopping {
            let until = *drain_until.get_or_insert(Instant::now() + DRAIN);
            if pending.is_none() || Instant::now() > until {
                break;
            }
        }
        if pending.is_none() && !stopping && Instant::now() >= next_send {
            seq += 1;
            let id = uuid();
            let content = format!("{} #{seq}", c.rep.name);
            pending = Some((id.clone(), content));
            next_send = Instant::now() + PACE;
            c.send(pending.as_ref().unwrap()).await;
        }
        let got = match c.ws.as_mut() {
            Some(ws) => ws.recv(Duration::from_millis(50)).await,
            None => Some(Incoming::Closed(None)),
        };
        match got {
            None => {}
            Some(Incoming::Frame(f)) => c.frame(&f, &mut pending).await,
            Some(Incoming::Closed(code)) => {
                if c.ws.is_some() {
                    c.rep.closes.push((c.node, code));
                }
                c.ws = None;
                if c.connect().await
                    && let Some(p) = pending.clone()
                {
                    c.send(&p).await;
                }
            }
        }
    }
    c.rep
}

impl Client {
    /// One frame from the server; `pending` is the id in flight and its content.
    async fn frame(&mut self, f: &Value, pending: &mut Option<(String, String)>) {
        let ty = f["type"].as_str().unwrap_or("");
        if ty == "chat" {
            self.saw(f);
        } else if ty == "history" {
            self.filled(f).await;
        } else if ty == "receipt" && f["status"] == "saved" {
            if let Some((id, _)) = pending.take_if(|(id, _)| f["id"] == id.as_str()) {
                self.load
                    .saves
                    .lock()
                    .unwrap()
                    .push((Instant::now(), self.node));
                self.rep.saved.insert(id);
            }
        } else if ty == "error" {
            let code = f["code"].as_str().unwrap_or("?").to_owned();
            self.rep.errors.push((self.node, code));
            if let Some(p) = pending.clone()
                && f["id"] == p.0.as_str()
            {
                // Not taken: resend the same id a little later.
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.send(&p).await;
            }
        }
    }

    async fn send(&mut self, (id, content): &(String, String)) {
        if let Some(ws) = self.ws.as_mut() {
            let frame = json!({"type": "chat", "id": id, "room": ROOM, "content": content});
            if ws.send_json(&frame).await.is_err() {
                // The read side reports the close next.
            }
        }
    }

    fn saw(&mut self, f: &Value) {
        let id = f["id"].as_str().unwrap_or_default().to_owned();
        let cursor = f["cursor"].as_str().unwrap_or_default().to_owned();
        if self.seen_cursor_newer(&cursor) {
            self.last_cursor = Some(cursor.clone());
        }
        self.rep.seen_on.push((self.node, id.clone()));
        if let Some(before) = self.rep.seen.insert(id.clone(), cursor.clone()) {
            if self.unresumed {
                self.rep.repeats.push(id);
            } else {
                // Enough to tell a resend stored twice from a page shown twice.
                let (node, conn) = (self.node, self.rep.closes.len());
                let kind = f["type"].as_str().unwrap_or("?");
                self.rep.dups.push(format!(
                    "{id} (cursor {before}, then {cursor} as {kind} on node {node}, connection {conn})"
                ));
            }
        }
    }

    /// Takes a `history` page; after a join whose `since` was not honoured,
    /// asks for the page before it until the cursor it had is reached.
    async fn filled(&mut self, h: &Value) {
        let msgs = h["messages"].as_array().cloned().unwrap_or_default();
        for m in &msgs {
            self.saw(m);
        }
        let oldest = msgs
            .first()
            .and_then(|m| m["cursor"].as_str())
            .map(str::to_owned);
        match (&self.fill_to, oldest) {
            (Some(to), Some(oldest)) if h["more"] == true && oldest.as_str() > to.as_str() => {
                let ask = json!({"type": "history", "before": oldest, "limit": 100, "req": "fill"});
                if let Some(ws) = self.ws.as_mut() {
                    let _ = ws.send_json(&ask).await;
                }
            }
            _ => self.fill_to = None,
        }
    }

    fn seen_cursor_newer(&self, cursor: &str) -> bool {
        self.last_cursor.as_deref().is_none_or(|l| cursor > l)
    }

    /// Connects to the first usable node from the current one on, with
    /// `since`; takes its `history`. Tries for a while; `false` when stopping.
    async fn connect(&mut self) -> bool {
        let t0 = Instant::now();
        loop {
            let n = self.load.addrs.len();
            for k in 0..n {
                let i = (self.node + k) % n;
                if self.load.avoid.lock().unwrap().contains(&i) {
                    continue;
                }
                let Some(addr) = self.load.addrs.get(i) else {
                    continue;
                };
                let since = self.last_cursor.clone();
                let Ok(Ok(mut ws)) = tokio::time::timeout(
                    T,
                    client::join_here(addr, &self.accts[i], ROOM, None, since.as_deref()),
                )
                .await
                else {
                    continue;
                };
                let Ok(w) = ws.expect("welcome", T).await else {
                    continue;
                };
                let Ok(h) = ws.expect("history", T).await else {
                    continue;
                };
                let prev = self.node;
                self.node = i;
                self.unresumed = since.is_some() && w["resumed"] != true;
                self.fill_to = None;
                if self.unresumed {
                    self.rep.unresumed += 1;
                    self.fill_to = since.clone();
                } else if since.is_some() {
                    assert_eq!(
                        h["more"], false,
                        "{}: resumed history fits one page",
                        self.rep.name
                    );
                }
                self.ws = Some(ws);
                self.filled(&h).await;
                if self.rep.closes.len() > self.rep.reconnects || prev != i {
                    self.rep.reconnects += 1;
                }
                return true;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{}: no node took a connection for 60 s",
                self.rep.name
            );
            if self.load.stop.load(Ordering::SeqCst) && t0.elapsed() > DRAIN {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The whole history of the room at `addr`, oldest first, paged over HTTP.
pub async fn history(addr: SocketAddr, acct: &Account) -> Vec<(String, String)> {
    room_history(addr, acct, ROOM).await
}

/// Checks the clients against `hist` (one node's full history): every saved
/// id in it exactly once, every id a client saw in it, no client saw an id
/// twice, and no client missed one between the first and last it saw.
pub fn check(reports: &[Report], hist: &[(String, String)], on: &str) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in hist {
        *count.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{on}: ids stored twice: {twice:?}");
    for r in reports {
        assert!(r.dups.is_empty(), "{}: saw ids twice: {:?}", r.name, r.dups);
        for id in &r.saved {
            assert!(
                count.contains_key(id.as_str()),
                "{on}: {}'s saved {id} is missing",
                r.name
            );
        }
        for id in r.seen.keys() {
            assert!(
                count.contains_key(id.as_str()),
                "{on}: {} saw {id}, not in history",
                r.name
            );
        }
        let (Some(lo), Some(hi)) = (r.seen.values().min(), r.seen.values().max()) else {
            continue;
        };
        let missed: Vec<_> = hist
            .iter()
            .filter(|(id, c)| c >= lo && c <= hi && !r.seen.contains_key(id))
            .collect();
        assert!(missed.is_empty(), "{}: gaps, missed {missed:?}", r.name);
    }
}
