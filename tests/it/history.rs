//! History on join, resume with `since`, paging over HTTP, and durability across a restart.

use crate::support::*;
use hubbub_client as client;
use serde_json::json;

#[tokio::test]
async fn plain_join_gets_the_last_50_with_more() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "fifty").await;
    for i in 0..3 {
        say(&mut a, &format!("n{i}")).await;
    }
    let last = say(&mut a, "n3").await;
    expect_receipt(&mut a, &last, "saved").await;
    let (_b, _, h) = join_full(&s, &bob, "fifty", None, None).await;
    assert_eq!(contents_of(&h), ["n0", "n1", "n2", "n3"]);
    assert_eq!(h["more"], false);

    for i in 4..60 {
        say(&mut a, &format!("n{i}")).await;
    }
    let last = say(&mut a, "n60").await;
    expect_receipt(&mut a, &last, "saved").await;
    let (_b, w, h) = join_full(&s, &bob, "fifty", None, None).await;
    assert_eq!(w["resumed"], false);
    let want: Vec<String> = (11..=60).map(|i| format!("n{i}")).collect();
    assert_eq!(contents_of(&h), want);
    assert_eq!(h["more"], true);
    // Oldest first, in cursor order.
    let cursors: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cursor"].as_str().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // Join history carries statuses like any history.
    assert!(
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "saved")
    );
    s.stop().await;
}

#[tokio::test]
async fn resume_with_since_gets_exactly_what_was_missed() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut b = s.join(&bob, "resume").await;
    let _c = s.join(&carol, "resume").await;
    let (mut a, _, _) = join_full(&s, &alice, "resume", Some("phone"), None).await;
    for i in 0..3 {
        say(&mut b, &format!("seen {i}")).await;
    }
    let id = say(&mut b, "seen 3").await;
    let last_seen = expect_msg(&mut a, &id).await;
    let since = last_seen["cursor"].as_str().unwrap().to_owned();
    close_and_wait(a).await;

    let mut missed = Vec::new();
    for i in 0..7 {
        missed.push(say(&mut b, &format!("missed {i}")).await);
    }
    // A private to carol is not alice's to see; one to alice is.
    let hidden = uuid();
    b.send_json(&private(&hidden, &carol.username, "not for alice"))
        .await
        .unwrap();
    let pid = uuid();
    b.send_json(&private(&pid, &alice.username, "missed dm"))
        .await
        .unwrap();
    missed.push(pid.clone());
    expect_receipt(&mut b, &pid, "saved").await;

    let (mut a, w, h) = join_full(&s, &alice, "resume", Some("phone"), Some(&since)).await;
    assert_eq!(w["resumed"], true);
    assert_eq!(ids_of(&h), missed, "no gap, no duplicate");
    assert_eq!(h["more"], false);
    // And the live stream continues right after.
    let next = say(&mut b, "live again").await;
    let frames = until_msg(&mut a, &next).await;
    assert!(
        frames
            .iter()
            .all(|f| !missed.contains(&f["id"].as_str().unwrap_or("").to_owned())),
        "replayed twice: {frames:?}"
    );

    // Resuming from the newest cursor: resumed, nothing to replay.
    let newest = frames.last().unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_a, w, h) = join_full(&s, &alice, "resume", None, Some(&newest)).await;
    assert_eq!(w["resumed"], true);
    assert_eq!(h["messages"], json!([]));
    assert_eq!(h["more"], false);
    s.stop().await;
}

#[tokio::test]
async fn since_the_server_cannot_honour_gives_the_last_50() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "garbled").await;
    let mut a_other = s.join(&alice, "elsewhere").await;
    let foreign = say_saved(&mut a_other, "other room").await;
    for i in 0..54 {
        say(&mut a, &format!("g{i}")).await;
    }
    let last = say(&mut a, "g54").await;
    expect_receipt(&mut a, &last, "saved").await;
    let want: Vec<String> = (5..=54).map(|i| format!("g{i}")).collect();

    let foreign_cursor = foreign["cursor"].as_str().unwrap().to_owned();
    for since in [
        "garbage",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "00000000000000000000000000000001",
        "0000000000000000000000000000000",
        "-_-_",
        foreign_cursor.as_str(),
    ] {
        let (_ws, w, h) = join_full(&s, &alice, "garbled", None, Some(since)).await;
        assert_eq!(w["resumed"], false, "since={since}");
        assert_eq!(contents_of(&h), want, "since={since}");
        assert_eq!(h["more"], true, "since={since}");
    }
    s.stop().await;
}

