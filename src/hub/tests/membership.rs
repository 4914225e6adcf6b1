//! Joins, leaves, caps, kicks, evictions fed back by the shell, shutdown.

use super::*;

#[test]
fn same_client_id_replaces_and_cap_closes_the_oldest() {
    let mut f = Fixture::new(2, 16);
    let first = f.join("alice", "tab", "lobby");
    let second = f.join("alice", "tab", "lobby");
    assert_eq!(f.closed(first), Some(CloseCode::Replaced));
    assert_eq!(f.closed(second), None);
    let third = f.join("alice", "other", "lobby");
    assert_eq!((f.closed(second), f.closed(third)), (None, None));
    let fourth = f.join("alice", "another", "lobby");
    assert_eq!(f.closed(second), Some(CloseCode::Replaced));
    assert_eq!((f.closed(third), f.closed(fourth)), (None, None));
    assert_eq!(f.hub.session_count(), 2);
    assert_eq!(
        f.counts,
        [
            Count::Eviction(Eviction::Replaced),
            Count::Eviction(Eviction::TooManySessions)
        ]
    );
}

#[test]
fn an_eviction_fed_back_closes_with_4002_and_makes_the_left_line() {
    let (mut f, a, _b) = alice_and_bob(16);
    let slow = f.join("slowpoke", "s", "lobby");
    f.frames(a);
    // The shell found slowpoke's queue full.
    let fx = f.apply(Event::Evicted { session: slow.0 });
    assert_eq!(
        fx.removed,
        [Removed {
            session: slow.0,
            close: Some(CloseCode::Evicted)
        }]
    );
    assert_eq!(fx.counts, [Count::Eviction(Eviction::Slow)]);
    let got = f.frames(a);
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["content"].as_str()),
        (Some("system"), Some("slowpoke left"))
    );
    assert_eq!(f.hub.session_count(), 2);
    // Fed back twice (queued twice in one turn): nothing more happens.
    let fx = f.apply(Event::Evicted { session: slow.0 });
    assert!(fx.removed.is_empty() && fx.counts.is_empty() && fx.deliveries.is_empty());
}

#[test]
fn a_closed_queue_is_removed_without_a_close_code() {
    let (mut f, a, b) = alice_and_bob(16);
    let fx = f.apply(Event::Gone { session: b.0 });
    assert_eq!(
        fx.removed,
        [Removed {
            session: b.0,
            close: None
        }]
    );
    assert!(fx.counts.is_empty(), "not counted as an eviction");
    assert_eq!(f.frames(a)[0]["content"], "bob left");
}

#[test]
fn kick_closes_one_family_or_all_of_a_users_sessions() {
    let mut f = Fixture::new(8, 16);
    let fam = Uuid::new_v4();
    let join = |f: &mut Fixture, client: &str, family: Option<Uuid>| {
        let id = Uuid::new_v4();
        f.live.insert(id);
        f.apply(Event::Join {
            session: id,
            conn: id,
            user: Username::parse("alice").unwrap(),
            client: ClientId::parse(client).unwrap(),
            room: RoomName::parse("lobby").unwrap(),
            family,
            away: false,
        });
        Sess(id)
    };
    let in_family = join(&mut f, "one", Some(fam));
    let other = join(&mut f, "two", Some(Uuid::new_v4()));
    let bob = f.join("bob", "b", "lobby");
    let alice = Username::parse("alice").unwrap();
    f.apply(Event::Kick {
        user: alice.clone(),
        family: Some(fam),
    });
    assert_eq!(f.closed(in_family), Some(CloseCode::Policy));
    assert_eq!(f.closed(other), None);
    f.apply(Event::Kick {
        user: alice,
        family: None,
    });
    assert_eq!(f.closed(other), Some(CloseCode::Policy));
    assert_eq!(f.closed(bob), None);
    assert_eq!(f.counts, [Count::Eviction(Eviction::Revoked); 2]);
}

#[test]
fn shutdown_closes_everyone_with_its_code_and_frees_the_rooms() {
    let (mut f, a, b) = alice_and_bob(16);
    let c = f.join("carol", "c", "elsewhere");
    let fx = f.apply(Event::Shutdown(CloseCode::GoingAway));
    assert!(fx.deliveries.is_empty(), "nobody stays to hear left lines");
    for s in [a, b, c] {
        assert_eq!(f.closed(s), Some(CloseCode::GoingAway));
    }
    assert_eq!((f.hub.session_count(), f.hub.room_count()), (0, 0));
}

