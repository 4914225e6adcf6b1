//! `GET /ws?…&batch=1`: server frames newline-joined into fewer text frames,
//! every line one frame, nothing lost or reordered; without it, one text
//! frame per message; any other value refused before the upgrade.

use futures_util::StreamExt;
use hubbub_client::{self as client, ConnectError, WsClient};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Chats in the flood: with 3900-byte bodies, far more than the kernel's
/// buffers hold for a reader with a 4 KiB receive window, so the server's
/// writer is stuck while the hub keeps queueing (eviction.rs relies on it too).
const MESSAGES: usize = 2000;

/// The next text frame as it came on the wire (pings skipped).
async fn next_text(ws: &mut WsClient) -> String {
    loop {
        match tokio::time::timeout(T, ws.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("waiting for a text frame: {other:?}"),
        }
    }
}

/// Each line of a text frame, parsed: every one must be a frame with a type.
fn lines_of(text: &str) -> Vec<Value> {
    text.split('\n')
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {l:?}"));
            assert!(v["type"].is_string(), "a line without a type: {l}");
            v
        })
        .collect()
}

/// Reads raw text frames until every id in `ids` arrived as a chat. Returns
/// (text frames, frames carried, the chat ids in arrival order).
async fn read_flood(ws: &mut WsClient, ids: &[String]) -> (usize, usize, Vec<String>) {
    let (mut texts, mut carried, mut chats) = (0, 0, Vec::new());
    while chats.len() < ids.len() {
        let text = next_text(ws).await;
        texts += 1;
        for v in lines_of(&text) {
            carried += 1;
            if v["type"] == "chat" && ids.contains(&v["id"].as_str().unwrap().to_owned()) {
                chats.push(v["id"].as_str().unwrap().to_owned());
            }
        }
    }
    (texts, carried, chats)
}

/// Two stalled readers, one with `batch=1`, one without, while another user
/// floods the room (paced by its `saved` receipts). Then both read: the
/// batched one gets the same chats in the same order in fewer text frames,
/// every line a frame; the plain one gets one text frame per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_comes_batched_only_to_who_asked_in_order() {
    const WINDOW: usize = 12;
    let s = TestServer::start_with(&[
        "--session-queue",
        "100000",
        "--msgs-per-sec",
        "100000",
        "--burst",
        "100000",
    ])
    .await;
    let (a, b, c) = (
        s.user(&name("batched")).await,
        s.user(&name("plain")).await,
        s.user(&name("flooder")).await,
    );
    let mut batched = connect_small_buffer(&s, &a, "burst", "&batch=1").await;
    // The join burst: welcome and history (and presence, if queued by then) in one frame.
    let first = lines_of(&next_text(&mut batched).await);
    assert!(first.len() >= 2, "the join burst came unbatched: {first:?}");
    assert_eq!(
        (&first[0]["type"], &first[1]["type"]),
        (&"welcome".into(), &"history".into())
    );
    let mut plain = connect_small_buffer(&s, &b, "burst", "&batch=0").await;
    let first = next_text(&mut plain).await;
    assert_eq!(lines_of(&first)[0]["type"], "welcome", "{first}");
    assert!(!first.contains('\n'), "batch=0 got a joined frame: {first}");
    let mut f = s.join(&c, "burst").await;

    let ids: Vec<String> = (0..MESSAGES).map(|_| uuid()).collect();
    let body = "x".repeat(3900);
    let mut unsaved = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        while unsaved.len() >= WINDOW {
            let v = next_frame(&mut f).await;
            if v["type"] == "receipt" && v["status"] == "saved" {
                unsaved.remove(v["id"].as_str().unwrap());
            }
        }
        f.send_json(&chat(id, &format!("{i} {body}")))
            .await
            .unwrap();
        unsaved.insert(id.clone());
    }

    let (texts, carried, chats) = read_flood(&mut batched, &ids).await;
    assert_eq!(chats, ids, "batch=1: every chat, once, in order");
    assert!(
        texts < carried,
        "batch=1: {texts} text frames for {carried} frames: nothing was joined"
    );
    let (texts, carried, chats) = read_flood(&mut plain, &ids).await;
    assert_eq!(chats, ids, "batch=0: every chat, once, in order");
    assert_eq!(texts, carried, "batch=0: one text frame per message");
    let joined = metric_sample(s.addr, "hubbub_batched_messages_total")
        .await
        .unwrap_or(0.0);
    assert!(joined >= 2.0, "hubbub_batched_messages_total is {joined}");
    s.stop().await;
}

/// `batch` is absent, `0` or `1`; anything else is refused with 400
/// `bad_request` before the upgrade.
#[tokio::test]
async fn a_bad_batch_value_is_refused_before_the_upgrade() {
    let s = TestServer::start().await;
    let a = s.user(&name("badbatch")).await;
    let cookie = a.cookie_header();
    for bad in ["2", "x", "", "true", "01"] {
        let r = client::connect(
            s.addr,
            &format!("room=x&batch={bad}"),
            &[("cookie", &cookie)],
        )
        .await;
        match r {
            Err(ConnectError::Status(400, body)) => {
                let v: Value = serde_json::from_str(&body.unwrap_or_default()).unwrap();
                assert_eq!(v["error"]["code"], "bad_request", "batch={bad}");
            }
            Err(e) => panic!("batch={bad}: {e}"),
            Ok(_) => panic!("batch={bad} was accepted"),
        }
    }
    for good in ["0", "1"] {
        let r = client::connect(
            s.addr,
            &format!("room=x&batch={good}"),
            &[("cookie", &cookie)],
        )
        .await;
        assert!(r.is_ok(), "batch={good}: {:?}", r.err());
    }
    s.stop().await;
}