#[tokio::test]
async fn join_while_others_send_has_no_gap_and_no_duplicate() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "busy").await;
    const N: usize = 300;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            // Paced by the echo, so the join below lands mid-stream.
            let id = say(&mut b, &format!("{i}")).await;
            expect_msg(&mut b, &id).await;
        }
        b
    });
    // Join somewhere in the middle of the stream.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let (mut a, _, h) = join_full(&s, &alice, "busy", None, None).await;
    let mut got: Vec<usize> = contents_of(&h).iter().map(|c| c.parse().unwrap()).collect();
    while got.last() != Some(&(N - 1)) {
        let f = expect_where(&mut a, "bob's messages", |v| v["type"] == "chat").await;
        got.push(f["content"].as_str().unwrap().parse().unwrap());
    }
    let first = got[0];
    let want: Vec<usize> = (first..N).collect();
    assert_eq!(got, want, "history then live must be contiguous");
    sender.await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn http_history_pages_and_bounds() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "http").await;
    for i in 0..9 {
        say(&mut a, &format!("h{i}")).await;
    }
    let last = say(&mut a, "h9").await;
    expect_receipt(&mut a, &last, "saved").await;

    let r = http_history(&s, &alice, "http", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"))
    );
    let all = r.json();
    assert_eq!(all["more"], false);
    assert_eq!(contents_of(&all).len(), 10);
    let m = &all["messages"][0];
    assert_eq!(m["type"], "chat");
    assert_eq!(m["room"], "http");
    assert_eq!(m["sender"], alice.username.as_str());
    assert_eq!(m["status"], "saved");
    assert!(is_cursor(&m["cursor"]) && ts_ms(m["ts"].as_str().unwrap()).is_some());

    let p = http_history(&s, &alice, "http", "limit=4").await.json();
    assert_eq!(contents_of(&p), ["h6", "h7", "h8", "h9"]);
    assert_eq!(p["more"], true);
    let c = p["messages"][0]["cursor"].as_str().unwrap().to_owned();
    let p = http_history(&s, &alice, "http", &format!("before={c}&limit=4"))
        .await
        .json();
    assert_eq!(contents_of(&p), ["h2", "h3", "h4", "h5"]);
    assert_eq!(p["more"], true);
    let c = p["messages"][0]["cursor"].as_str().unwrap().to_owned();
    let p = http_history(&s, &alice, "http", &format!("before={c}&limit=4"))
        .await
        .json();
    assert_eq!(contents_of(&p), ["h0", "h1"]);
    assert_eq!(p["more"], false);
    let p = http_history(&s, &alice, "http", "limit=1").await.json();
    assert_eq!(contents_of(&p), ["h9"]);
    let p = http_history(&s, &alice, "http", "limit=100").await.json();
    assert_eq!(contents_of(&p).len(), 10);

    for q in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=ten",
        "before=nope",
        "before=",
    ] {
        let r = http_history(&s, &alice, "http", q).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(error_code(&r), "bad_request", "{q}");
    }
    for room in ["Caps", "-dash", "a.b", &"x".repeat(33)] {
        let r = http_history(&s, &alice, room, "").await;
        assert_eq!(r.status, 400, "{room}: {}", r.body);
        assert_eq!(error_code(&r), "bad_request");
    }
    let r = http_history(&s, &alice, "nobody-here", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"messages": [], "more": false}));

    let r = client::request(s.addr, "GET", "/api/rooms/http/messages", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r), "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_history_and_cursors_keep_growing() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "durable").await;
    let b = s.join(&bob, "durable").await;
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(say_saved(&mut a, &format!("before {i}")).await);
    }
    let pid = uuid();
    a.send_json(&private(&pid, &bob.username, "dm before"))
        .await
        .unwrap();
    expect_receipt(&mut a, &pid, "saved").await;
    let old = http_history(&s, &alice, "durable", "").await.json();
    drop(a);
    drop(b);

    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &[]).await;
    // Accounts survive; so do tokens (the JWT secret is the same).
    let r = http(&s, "GET", "/api/me", Some(&alice), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let again = http_history(&s, &alice, "durable", "").await.json();
    assert_eq!(again, old, "history identical after restart");
    let hb = http_history(&s, &bob, "durable", "").await.json();
    assert!(ids_of(&hb).contains(&pid));

    // Resume across the restart works; new cursors follow the old ones.
    let since = before[2]["cursor"].as_str().unwrap();
    let (mut a, w, h) = join_full(&s, &alice, "durable", None, Some(since)).await;
    assert_eq!(w["resumed"], true);
    assert_eq!(contents_of(&h), ["before 3", "before 4", "dm before"]);
    let fresh = say_saved(&mut a, "after restart").await;
    let old_max = old["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cursor"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    assert!(
        fresh["cursor"].as_str().unwrap() > old_max.as_str(),
        "{} <= {old_max}",
        fresh["cursor"]
    );
    // Old ids are still known: resending one is idempotent, not a new message.
    let old_id = before[0]["id"].as_str().unwrap();
    a.send_json(&chat(old_id, "before 0")).await.unwrap();
    expect_receipt(&mut a, old_id, "saved").await;
    let h = http_history(&s, &alice, "durable", "").await.json();
    assert_eq!(
        contents_of(&h),
        [
            "before 0",
            "before 1",
            "before 2",
            "before 3",
            "before 4",
            "dm before",
            "after restart"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn resume_replays_at_most_1000_then_pages_with_after() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "long").await;
    let (mut a, _, _) = join_full(&s, &alice, "long", None, None).await;
    let seen = say(&mut b, "seen").await;
    let since = expect_msg(&mut a, &seen).await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    close_and_wait(a).await;
    let mut ids = Vec::new();
    for i in 0..1010 {
        // Paced by the echo: a burst is not what this test is about.
        let id = say(&mut b, &format!("{i}")).await;
        expect_msg(&mut b, &id).await;
        ids.push(id);
    }
    expect_receipt(&mut b, ids.last().unwrap(), "saved").await;

    let (mut a, w, h) = join_full(&s, &alice, "long", None, Some(&since)).await;
    assert_eq!(w["resumed"], true);
    assert_eq!(ids_of(&h), ids[..1000].to_vec());
    assert_eq!(h["more"], true);
    let last = h["messages"][999]["cursor"].as_str().unwrap().to_owned();
    a.send_json(&json!({"type": "history", "after": last, "limit": 100, "req": "rest"}))
        .await
        .unwrap();
    let rest = expect_where(&mut a, "the rest", |v| v["type"] == "history").await;
    assert_eq!(rest["req"], "rest");
    assert_eq!(ids_of(&rest), ids[1000..].to_vec());
    assert_eq!(rest["more"], false);
    s.stop().await;
}