#[test]
fn leaving_frees_the_room_and_cursors_keep_increasing() {
    let mut f = Fixture::new(8, 64);
    let a = f.join("alice", "a", "lobby");
    let one = f.chat(a, "one");
    f.now.ms -= 10_000; // the clock jumps back
    let two = f.chat(a, "two");
    f.apply(Event::Leave { session: a.0 });
    assert_eq!(f.closed.get(&a.0), Some(&None), "a leave sends no close");
    assert_eq!(f.hub.room_count(), 0);
    // Exactly the two chats, in order; the later one sorts after the earlier
    // although its wall-clock time is 10 s older.
    let appended: Vec<(Uuid, Cursor)> = f.queue.iter().map(|m| (m.id, m.cursor)).collect();
    assert_eq!(
        appended.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [one, two]
    );
    assert!(
        appended[0].1 < appended[1].1,
        "cursors went backwards with the clock: {appended:?}"
    );
    // A new joiner's head is the newest cursor: its history goes up to it.
    f.join("bob", "b", "lobby");
    assert_eq!(f.last_join.as_ref().unwrap().head, appended[1].1);
}

/// A multi-room connection's subscriptions are one session to the hub: they
/// never replace each other, count once against the cap, and a new connection
/// with their client id or a full queue closes them all.
#[test]
fn a_connections_subscriptions_count_replace_and_evict_as_one() {
    let mut f = Fixture::new(2, 16);
    let conn = Uuid::new_v4();
    let subs: Vec<Sess> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| f.subscribe(conn, "alice", "multi", r))
        .collect();
    let other = f.join("alice", "two", "r1");
    assert!(subs.iter().chain([&other]).all(|s| f.closed(*s).is_none()));
    assert_eq!(f.hub.session_count(), 4);
    // A third connection: the oldest one, all its subscriptions, goes (4001).
    let third = f.join("alice", "three", "r9");
    for s in &subs {
        assert_eq!(f.closed(*s), Some(CloseCode::Replaced));
    }
    assert!(f.closed(other).is_none() && f.closed(third).is_none());

    // Same client id on a new connection: the old one goes whole.
    let mut f = Fixture::new(8, 16);
    let conn = Uuid::new_v4();
    let old = [
        f.subscribe(conn, "alice", "tab", "r1"),
        f.subscribe(conn, "alice", "tab", "r2"),
    ];
    let new = f.subscribe(Uuid::new_v4(), "alice", "tab", "r3");
    assert!(
        old.iter()
            .all(|s| f.closed(*s) == Some(CloseCode::Replaced))
    );
    assert!(f.closed(new).is_none());

    // One full queue: every subscription of that connection is evicted (4002).
    let conn = Uuid::new_v4();
    let subs = [
        f.subscribe(conn, "bob", "b", "r1"),
        f.subscribe(conn, "bob", "b", "r2"),
    ];
    f.apply(Event::Evicted { session: subs[1].0 });
    assert!(
        subs.iter()
            .all(|s| f.closed(*s) == Some(CloseCode::Evicted))
    );
    assert!(f.closed(new).is_none());
}

/// A connection's subscriptions are found by connection (not by scanning
/// the user's every session): leaving some of them, in any order, leaves the
/// others whole, still one connection that replaces, caps and evicts as one.
#[test]
fn leaving_some_subscriptions_keeps_the_rest_of_the_connection_together() {
    let mut f = Fixture::new(2, 16);
    let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
    let subs1: Vec<Sess> = (0..5)
        .map(|i| f.subscribe(c1, "alice", "one", &format!("r{i}")))
        .collect();
    let subs2: Vec<Sess> = (0..3)
        .map(|i| f.subscribe(c2, "alice", "two", &format!("r{i}")))
        .collect();
    // The first one (the connection's join time) and one in the middle leave.
    for s in [subs1[0], subs1[2]] {
        f.apply(Event::Leave { session: s.0 });
    }
    assert_eq!(f.hub.session_count(), 6);
    // Still one connection: a third connection over the cap of 2 takes
    // the oldest (c1) whole, its three remaining subscriptions.
    let third = f.join("alice", "three", "r9");
    for s in [subs1[1], subs1[3], subs1[4]] {
        assert_eq!(f.closed(s), Some(CloseCode::Replaced));
    }
    assert!(subs2.iter().chain([&third]).all(|s| f.closed(*s).is_none()));
    // A full queue on c2's last subscription evicts c2's others too.
    f.apply(Event::Leave {
        session: subs2[1].0,
    });
    f.apply(Event::Evicted {
        session: subs2[2].0,
    });
    assert_eq!(f.closed(subs2[0]), Some(CloseCode::Evicted));
    assert_eq!(f.hub.session_count(), 1);
    // Every room's list is right: alice is still in r9 only.
    let fx = f.apply(Event::Who { session: third.0 });
    let v: Value = serde_json::from_str(fx.deliveries[0].frame.as_str()).unwrap();
    assert_eq!(v["users"], serde_json::json!(["alice"]));
    let alice = Username::parse("alice").unwrap();
    let to = f
        .hub
        .apply(
            Event::ToUser {
                user: alice,
                frame: fx.deliveries[0].frame.clone(),
                kind: crate::metrics::Out::System,
            },
            f.now,
        )
        .deliveries;
    assert_eq!(to[0].to, [third.0], "one connection left");
}
