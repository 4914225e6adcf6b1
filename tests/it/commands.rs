//! Every `/command` in PROTOCOL.md, and that replies which are not messages
//! store nothing and leave the id unused.

use crate::support::*;
use serde_json::json;

const FACES: &[(&str, &str)] = &[
    ("shrug", "¯\\_(ツ)_/¯"),
    ("lenny", "( ͡° ͜ʖ ͡°)"),
    ("tableflip", "(╯°□°）╯︵ ┻━┻"),
    ("unflip", "┬─┬ノ( º _ ºノ)"),
    ("bear", "ʕ •ᴥ•ʔ"),
    ("disapprove", "ಠ_ಠ"),
    ("hug", "(づ｡◕‿‿◕｡)づ"),
    ("dance", "└|∵|┐ ♪ ┌|∵|┘"),
    ("flex", "ᕦ(ò_ó)ᕤ"),
    ("cry", "(╥﹏╥)"),
    ("coffee", "☕"),
    ("fix", "🛠️"),
    ("deploy", "🚀"),
];

#[tokio::test]
async fn faces_with_and_without_text() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "faces").await;
    let mut b = s.join(&bob, "faces").await;
    let mut expected = Vec::new();
    for (word, face) in FACES {
        let id = say(&mut a, &format!("/{word}")).await;
        let m = expect_msg(&mut b, &id).await;
        assert_eq!(m["type"], "chat");
        assert_eq!(m["content"], *face, "/{word}");
        assert_eq!(m["sender"], alice.username.as_str());
        assert!(m.get("action").is_none() || m["action"] == false, "{m}");
        expected.push(face.to_string());

        let id = say(&mut a, &format!("/{word}   oh  well ")).await;
        let m = expect_msg(&mut b, &id).await;
        let want = format!("oh  well {face}");
        assert_eq!(m["content"], want.as_str(), "/{word} with text");
        expected.push(want);
    }
    // Stored as the rewritten text.
    let h = http_history(&s, &bob, "faces", "").await.json();
    assert_eq!(contents_of(&h), expected);
    s.stop().await;
}

#[tokio::test]
async fn sparkles_and_me() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "fx").await;
    let mut b = s.join(&bob, "fx").await;

    let id = say(&mut a, "/sparkles so shiny").await;
    let m = expect_msg(&mut b, &id).await;
    assert_eq!(m["type"], "chat");
    assert_eq!(m["content"], "✨ so shiny ✨");

    let id_me = say(&mut a, "/me waves hello").await;
    let m = expect_msg(&mut b, &id_me).await;
    assert_eq!(m["type"], "chat");
    assert_eq!(m["content"], "waves hello");
    assert_eq!(m["action"], true);
    let echo = expect_msg(&mut a, &id_me).await;
    assert_eq!(echo["action"], true);
    expect_receipt(&mut a, &id_me, "saved").await;

    // History keeps `action`.
    b.send_json(&json!({"type": "history"})).await.unwrap();
    let h = b.expect("history", T).await.unwrap();
    assert_eq!(contents_of(&h), ["✨ so shiny ✨", "waves hello"]);
    assert!(h["messages"][0].get("action").is_none() || h["messages"][0]["action"] == false);
    assert_eq!(h["messages"][1]["action"], true);
    s.stop().await;
}

#[tokio::test]
async fn msg_is_a_private_with_the_same_id() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let carol = s.user(&name("carol")).await;
    let mut a = s.join(&alice, "dm").await;
    let mut b = s.join(&bob, "dm").await;
    let mut c = s.join(&carol, "dm").await;

    let id = say(&mut a, &format!("/msg {}   meet at  noon ", bob.username)).await;
    let m = expect_msg(&mut b, &id).await;
    assert_eq!(m["type"], "private");
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["target"], bob.username.as_str());
    assert_eq!(m["sender"], alice.username.as_str());
    assert_eq!(m["content"], "meet at  noon");
    let echo = expect_msg(&mut a, &id).await;
    assert_eq!(echo["type"], "private");
    expect_receipt(&mut a, &id, "saved").await;

    let seen = marker(&mut a, &mut [&mut c]).await;
    assert!(
        seen[1].iter().all(|f| f["id"] != id.as_str()),
        "third user saw /msg: {:?}",
        seen[1]
    );
    let hc = http_history(&s, &carol, "dm", "").await.json();
    assert!(!ids_of(&hc).contains(&id));
    let hb = http_history(&s, &bob, "dm", "").await.json();
    assert_eq!(hb["messages"][0]["type"], "private");
    assert_eq!(hb["messages"][0]["id"], id.as_str());

    // /msg to someone who never joined the room is not_found, like a private.
    let stranger = s.user(&name("stranger")).await;
    let id2 = say(&mut a, &format!("/msg {} hi", stranger.username)).await;
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "not_found");
    assert_eq!(e["id"], id2.as_str());
    s.stop().await;
}

