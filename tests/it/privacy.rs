//! Private messages: live delivery, WS history, HTTP history and resume show
//! them to the sender and the target only.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn private_reaches_sender_and_target_sessions_only() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a1 = s.join(&alice, "secret").await;
    let mut a2 = s.join(&alice, "secret").await;
    let mut b1 = s.join(&bob, "secret").await;
    let mut b2 = s.join(&bob, "secret").await;
    let mut c = s.join(&carol, "secret").await;
    // bob's session in another room is not in this room.
    let mut b_away = s.join(&bob, "lobby").await;
    let mut d_away = s.join(&carol, "lobby").await;

    let id = uuid();
    a1.send_json(&private(&id, &bob.username, "just us"))
        .await
        .unwrap();
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let m = expect_msg(ws, &id).await;
        assert_eq!(m["type"], "private");
        assert_eq!(m["target"], bob.username.as_str());
        assert_eq!(m["sender"], alice.username.as_str());
        assert_eq!(m["content"], "just us");
        assert_eq!(m["room"], "secret");
    }
    expect_receipt(&mut a1, &id, "saved").await;

    // carol never sees it live.
    let seen = marker(&mut a1, &mut [&mut c]).await;
    assert!(
        seen[1].iter().all(|f| f["id"] != id.as_str()),
        "third user got a private: {:?}",
        seen[1]
    );
    let seen = marker(&mut d_away, &mut [&mut b_away]).await;
    assert!(
        seen[1].iter().all(|f| f["id"] != id.as_str()),
        "a private went to another room: {:?}",
        seen[1]
    );

    // WS history.
    for (ws, sees) in [(&mut a2, true), (&mut b1, true), (&mut c, false)] {
        ws.send_json(&json!({"type": "history", "req": "h"}))
            .await
            .unwrap();
        let h = ws.expect("history", T).await.unwrap();
        assert_eq!(ids_of(&h).contains(&id), sees, "{h}");
        if sees {
            let m = &h["messages"][0];
            assert_eq!(m["type"], "private");
            assert_eq!(m["target"], bob.username.as_str());
            assert_eq!(m["content"], "just us");
        }
    }
    // HTTP history.
    for (acct, sees) in [(&alice, true), (&bob, true), (&carol, false)] {
        let r = http_history(&s, acct, "secret", "").await;
        assert_eq!(r.status, 200);
        let h = r.json();
        assert_eq!(ids_of(&h).contains(&id), sees, "{}: {h}", acct.username);
        // carol sees only the marker; nothing about the private.
        if !sees {
            assert!(!r.body.contains("just us"), "{}", r.body);
            assert_eq!(contents_of(&h), ["-- marker --"]);
        }
    }
    // Join history.
    let (_c2, _, h) = join_full(&s, &carol, "secret", None, None).await;
    assert!(!ids_of(&h).contains(&id));
    let (_b3, _, h) = join_full(&s, &bob, "secret", None, None).await;
    assert!(ids_of(&h).contains(&id));
    s.stop().await;
}

#[tokio::test]
async fn privates_do_not_leak_through_paging_or_resume() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a = s.join(&alice, "mixed").await;
    let _b = s.join(&bob, "mixed").await;
    let (c, _, _) = join_full(&s, &carol, "mixed", None, None).await;
    let first = say_saved(&mut a, "public 0").await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    close_and_wait(c).await;

    let mut privates = Vec::new();
    for i in 0..5 {
        let id = uuid();
        a.send_json(&private(&id, &bob.username, &format!("private {i}")))
            .await
            .unwrap();
        expect_msg(&mut a, &id).await;
        privates.push(id);
        say(&mut a, &format!("public {}", i + 1)).await;
    }
    // Saved in order: once this one is saved, all before it are.
    let last = say_saved(&mut a, "public end").await;

    // carol resumes: only public messages, all of them.
    let (_c, w, h) = join_full(&s, &carol, "mixed", None, Some(&cursor)).await;
    assert_eq!(w["resumed"], true);
    assert_eq!(
        contents_of(&h),
        [
            "public 1",
            "public 2",
            "public 3",
            "public 4",
            "public 5",
            "public end"
        ]
    );
    // carol pages with a small limit: `more` and pages never count privates she cannot see.
    let r = http_history(&s, &carol, "mixed", "limit=3").await.json();
    assert_eq!(contents_of(&r), ["public 4", "public 5", "public end"]);
    assert_eq!(r["more"], true);
    let before = r["messages"][0]["cursor"].as_str().unwrap().to_owned();
    let r = http_history(&s, &carol, "mixed", &format!("limit=3&before={before}"))
        .await
        .json();
    assert_eq!(contents_of(&r), ["public 1", "public 2", "public 3"]);
    let before = r["messages"][0]["cursor"].as_str().unwrap().to_owned();
    let r = http_history(&s, &carol, "mixed", &format!("limit=3&before={before}"))
        .await
        .json();
    assert_eq!(contents_of(&r), ["public 0"]);
    assert_eq!(r["more"], false);

    // bob sees them all.
    let r = http_history(&s, &bob, "mixed", "").await.json();
    assert_eq!(r["messages"].as_array().unwrap().len(), 12);
    for p in &privates {
        assert!(ids_of(&r).contains(p));
    }
    assert_eq!(
        r["messages"].as_array().unwrap().last().unwrap()["id"],
        last["id"]
    );
    s.stop().await;
}
