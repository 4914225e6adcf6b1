//! A session that stops reading is evicted (4002) once its queue fills; the
//! rest of the room keeps getting every message. Its own binary: it floods.

use std::collections::HashSet;

use crate::support::*;
use hubbub_client::{Account, WsClient};

const MESSAGES: usize = 3000;

/// Reads until every id in `want` has arrived as a chat; returns them in arrival order.
async fn read_all(mut ws: WsClient, want: HashSet<String>) -> (WsClient, Vec<String>) {
    let mut got = Vec::with_capacity(want.len());
    let mut left = want;
    while !left.is_empty() {
        match ws.recv(T).await {
            Some(Incoming::Frame(v)) if v["type"] == "chat" => {
                let id = v["id"].as_str().unwrap().to_owned();
                if left.remove(&id) {
                    got.push(id);
                }
            }
            Some(Incoming::Frame(_)) => {}
            other => panic!(
                "a reading session lost the stream with {} messages to go: {other:?}",
                left.len()
            ),
        }
    }
    (ws, got)
}

/// One series of `/metrics` (exact name and labels as exposed), 0 when absent.
async fn metric(s: &TestServer, series: &str) -> f64 {
    metric_sample(s.addr, series).await.unwrap_or(0.0)
}

const EVICTED_SLOW: &str = "hubbub_evictions_total{reason=\"slow\"}";
const CLOSED_4002: &str = "hubbub_closes_total{code=\"4002\"}";

/// Waits (bounded) until the server counted exactly one more slow eviction and
/// one more session closed with 4002 than `before` (the two series, in order):
/// the stalled session and nobody else.
async fn one_eviction_counted(s: &TestServer, before: (f64, f64)) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = (metric(s, EVICTED_SLOW).await, metric(s, CLOSED_4002).await);
        if now.0 >= before.0 + 1.0 && now.1 >= before.1 + 1.0 {
            assert_eq!(
                now,
                (before.0 + 1.0, before.1 + 1.0),
                "evictions, 4002 closes"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "eviction not counted: {EVICTED_SLOW} and {CLOSED_4002} were {before:?}, are {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The stalled client reads what reached it: its connection must have ended,
/// with 4002 when the Close frame got through. It may not: the client did not
/// read for long, and the server gives a Close frame stuck behind unread data
/// 1 s before dropping the socket, so the 4002 itself is checked on the
/// server's side (`one_eviction_counted`). Returns the chats it had got.
async fn stalled_end(stalled: &mut WsClient) -> usize {
    let mut chats = 0usize;
    let end = loop {
        match stalled.recv(T).await {
            Some(Incoming::Frame(v)) => {
                if v["type"] == "chat" {
                    chats += 1;
                }
            }
            Some(Incoming::Closed(code)) => break code,
            None => panic!("the stalled session was never closed ({chats} messages read)"),
        }
    };
    assert!(
        end.is_none() || end == Some(4002),
        "stalled session closed with {end:?}, not 4002"
    );
    assert!(
        chats < MESSAGES,
        "it was evicted before the end of the flood"
    );
    chats
}

/// A server with a small session queue and no practical rate limit; a room
/// "flood" holding a stalled reader (never reads), a watcher and a flooder.
async fn flood_room(queue: &str) -> (TestServer, Account, WsClient, WsClient, WsClient) {
    let s = TestServer::start_with(&[
        "--session-queue",
        queue,
        "--msgs-per-sec",
        "100000",
        "--burst",
        "100000",
    ])
    .await;
    let staller = s.user(&name("staller")).await;
    let flooder = s.user(&name("flooder")).await;
    let watcher = s.user(&name("watcher")).await;
    let mut stalled = connect_small_buffer(&s, &staller, "flood", "").await;
    stalled.expect("welcome", T).await.unwrap();
    stalled.expect("history", T).await.unwrap();
    let w = s.join(&watcher, "flood").await;
    let f = s.join(&flooder, "flood").await;
    (s, staller, stalled, w, f)
}

async fn comes_back(s: &TestServer, staller: &Account) {
    let (mut back, _, h) = join_full(s, staller, "flood", None, None).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 50);
    assert_eq!(h["more"], true);
    say_saved(&mut back, "I'm back").await;
}

/// Notes a `saved` receipt or an echoed chat of the flooder's session.
fn track(v: serde_json::Value, unsaved: &mut HashSet<String>, echoed: &mut Vec<String>) {
    if v["type"] == "receipt" && v["status"] == "saved" {
        unsaved.remove(v["id"].as_str().unwrap());
    } else if v["type"] == "chat" {
        echoed.push(v["id"].as_str().unwrap().to_owned());
    }
}

/// The flooder keeps at most `WINDOW` messages unsaved (it waits for `saved`
/// receipts), so no burst exceeds the queue of a session that reads: only the
/// stalled reader falls behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_evicted_and_nobody_else_suffers() {
    const WINDOW: usize = 12;
    let (s, staller, mut stalled, w, mut f) = flood_room("32").await;
    let counted_before = (
        metric(&s, EVICTED_SLOW).await,
        metric(&s, CLOSED_4002).await,
    );
    let ids: Vec<String> = (0..MESSAGES).map(|_| uuid()).collect();
    let watching = tokio::spawn(read_all(w, ids.iter().cloned().collect()));
    let body = "x".repeat(3900);
    let mut unsaved: HashSet<String> = HashSet::new();
    let mut echoed = Vec::with_capacity(MESSAGES);
    for (i, id) in ids.iter().enumerate() {
        while unsaved.len() >= WINDOW {
            let v = next_frame(&mut f).await;
            track(v, &mut unsaved, &mut echoed);
        }
        f.send_json(&chat(id, &format!("{i} {body}")))
            .await
            .unwrap();
        unsaved.insert(id.clone());
    }
    while !unsaved.is_empty() || echoed.len() < MESSAGES {
        let v = next_frame(&mut f).await;
        track(v, &mut unsaved, &mut echoed);
    }
    assert_eq!(
        echoed, ids,
        "the sender's own session gets every message, in order"
    );
    let (_w, got) = watching.await.unwrap();
    assert_eq!(got, ids, "the watcher gets every message, in order");
    stalled_end(&mut stalled).await;
    one_eviction_counted(&s, counted_before).await;
    comes_back(&s, &staller).await;
    s.stop().await;
}