#[tokio::test]
async fn who_help_ping_answer_the_sender_alone() {
    let s = TestServer::start().await;
    let zed = s.user(&name("zed")).await;
    let amy = s.user(&name("amy")).await;
    let mut z = s.join(&zed, "cmds").await;
    let mut a = s.join(&amy, "cmds").await;
    let both = [amy.username.as_str(), zed.username.as_str()];
    // Let the join presences settle first.
    expect_presence(&mut z, &both).await;
    expect_presence(&mut a, &both).await;

    let who = say(&mut z, "/who").await;
    let p = z.expect("presence", T).await.unwrap();
    assert_eq!(p["room"], "cmds");
    assert_eq!(p["users"], json!(both));
    assert_eq!(p["count"], 2);

    let help = say(&mut z, "/help").await;
    let h = z.expect("system", T).await.unwrap();
    assert_eq!(h["room"], "cmds");
    let text = h["content"].as_str().unwrap();
    for cmd in ["/shrug", "/me", "/msg", "/who", "/ping"] {
        assert!(text.contains(cmd), "/help lists {cmd}: {text}");
    }

    let ping = say(&mut z, "/ping").await;
    let p = z.expect("system", T).await.unwrap();
    assert_eq!(p["content"], "pong");
    assert_eq!(p["room"], "cmds");

    // amy got none of it: no presence, no system line, nothing with those ids.
    let seen = marker(&mut z, &mut [&mut a]).await;
    assert!(
        seen[1]
            .iter()
            .all(|f| f["type"] != "presence" && f["type"] != "system"),
        "a command reply reached another user: {:?}",
        seen[1]
    );
    // And no `saved` for the replies (a `saved` for an earlier id would come first).
    for f in &seen[0] {
        if f["type"] == "receipt" {
            assert!(
                f["id"] != who.as_str() && f["id"] != help.as_str() && f["id"] != ping.as_str(),
                "a reply got a receipt: {f}"
            );
        }
    }
    let h = http_history(&s, &zed, "cmds", "").await.json();
    assert_eq!(contents_of(&h), ["-- marker --"], "replies are not stored");
    s.stop().await;
}

#[tokio::test]
async fn unknown_command_is_an_error() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "unk").await;
    let id = say(&mut a, "/frobnicate now").await;
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "unknown_command");
    assert_eq!(e["id"], id.as_str());
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = say(&mut a, "/").await;
    let e = expect_error(&mut a).await;
    assert_eq!(e["code"], "unknown_command");
    assert_eq!(e["id"], id.as_str());
    // The connection is still fine.
    say_saved(&mut a, "still here").await;
    let h = http_history(&s, &alice, "unk", "").await.json();
    assert_eq!(contents_of(&h), ["still here"]);
    s.stop().await;
}

#[tokio::test]
async fn replies_leave_the_id_unused() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let bob = s.user(&name("bob")).await;
    let mut a = s.join(&alice, "reuse").await;
    let mut b = s.join(&bob, "reuse").await;
    for cmd in ["/who", "/help", "/ping", "/nosuchcommand"] {
        let id = uuid();
        a.send_json(&chat(&id, cmd)).await.unwrap();
        // Wait for the reply so the command was handled before the reuse.
        let reply = match cmd {
            "/who" => a.expect("presence", T).await.unwrap(),
            "/nosuchcommand" => expect_error(&mut a).await,
            _ => a.expect("system", T).await.unwrap(),
        };
        if cmd == "/nosuchcommand" {
            assert_eq!(reply["code"], "unknown_command");
        }
        // The same id now names a real message.
        let real = format!("real after {cmd}");
        a.send_json(&chat(&id, &real)).await.unwrap();
        let m = expect_msg(&mut b, &id).await;
        assert_eq!(m["content"], real.as_str());
        let frames = until_msg(&mut a, &id).await;
        assert!(
            of_type(&frames, "error").is_empty(),
            "reusing the id of {cmd}: {frames:?}"
        );
        expect_receipt(&mut a, &id, "saved").await;
    }
    let h = http_history(&s, &bob, "reuse", "").await.json();
    assert_eq!(
        contents_of(&h),
        [
            "real after /who",
            "real after /help",
            "real after /ping",
            "real after /nosuchcommand"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn commands_that_need_text_reject_none() {
    let s = TestServer::start().await;
    let alice = s.user(&name("alice")).await;
    let mut a = s.join(&alice, "usage").await;
    for cmd in ["/me", "/me   ", "/msg", "/msg bob_nobody"] {
        let id = say(&mut a, cmd).await;
        let e = expect_error(&mut a).await;
        assert_eq!(e["id"], id.as_str(), "{cmd}: {e}");
        // Without its text a command is a usage error, whoever it names.
        assert_eq!(e["code"], "bad_request", "{cmd}: {e}");
    }
    say_saved(&mut a, "ok").await;
    let h = http_history(&s, &alice, "usage", "").await.json();
    assert_eq!(contents_of(&h), ["ok"]);
    s.stop().await;
}
