//! WebSocket frames: sending chats, waiting for a frame of a kind, markers
//! that prove what did not arrive, and reading history pages.

use std::time::Duration;

use hubbub_client::hostile::raw::{RawReader, RawWriter, RawWs, ServerFrame};
use hubbub_client::{self as client, Account, Incoming, WsClient, frames};
use serde_json::{Value, json};

use super::server::{T, TestServer, name, user_on};

pub fn chat(id: &str, content: &str) -> Value {
    json!({"type": "chat", "id": id, "content": content})
}

/// Sends a chat and returns its id.
pub async fn say(ws: &mut WsClient, content: &str) -> String {
    let (id, msg) = frames::chat(content);
    ws.send(&msg).await.unwrap();
    id.to_string()
}

/// The next chat/private frame with this id.
pub async fn expect_msg(ws: &mut WsClient, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(client::Incoming::Frame(v))
                if (v["type"] == "chat" || v["type"] == "private") && v["id"] == id =>
            {
                return v;
            }
            Some(client::Incoming::Frame(_)) => continue,
            other => panic!("waiting for message {id}: {other:?}"),
        }
    }
}

/// Collects frames until `quiet` passes with nothing new.
pub async fn drain(ws: &mut WsClient, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(client::Incoming::Frame(v)) = ws.recv(quiet).await {
        out.push(v);
    }
    out
}

/// Joins with an optional client id and `since`; returns the socket, `welcome` and `history`.
/// Fails if anything comes between `welcome` and `history`.
pub async fn join_full(
    s: &TestServer,
    acct: &Account,
    room: &str,
    client_id: Option<&str>,
    since: Option<&str>,
) -> (WsClient, Value, Value) {
    let mut ws = client::join(s.addr, acct, room, client_id, since)
        .await
        .unwrap();
    let welcome = next_frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
    let history = next_frame(&mut ws).await;
    assert_eq!(history["type"], "history", "second frame: {history}");
    (ws, welcome, history)
}

/// The very next JSON frame; panics on close or timeout.
pub async fn next_frame(ws: &mut WsClient) -> Value {
    match ws.recv(T).await {
        Some(Incoming::Frame(v)) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The next frame for which `pred` holds, skipping others; panics on close or timeout.
pub async fn expect_where(ws: &mut WsClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(v)) if pred(&v) => return v,
            Some(Incoming::Frame(_)) => continue,
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

/// Every frame up to and including the chat/private message with `id`.
/// Frames from one session reach the hub in order and every session's queue
/// is FIFO, so a marker sent after an action proves what that action did not deliver.
pub async fn until_msg(ws: &mut WsClient, id: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(v)) => {
                let done = (v["type"] == "chat" || v["type"] == "private") && v["id"] == id;
                out.push(v);
                if done {
                    return out;
                }
            }
            other => panic!("waiting for message {id}: {other:?} after {out:?}"),
        }
    }
}

/// Sends a marker chat from `from` and returns, for each of `watchers`, the
/// frames it got up to that marker (the marker included). `from`'s own frames
/// up to its echo are returned first.
pub async fn marker(from: &mut WsClient, watchers: &mut [&mut WsClient]) -> Vec<Vec<Value>> {
    let id = say(from, "-- marker --").await;
    let mut out = vec![until_msg(from, &id).await];
    for w in watchers.iter_mut() {
        out.push(until_msg(w, &id).await);
    }
    out
}

/// The frames of `frames` whose `type` is `ty`.
pub fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

pub fn private(id: &str, target: &str, content: &str) -> Value {
    json!({"type": "private", "id": id, "target": target, "content": content})
}

/// The next `error` frame.
pub async fn expect_error(ws: &mut WsClient) -> Value {
    expect_where(ws, "an error frame", |v| v["type"] == "error").await
}

/// The next `receipt` for `id` with `status`.
pub async fn expect_receipt(ws: &mut WsClient, id: &str, status: &str) -> Value {
    expect_where(ws, &format!("receipt {status} for {id}"), |v| {
        v["type"] == "receipt" && v["id"] == id && v["status"] == status
    })
    .await
}

/// Sends a chat, waits for its echo and its `saved` receipt; returns the echo.
pub async fn say_saved(ws: &mut WsClient, content: &str) -> Value {
    let id = say(ws, content).await;
    let echo = expect_msg(ws, &id).await;
    expect_receipt(ws, &id, "saved").await;
    echo
}

/// The next `presence` whose user list is exactly `users` (in this order).
pub async fn expect_presence(ws: &mut WsClient, users: &[&str]) -> Value {
    expect_where(ws, &format!("presence {users:?}"), |v| {
        v["type"] == "presence"
            && v["users"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|u| u.as_str())
                    .eq(users.iter().map(|u| Some(*u)))
            })
    })
    .await
}

/// Closes from the client side and waits until the server has closed too.
pub async fn close_and_wait(mut ws: WsClient) {
    let _ = ws.ws.close(None).await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.recv(left).await {
            Some(Incoming::Frame(_)) => continue,
            Some(Incoming::Closed(_)) => return,
            None => panic!("server did not finish the close handshake"),
        }
    }
}

/// The ids of a history page's messages, in order.
pub fn ids_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The contents of a history page's messages, in order.
pub fn contents_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {page}"))
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// `2026-11-28T08:00:00.123Z` → milliseconds since the epoch; `None` if not exactly that form.
pub fn ts_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ".as_bytes();
    for (c, p) in b.iter().zip(shape) {
        let ok = if *p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        };
        if !ok {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi) * 60 + sec) as u64 * 1000 + ms as u64)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cursor as PROTOCOL.md allows: a non-empty URL-safe string.
pub fn is_cursor(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A raw-frame socket of a fresh user (name prefix `who`) in `room`, over the
/// server's own endpoint (plain or TLS), read past `welcome` and `history`.
pub async fn raw_joined(s: &TestServer, who: &str, room: &str) -> (RawReader, RawWriter) {
    let acct = user_on(s, &name(who)).await;
    let (mut rd, wr) = RawWs::connect(&s.endpoint(), &format!("/ws?room={room}"), &acct)
        .await
        .unwrap()
        .split();
    let mut seen = 0;
    while seen < 2 {
        match tokio::time::timeout(T, rd.next()).await.unwrap().unwrap() {
            Some(ServerFrame::Text(_)) => seen += 1,
            Some(_) => {}
            None => panic!("closed while joining"),
        }
    }
    (rd, wr)
}