// No "unpaced flood" test: when one sender outpaces a reader for long
// enough, evicting that reader is the designed outcome (the hub never waits),
// however diligently the reader reads. What protects readers from a flooding
// sender is the per-connection rate limit, tested in errors.rs.

/// A client that stops reading but keeps sending (its own chats and their
/// receipts come back to it): its session's one task keeps reading its
/// frames while its write is stuck, and must still notice the eviction
/// (queue full) and close (4002) instead of holding the room or its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_that_keeps_sending_is_evicted() {
    let (s, _staller, mut stalled, w, f) = flood_room("32").await;
    // Only the staller is in the room: nobody else to read or be evicted.
    drop((w, f));
    let before = (
        metric(&s, EVICTED_SLOW).await,
        metric(&s, CLOSED_4002).await,
    );
    let body = "x".repeat(3900);
    let mut sent = 0usize;
    while sent < MESSAGES {
        if sent.is_multiple_of(50) && metric(&s, EVICTED_SLOW).await > before.0 {
            break;
        }
        let frame = chat(&uuid(), &format!("{sent} {body}"));
        match tokio::time::timeout(T, stalled.send_json(&frame)).await {
            Ok(Ok(())) => sent += 1,
            // The server closed (and then dropped) the socket, or stopped reading.
            _ => break,
        }
    }
    eprintln!("the staller sent {sent} messages");
    stalled_end(&mut stalled).await;
    one_eviction_counted(&s, before).await;
    s.stop().await;
}
