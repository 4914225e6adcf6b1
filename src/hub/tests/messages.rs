//! Posts: fan-out, idempotency, conflicts, private messages, storage
//! admission; durable and failed reports; receipts.

use super::*;

#[test]
fn chat_goes_to_everyone_in_the_room_and_to_disk_once() {
    let (mut f, a, b) = alice_and_bob(16);
    let c = f.join("carol", "c", "elsewhere");
    f.tick(Duration::ZERO);
    f.frames(c);
    let id = f.chat(a, "hi");
    let got = f.frames(b);
    assert_eq!(got[0]["content"], "hi");
    assert_eq!(got[0]["sender"], "alice");
    assert_eq!(f.frames(a)[0]["id"], id.to_string());
    assert!(f.frames(c).is_empty());
    assert_eq!(f.counts.last(), Some(&Count::Deliveries(2)));
    assert_eq!(f.queued_ids(), [id]);
    // Resent before durable: nothing delivered, nothing stored, no receipt yet.
    let fx = f.send(a, id, MsgKind::Chat, None, "hi");
    assert!(fx.deliveries.is_empty() && fx.append.is_none());
    f.apply(Event::Storage(StorageEvent::Durable(vec![lobby_msg(
        id, "alice",
    )])));
    let r = f.frames(a);
    assert_eq!(
        (r[0]["type"].as_str(), r[0]["status"].as_str()),
        (Some("receipt"), Some("saved"))
    );
    assert!(f.frames(b).is_empty(), "receipts go to the sender only");
    // Resent after durable: saved again, still nothing delivered or stored.
    let fx = f.send(a, id, MsgKind::Chat, None, "hi");
    assert!(fx.append.is_none());
    assert_eq!(f.frames(a)[0]["status"], "saved");
    assert!(f.frames(b).is_empty());
}

#[test]
fn one_frame_is_shared_by_all_recipients() {
    let (mut f, a, _b) = alice_and_bob(16);
    f.join("carol", "c", "lobby");
    let fx = f.send(a, Uuid::new_v4(), MsgKind::Chat, None, "hi");
    // Encoded once: one delivery naming every recipient.
    assert_eq!(fx.deliveries.len(), 1);
    assert_eq!(fx.deliveries[0].to.len(), 3);
}

#[test]
fn an_id_of_another_sender_is_a_conflict() {
    let (mut f, a, b) = alice_and_bob(16);
    let id = f.chat(a, "mine");
    let (_, _) = (f.frames(a), f.frames(b));
    f.send(b, id, MsgKind::Chat, None, "stolen");
    let e = f.frames(b);
    assert_eq!(
        (e[0]["type"].as_str(), e[0]["code"].as_str()),
        (Some("error"), Some("conflict"))
    );
    assert!(f.frames(a).is_empty());
    assert_eq!(
        f.counts.last(),
        Some(&Count::ErrorSent(ErrorCode::Conflict, 1))
    );
}

#[test]
fn private_reaches_sender_and_target_only() {
    let (mut f, a, b) = alice_and_bob(16);
    let c = f.join("carol", "c", "lobby");
    f.tick(Duration::from_millis(600));
    let (_, _, _) = (f.frames(a), f.frames(b), f.frames(c));
    f.send(a, Uuid::new_v4(), MsgKind::Private, Some("bob"), "psst");
    assert_eq!(f.frames(a)[0]["type"], "private");
    assert_eq!(f.frames(b)[0]["target"], "bob");
    assert!(f.frames(c).is_empty());
    // A target who never joined (and the session found no record of): not_found.
    let fx = f.send(a, Uuid::new_v4(), MsgKind::Private, Some("zed"), "hello?");
    assert!(fx.append.is_none());
    assert_eq!(f.frames(a)[0]["code"], "not_found");
}

#[test]
fn full_queue_refuses_and_does_not_broadcast() {
    let (mut f, a, b) = alice_and_bob(1);
    f.chat(a, "one");
    f.chat(a, "two");
    let got: Vec<_> = f
        .frames(b)
        .into_iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(got, ["one"]);
    let af = f.frames(a);
    assert_eq!(af[1]["code"], "unavailable");
    assert_eq!(
        af[1]["retry_after_ms"].as_u64(),
        Some(Refused::Busy.retry_after_ms())
    );
}

#[test]
fn refused_admission_is_unavailable_to_the_sender_only_and_nothing_else() {
    let (mut f, a, b) = alice_and_bob(16);
    let c = f.join("alice", "a2", "lobby");
    f.frames(a);
    f.refuse = Some(Refused::Full);
    let id = Uuid::new_v4();
    let fx = f.send(a, id, MsgKind::Chat, None, "too much");
    assert!(fx.append.is_none(), "nothing appended");
    assert_eq!(fx.deliveries.len(), 1, "one frame: the error");
    assert_eq!(fx.deliveries[0].to, [a.0], "to the sending session only");
    assert_eq!(fx.counts, [Count::ErrorSent(ErrorCode::Unavailable, 1)]);
    let e = f.frames(a);
    assert_eq!(
        (e[0]["code"].as_str(), e[0]["id"].as_str()),
        (Some("unavailable"), Some(id.to_string().as_str()))
    );
    assert!(f.frames(b).is_empty() && f.frames(c).is_empty());
    assert!(f.pending_ids("lobby").is_empty());
}

