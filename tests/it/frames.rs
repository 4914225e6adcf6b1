//! Every server frame's fields and every client frame type, over real sockets.

use crate::support::*;
use serde_json::{Value, json};

/// Checks the fields every live chat/private frame carries.
fn check_live_msg(m: &Value, kind: &str, id: &str, room: &str, sender: &str, content: &str) {
    assert_eq!(m["type"], kind, "{m}");
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["room"], room, "{m}");
    assert_eq!(m["sender"], sender, "{m}");
    assert_eq!(m["content"], content, "{m}");
    assert!(is_cursor(&m["cursor"]), "cursor: {m}");
    let ts = m["ts"].as_str().unwrap_or_else(|| panic!("ts: {m}"));
    let ms = ts_ms(ts).unwrap_or_else(|| panic!("ts not RFC 3339 UTC with ms: {ts}"));
    let now = now_ms();
    assert!(
        ms.abs_diff(now) < 120_000,
        "ts {ts} is not the server's time (now {now})"
    );
    assert!(
        m.get("status").is_none(),
        "live frames carry no status: {m}"
    );
    assert!(
        m.get("action").is_none() || m["action"] == false,
        "action only for /me: {m}"
    );
}

#[tokio::test]
async fn welcome_has_every_field_and_the_configured_limits() {
    let s = TestServer::start_with(&["--max-frame", "4096", "--msgs-per-sec", "7", "--burst", "9"])
        .await;
    let alice = s.user(&name("alice")).await;
    let (_ws, w, h) = join_full(&s, &alice, "lobby", Some("tab-1_A"), None).await;
    assert_eq!(w["user"], alice.username.as_str());
    assert_eq!(w["room"], "lobby");
    assert_eq!(w["node"], "test-node");
    assert!(w["session"].as_str().is_some_and(|x| !x.is_empty()), "{w}");
    assert_eq!(w["client"], "tab-1_A");
    assert_eq!(w["resumed"], false);
    assert_eq!(
        w["limits"],
        json!({"max_frame": 4096, "max_content": 4000, "msgs_per_sec": 7, "burst": 9})
    );
    assert_eq!(h["messages"], json!([]));
    assert_eq!(h["more"], false);
    assert!(h.get("req").is_none(), "join history has no req: {h}");

    // Without a client id the server picks a valid one; without a room it is `general`.
    let mut ws = hubbub_client::connect(s.addr, "", &[("cookie", alice.cookie_header().as_str())])
        .await
        .unwrap();
    let w2 = next_frame(&mut ws).await;
    assert_eq!(w2["type"], "welcome");
    assert_eq!(w2["room"], "general");
    let c = w2["client"].as_str().unwrap();
    assert!(
        (1..=64).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "server-chosen client id {c:?}"
    );
    assert_ne!(w2["session"], w["session"], "each session has its own id");
    assert_eq!(next_frame(&mut ws).await["type"], "history");
    s.stop().await;
}

#[tokio::test]
async fn chat_frame_fields_and_cursor_order() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "fields").await;
    let mut b = s.join(&bob, "fields").await;

    let id1 = say(&mut a, "  first  ").await;
    let m1 = expect_msg(&mut b, &id1).await;
    check_live_msg(&m1, "chat", &id1, "fields", &alice.username, "first");
    assert!(m1.get("target").is_none(), "chat has no target: {m1}");
    // The sender's own session gets the same message.
    let e1 = expect_msg(&mut a, &id1).await;
    assert_eq!(e1, m1);

    let id2 = say(&mut b, "second").await;
    let m2 = expect_msg(&mut a, &id2).await;
    expect_receipt(&mut b, &id2, "saved").await;
    check_live_msg(&m2, "chat", &id2, "fields", &bob.username, "second");
    assert!(
        m2["cursor"].as_str().unwrap() > m1["cursor"].as_str().unwrap(),
        "cursors grow: {m1} then {m2}"
    );

    let id3 = uuid();
    a.send_json(&private(&id3, &bob.username, "psst"))
        .await
        .unwrap();
    let p = expect_msg(&mut b, &id3).await;
    check_live_msg(&p, "private", &id3, "fields", &alice.username, "psst");
    assert_eq!(p["target"], bob.username.as_str());

    // History shows the same messages with a status (once they are saved).
    expect_receipt(&mut a, &id3, "saved").await;
    a.send_json(&json!({"type": "history"})).await.unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(ids_of(&h), vec![id1.clone(), id2.clone(), id3.clone()]);
    for m in h["messages"].as_array().unwrap() {
        assert!(
            ["saved", "delivered", "seen"].contains(&m["status"].as_str().unwrap_or("")),
            "history status: {m}"
        );
        assert!(ts_ms(m["ts"].as_str().unwrap()).is_some(), "{m}");
    }
    assert_eq!(h["messages"][0]["cursor"], m1["cursor"]);
    assert_eq!(h["messages"][0]["ts"], m1["ts"]);
    assert_eq!(h["messages"][2]["target"], bob.username.as_str());
    assert_eq!(h["more"], false);
    s.stop().await;
}

