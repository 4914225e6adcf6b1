//! The live fuzz, bounded: hostile connections send random and mutated frames
//! to a real server over real sockets while a well-behaved pair chats. Every
//! bad frame must get the answer docs/PROTOCOL.md documents (error code or
//! close code), the pair must get every message, and the server must stay up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use hubbub_client::hostile::calm::Pair;
use hubbub_client::hostile::drive::{self, Settings};
use hubbub_client::hostile::raw::{OP_CONT, OP_TEXT, RawFrame, ServerFrame};

/// Rate limits out of the way: this exercises parsing, not the limiter.
const FLAGS: &[&str] = &["--msgs-per-sec", "1000000", "--burst", "1000000"];

fn settings(frames: u64, seed: u64) -> Settings {
    Settings {
        frames,
        max_time: Duration::from_secs(120),
        round: 16,
        close_chance: 0.05,
        answer_timeout: Duration::from_secs(20),
        seed,
        room_prefix: format!("fz{seed}-"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_hostile_frames_are_each_answered_as_documented() {
    let s = TestServer::start_with(FLAGS).await;
    let mut accounts = Vec::new();
    for _ in 0..4 {
        accounts.push(s.user(&name("fz")).await);
    }
    let (a, b) = (s.user(&name("calm")).await, s.user(&name("calm")).await);
    let mut pair = Pair::join(&s.endpoint(), &a, &b, "calm").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calm = {
        let stop = stop.clone();
        tokio::spawn(async move {
            pair.chat(
                Duration::from_millis(20),
                None,
                &stop,
                Duration::from_secs(20),
            )
            .await
        })
    };
    let tally = drive::run(&s.endpoint(), &accounts, &settings(20_000, 9)).await;
    stop.store(true, Ordering::Relaxed);
    let calm = calm.await.unwrap();
    let report = tally.json();
    eprintln!("fuzz: {report}\ncalm: {}", calm.json());

    assert_eq!(
        tally.mismatches, 0,
        "answers differ from PROTOCOL.md: {report}"
    );
    assert!(tally.frames >= 20_000, "{report}");
    assert_eq!(
        tally.lost_close_replies, 0,
        "client closes not answered: {report}"
    );
    assert_every_kind_seen(&tally, &report);
    assert!(calm.failure.is_none(), "{:?}", calm.failure);
    assert!(
        calm.sent > 0 && calm.missing == 0,
        "well-behaved pair lost messages: {}",
        calm.json()
    );
    assert_eq!(raw_get(s.addr, "/healthz").await.0, 200);
    // A fresh client still joins and chats.
    let c = s.user(&name("after")).await;
    let mut ws = s.join(&c, "after").await;
    let id = say(&mut ws, "still here").await;
    expect_msg(&mut ws, &id).await;
}

/// Every kind of abuse was tried and every kind of answer seen.
fn assert_every_kind_seen(tally: &drive::Tally, report: &serde_json::Value) {
    for class in [
        "not_json",
        "json_array",
        "truncated",
        "wrong_type",
        "huge_number",
        "deep_nesting",
        "unknown_type",
        "missing_field",
        "bad_value",
        "too_long",
        "command_error",
        "forged_chat",
        "private_unknown",
        "fragmented",
        "control_ping",
        "binary",
        "invalid_utf8",
        "oversize",
        "bad_framing",
        "client_close",
    ] {
        assert!(
            tally.classes.get(class).is_some_and(|n| *n > 0),
            "no {class}: {report}"
        );
    }
    for answer in [
        "error:bad_request",
        "error:too_large",
        "error:unknown_command",
        "error:not_found",
        "echo",
        "system",
        "history",
        "pong",
        "close:1002",
        "close:1003",
        "close:1007",
        "close:1009",
    ] {
        assert!(
            tally.answers.get(answer).is_some_and(|n| *n > 0),
            "no {answer}: {report}"
        );
    }
}

/// The close code the server answers `frames` with.
async fn close_code_for(s: &TestServer, frames: &[RawFrame]) -> u16 {
    let (mut rd, mut wr) = raw_joined(s, "raw", "raw").await;
    let mut bytes = Vec::new();
    for f in frames {
        f.encode([1, 2, 3, 4], &mut bytes);
    }
    wr.write(&bytes).await.unwrap();
    loop {
        match tokio::time::timeout(T, rd.next())
            .await
            .expect("no close within 5 s")
        {
            Ok(Some(ServerFrame::Close(code, _))) => return code,
            Ok(Some(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

// Found by the fuzz: a read error other than "too large" ended the session as
// if the peer had left, so the client got 1000 "bye" for a broken frame.

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let s = TestServer::start_with(FLAGS).await;
    let bad = RawFrame::text(b"{\"type\":\"chat\",\"content\":\"\xff\"}".to_vec());
    assert_eq!(close_code_for(&s, &[bad]).await, 1007);
    let split = vec![
        RawFrame::text(b"{\"a\":\"\xe2".to_vec()).fin(false),
        RawFrame::new(OP_CONT, b"\x82\"}".to_vec()),
    ];
    assert_eq!(close_code_for(&s, &split).await, 1007);
}

#[tokio::test]
async fn broken_framing_closes_with_1002() {
    let s = TestServer::start_with(FLAGS).await;
    let typing = br#"{"type":"typing","active":true}"#.to_vec();
    let mut rsv = RawFrame::text(typing.clone());
    rsv.rsv = 4;
    let mut unmasked = RawFrame::text(typing.clone());
    unmasked.masked = false;
    for frames in [
        vec![RawFrame::new(OP_CONT, typing.clone())],
        vec![
            RawFrame::text(typing.clone()).fin(false),
            RawFrame::new(OP_TEXT, typing.clone()),
        ],
        vec![RawFrame::new(0x3, typing.clone())],
        vec![rsv],
        vec![unmasked],
    ] {
        assert_eq!(close_code_for(&s, &frames).await, 1002, "{frames:?}");
    }
    assert_eq!(raw_get(s.addr, "/healthz").await.0, 200);
}