#[test]
fn a_duplicate_answers_saved_even_while_storage_refuses() {
    let (mut f, a, b) = alice_and_bob(16);
    let id = f.chat(a, "once");
    f.flush_storage();
    let (_, _) = (f.frames(a), f.frames(b));
    for why in [Refused::Busy, Refused::Full, Refused::Failed] {
        f.refuse = Some(why);
        let fx = f.send(a, id, MsgKind::Chat, None, "once");
        assert!(fx.append.is_none());
        let r = f.frames(a);
        assert_eq!(r.len(), 1, "{why:?}: {r:?}");
        assert_eq!(
            (r[0]["type"].as_str(), r[0]["status"].as_str()),
            (Some("receipt"), Some("saved")),
            "{why:?}"
        );
    }
    assert!(f.frames(b).is_empty());
}

#[test]
fn a_failed_batch_is_unavailable_to_its_sender_forgotten_and_can_be_retried() {
    let (mut f, a, b) = alice_and_bob(16);
    let lost = f.chat(a, "lost");
    let kept = f.chat(a, "kept");
    let (_, _) = (f.frames(a), f.frames(b));
    assert_eq!(f.queued_ids(), [lost, kept]);
    f.apply(Event::Storage(StorageEvent::Failed(vec![lobby_msg(
        lost, "alice",
    )])));
    let e = f.frames(a);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0]["type"].as_str(), e[0]["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    assert_eq!(e[0]["id"], lost.to_string());
    assert!(e[0]["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(f.frames(b).is_empty(), "only the sender hears of it");
    // Not shown as on its way to disk any more; the other one still is.
    assert_eq!(f.pending_ids("lobby"), [kept]);
    // A resend of the kept one is still a duplicate: nothing new.
    f.send(a, kept, MsgKind::Chat, None, "kept");
    assert!(f.queued_ids().is_empty() && f.frames(b).is_empty());
    // The lost id is accepted again, as a new message.
    f.send(a, lost, MsgKind::Chat, None, "lost");
    assert_eq!(f.frames(b)[0]["id"], lost.to_string());
    assert_eq!(f.queued_ids(), [lost]);
    assert_eq!(f.pending_ids("lobby"), [kept, lost]);
    f.apply(Event::Storage(StorageEvent::Durable(vec![
        lobby_msg(kept, "alice"),
        lobby_msg(lost, "alice"),
    ])));
    let saved: Vec<_> = f
        .frames(a)
        .into_iter()
        .filter(|r| r["type"] == "receipt")
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(saved, ["saved", "saved"]);
    assert!(f.pending_ids("lobby").is_empty());
}

#[test]
fn a_failed_report_for_a_stored_id_keeps_it_stored() {
    // The writer reports each id once; a failed report for an id that an
    // earlier batch made durable (a resend) must not make it retryable.
    let (mut f, a, b) = alice_and_bob(16);
    let id = f.chat(a, "once");
    f.flush_storage();
    let (_, _) = (f.frames(a), f.frames(b));
    f.apply(Event::Storage(StorageEvent::Failed(vec![lobby_msg(
        id, "alice",
    )])));
    f.frames(a);
    f.send(a, id, MsgKind::Chat, None, "once");
    assert_eq!(f.frames(a)[0]["status"], "saved");
    assert!(f.frames(b).is_empty() && f.queued_ids().is_empty());
}

#[test]
fn full_or_failed_storage_refuses_without_broadcast_until_space_is_back() {
    let (mut f, a, b) = alice_and_bob(16);
    f.refuse = Some(Refused::Full);
    let id = f.chat(a, "too much");
    let e = f.frames(a);
    assert_eq!(
        (e[0]["code"].as_str(), e[0]["id"].as_str()),
        (Some("unavailable"), Some(id.to_string().as_str()))
    );
    assert!(e[0]["message"].as_str().unwrap().contains("full"));
    assert!(e[0]["retry_after_ms"].as_u64().unwrap() >= 1000);
    assert!(f.frames(b).is_empty(), "a refused message is not broadcast");
    assert!(f.queued_ids().is_empty() && f.pending_ids("lobby").is_empty());
    // Space is back: the same id goes through.
    f.refuse = None;
    f.send(a, id, MsgKind::Chat, None, "too much");
    assert_eq!(f.frames(b)[0]["id"], id.to_string());
    assert_eq!(f.queued_ids(), [id]);
    f.frames(a);
    // Failed: refused the same way, private messages too.
    f.refuse = Some(Refused::Failed);
    f.send(a, Uuid::new_v4(), MsgKind::Private, Some("bob"), "psst");
    let e = f.frames(a);
    assert_eq!(e[0]["code"], "unavailable");
    assert!(e[0]["message"].as_str().unwrap().contains("failed"));
    assert!(f.frames(b).is_empty() && f.queued_ids().is_empty());
}

#[test]
fn receipts_go_to_the_senders_sessions_and_joiners_get_pending() {
    let (mut f, a, b) = alice_and_bob(16);
    let id = f.chat(a, "read me");
    let (_, _) = (f.frames(a), f.frames(b));
    // A joiner while it is in flight gets it in its join reply.
    let a2 = f.join("alice", "a2", "lobby");
    let joined = f.last_join.take().unwrap();
    assert_eq!(
        joined.pending.iter().map(|m| m.id).collect::<Vec<_>>(),
        [id]
    );
    f.apply(Event::Storage(StorageEvent::Receipt {
        id,
        room: RoomName::parse("lobby").unwrap(),
        sender: Username::parse("alice").unwrap(),
        by: Username::parse("bob").unwrap(),
        status: Status::Seen,
    }));
    let want = encode(&ServerMsg::Receipt {
        id: &id,
        status: "seen",
        by: Some("bob"),
    });
    let want: Value = serde_json::from_str(want.as_str()).unwrap();
    assert_eq!(f.frames(a), std::slice::from_ref(&want));
    assert_eq!(f.frames(a2), [want]);
    assert!(f.frames(b).is_empty());
}