#[tokio::test]
async fn history_request_echoes_req_and_pages_both_ways() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "pages").await;
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(say_saved(&mut a, &format!("m{i}")).await);
    }
    let cur = |i: usize| all[i]["cursor"].as_str().unwrap().to_owned();
    let contents = |h: &Value| contents_of(h);

    a.send_json(&json!({"type": "history", "limit": 3, "req": "r-1"}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(h["req"], "r-1");
    assert_eq!(contents(&h), ["m4", "m5", "m6"]);
    assert_eq!(h["more"], true);

    a.send_json(&json!({"type": "history", "limit": 3, "before": cur(4), "req": "r-2"}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(h["req"], "r-2");
    assert_eq!(contents(&h), ["m1", "m2", "m3"]);
    assert_eq!(h["more"], true);

    a.send_json(&json!({"type": "history", "limit": 3, "before": cur(1)}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert!(h.get("req").is_none(), "no req asked, none echoed: {h}");
    assert_eq!(contents(&h), ["m0"]);
    assert_eq!(h["more"], false);

    a.send_json(&json!({"type": "history", "limit": 3, "after": cur(0)}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(contents(&h), ["m1", "m2", "m3"]);
    assert_eq!(h["more"], true);

    a.send_json(&json!({"type": "history", "limit": 3, "after": cur(3)}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(contents(&h), ["m4", "m5", "m6"]);
    assert_eq!(h["more"], false);

    a.send_json(&json!({"type": "history", "after": cur(6)}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(h["messages"], json!([]));
    assert_eq!(h["more"], false);

    // Default limit: everything here (7 < 50).
    a.send_json(&json!({"type": "history", "req": "all"}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(h["req"], "all");
    assert_eq!(contents(&h), ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    s.stop().await;
}

#[tokio::test]
async fn history_default_limit_is_50_and_max_is_100() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "big").await;
    let mut last = String::new();
    for i in 0..120 {
        last = say(&mut a, &format!("n{i}")).await;
    }
    expect_receipt(&mut a, &last, "saved").await;
    a.send_json(&json!({"type": "history"})).await.unwrap();
    let h = a.expect("history", T).await.unwrap();
    let expect: Vec<String> = (70..120).map(|i| format!("n{i}")).collect();
    assert_eq!(contents_of(&h), expect);
    assert_eq!(h["more"], true);
    a.send_json(&json!({"type": "history", "limit": 100}))
        .await
        .unwrap();
    let h = a.expect("history", T).await.unwrap();
    let expect: Vec<String> = (20..120).map(|i| format!("n{i}")).collect();
    assert_eq!(contents_of(&h), expect);
    assert_eq!(h["more"], true);
    s.stop().await;
}

#[tokio::test]
async fn typing_goes_to_others_only_and_is_never_stored() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "typing").await;
    let mut a2 = s.join(&alice, "typing").await;
    let mut b = s.join(&bob, "typing").await;

    a.send_json(&json!({"type": "typing", "active": true}))
        .await
        .unwrap();
    let t = b.expect("typing", T).await.unwrap();
    assert_eq!(
        t,
        json!({"type": "typing", "room": "typing", "sender": alice.username, "active": true})
    );
    b.send_json(&json!({"type": "typing", "active": false}))
        .await
        .unwrap();
    let t = a.expect("typing", T).await.unwrap();
    assert_eq!(t["sender"], bob.username.as_str());
    assert_eq!(t["active"], false);

    // Marker: whatever the typing frames caused has been delivered by now.
    let seen = marker(&mut a, &mut [&mut a2, &mut b]).await;
    for t in of_type(&seen[0], "typing")
        .iter()
        .chain(&of_type(&seen[1], "typing"))
    {
        assert_ne!(
            t["sender"],
            alice.username.as_str(),
            "typing echoed to its sender: {t}"
        );
    }
    assert!(
        of_type(&seen[2], "typing")
            .iter()
            .all(|t| t["sender"] != bob.username.as_str()),
        "typing echoed to its sender: {:?}",
        seen[2]
    );

    a.send_json(&json!({"type": "history"})).await.unwrap();
    let h = a.expect("history", T).await.unwrap();
    assert_eq!(contents_of(&h), ["-- marker --"], "typing is never stored");
    s.stop().await;
}

#[tokio::test]
async fn presence_is_sorted_and_includes_the_joiner() {
    let s = TestServer::start().await;
    let zed = s.user(&name("zed")).await;
    let amy = s.user(&name("amy")).await;
    let mut z = s.join(&zed, "pres").await;
    let p = expect_presence(&mut z, &[zed.username.as_str()]).await;
    assert_eq!(p["room"], "pres");
    assert_eq!(p["count"], 1);

    let (mut a, _, _) = join_full(&s, &amy, "pres", None, None).await;
    let both = [amy.username.as_str(), zed.username.as_str()];
    // The others get a system join line (before the presence that follows the
    // join); the joiner gets none about itself.
    let sys = z.expect("system", T).await.unwrap();
    assert_eq!(sys["room"], "pres");
    assert!(
        sys["content"].as_str().unwrap().contains(&amy.username),
        "join line names the joiner: {sys}"
    );
    let pz = expect_presence(&mut z, &both).await;
    assert_eq!(pz["count"], 2);
    assert_eq!(pz["room"], "pres");
    // Everything amy got since her history, up to a marker sent after zed saw the join.
    let seen = marker(&mut z, &mut [&mut a]).await;
    assert!(
        of_type(&seen[1], "system").is_empty(),
        "joiner got a system line: {:?}",
        seen[1]
    );
    // amy's presence (the joiner included) came before the marker or comes now.
    let listed = |p: &&Value| p["users"] == json!(both) && p["count"] == 2;
    if !of_type(&seen[1], "presence").iter().any(listed) {
        let pa = expect_presence(&mut a, &both).await;
        assert_eq!(pa["count"], 2);
        assert_eq!(pa["room"], "pres");
    }

    // A user in another room is not listed.
    let other = s.user(&name("other")).await;
    let _o = s.join(&other, "elsewhere").await;
    z.send_json(&chat(&uuid(), "/who")).await.unwrap();
    let p = z.expect("presence", T).await.unwrap();
    assert_eq!(p["users"], json!(both));
    assert_eq!(p["count"], 2);
    s.stop().await;
}

#[tokio::test]
async fn join_and_leave_lines_count_users_not_sessions() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut b = s.join(&bob, "lines").await;
    let a1 = s.join(&alice, "lines").await;
    let joined = b.expect("system", T).await.unwrap();
    assert!(
        joined["content"]
            .as_str()
            .unwrap()
            .contains(&alice.username)
    );
    let both = {
        let mut v = [alice.username.as_str(), bob.username.as_str()];
        v.sort();
        v
    };
    expect_presence(&mut b, &both).await;

    // A second session of alice: no join line.
    let mut a2 = s.join(&alice, "lines").await;
    let seen = marker(&mut a2, &mut [&mut b]).await;
    assert!(
        of_type(&seen[1], "system").is_empty(),
        "second session made a join line: {:?}",
        seen[1]
    );

    // One of two sessions leaves: no leave line.
    close_and_wait(a1).await;
    let seen = marker(&mut a2, &mut [&mut b]).await;
    assert!(
        of_type(&seen[1], "system").is_empty(),
        "a session (not the user) leaving made a line: {:?}",
        seen[1]
    );

    // The last session leaves: a leave line and a presence without alice.
    close_and_wait(a2).await;
    let left = b.expect("system", T).await.unwrap();
    assert_eq!(left["room"], "lines");
    assert!(
        left["content"].as_str().unwrap().contains(&alice.username),
        "leave line names the user: {left}"
    );
    let p = expect_presence(&mut b, &[bob.username.as_str()]).await;
    assert_eq!(p["count"], 1);

    // History holds no system lines.
    b.send_json(&json!({"type": "history"})).await.unwrap();
    let h = b.expect("history", T).await.unwrap();
    assert_eq!(contents_of(&h), ["-- marker --", "-- marker --"]);
    s.stop().await;
}

#[tokio::test]
async fn forged_room_sender_and_ts_are_ignored() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let dave = s.user(&name("dave")).await;
    let mut a = s.join(&alice, "home").await;
    let _d = s.join(&dave, "home").await;
    let mut b = s.join(&bob, "away").await;
    let mut c = s.join(&carol, "away").await;

    let id = uuid();
    a.send_json(&json!({
        "type": "chat", "id": id, "content": "forged",
        "room": "away", "sender": bob.username, "ts": "2000-01-01T00:00:00.000Z",
        "cursor": "00000000000000000000000000000000", "action": true, "status": "seen"
    }))
    .await
    .unwrap();
    let m = expect_msg(&mut a, &id).await;
    check_live_msg(&m, "chat", &id, "home", &alice.username, "forged");
    assert_ne!(m["ts"], "2000-01-01T00:00:00.000Z");

    let pid = uuid();
    a.send_json(&json!({
        "type": "private", "id": pid, "target": dave.username, "content": "psst dave",
        "room": "away", "sender": carol.username
    }))
    .await
    .unwrap();
    let p = expect_msg(&mut a, &pid).await;
    assert_eq!(p["room"], "home");
    assert_eq!(p["sender"], alice.username.as_str());

    // Nothing reached the other room.
    let seen = marker(&mut c, &mut [&mut b]).await;
    for frames in &seen {
        assert!(
            frames
                .iter()
                .all(|f| f["id"] != id.as_str() && f["id"] != pid.as_str()),
            "forged message leaked into another room: {frames:?}"
        );
    }
    let away = http_history(&s, &bob, "away", "").await;
    assert_eq!(away.status, 200);
    assert_eq!(contents_of(&away.json()), ["-- marker --"]);
    let home = http_history(&s, &alice, "home", "").await.json();
    assert_eq!(ids_of(&home), vec![id.clone(), pid.clone()]);
    assert_eq!(home["messages"][0]["sender"], alice.username.as_str());
    assert_eq!(home["messages"][0]["room"], "home");
    assert_eq!(home["messages"][0]["ts"], m["ts"]);
    assert!(home["messages"][0].get("action").is_none() || home["messages"][0]["action"] == false);
    s.stop().await;
}
