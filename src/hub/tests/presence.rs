//! Presence coalescing, typing throttling and the timers.

use super::*;

#[test]
fn join_sends_presence_and_join_lines_to_others_only() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "lobby");
    f.tick(Duration::ZERO);
    assert_eq!(f.types(a), ["presence"]);
    let b = f.join("bob", "b", "lobby");
    f.tick(Duration::from_millis(600));
    let af = f.frames(a);
    assert_eq!(af[0]["type"], "system");
    assert_eq!(af[0]["content"], "bob joined");
    assert_eq!(af[1]["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(f.types(b), ["presence"]);
    // A second session of bob: no join line, and no presence either (next test).
    let b2 = f.join("bob", "b2", "lobby");
    f.tick(Duration::from_millis(600));
    assert!(f.types(a).is_empty());
    assert_eq!(f.types(b2), ["presence"]);
}

/// A user already listed opening another session (another tab, or another
/// connection's subscription) leaves the room's list as it was: the others
/// get nothing (no join line, no presence), the joiner alone gets the list
/// at the end of the turn, without waiting for the 500 ms window.
#[test]
fn a_second_session_of_a_present_user_sends_presence_to_itself_only() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "lobby");
    let b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (f.frames(a), f.frames(b));
    // Within the window of the last presence: the joiner's own is not held back.
    let fx = f.subscribe(Uuid::new_v4(), "bob", "multi", "lobby");
    assert_eq!(
        f.tick(Duration::from_millis(10)),
        None,
        "nothing left to send"
    );
    let got = f.frames(fx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "presence");
    assert_eq!(got[0]["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(got[0]["count"], 2);
    f.tick(Duration::from_millis(600));
    assert!(f.frames(a).is_empty(), "alice's list did not change");
    assert!(f.frames(b).is_empty(), "nor bob's first session's");
    // A new user still makes one presence for everyone, the joiner included.
    let c = f.join("carol", "c", "lobby");
    f.tick(Duration::from_millis(600));
    for s in [a, b, fx, c] {
        let p: Vec<Value> = f
            .frames(s)
            .into_iter()
            .filter(|v| v["type"] == "presence")
            .collect();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0]["count"], 3);
    }
}

/// A joiner whose room has a presence pending anyway waits for it (one
/// frame, not two), and one that is gone by the tick gets none.
#[test]
fn a_listed_joiner_gets_the_pending_presence_once_or_none_when_gone() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "lobby");
    f.tick(Duration::ZERO);
    f.frames(a);
    let b = f.join("bob", "b", "lobby");
    let a2 = f.join("alice", "a2", "lobby");
    f.tick(Duration::from_millis(600));
    assert_eq!(f.types(a2), ["presence"]);
    assert_eq!(f.types(b), ["presence"]);
    assert_eq!(f.types(a), ["system", "presence"]);
    let a3 = f.join("alice", "a3", "lobby");
    f.apply(Event::Leave { session: a3.0 });
    f.tick(Duration::from_millis(600));
    assert!(f.frames(a3).is_empty());
    assert!(f.frames(a).is_empty() && f.frames(b).is_empty());
}

#[test]
fn presence_is_coalesced_per_room() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "lobby");
    f.tick(Duration::ZERO);
    f.frames(a);
    for u in ["bob", "carol", "dave"] {
        f.join(u, "x", "lobby");
        // The deadline the shell sleeps to: the end of the 500 ms window.
        assert!(f.tick(Duration::from_millis(10)).is_some());
    }
    // None yet within the 500 ms after the previous one.
    assert_eq!(f.types(a).iter().filter(|t| *t == "presence").count(), 0);
    f.tick(Duration::from_millis(500));
    let frames = f.frames(a);
    let presences: Vec<_> = frames.iter().filter(|f| f["type"] == "presence").collect();
    assert_eq!(presences.len(), 1, "{frames:?}");
    assert_eq!(presences[0]["count"], 4, "{frames:?}");
    assert_eq!(f.tick(Duration::ZERO), None, "no timer once all is sent");
}

#[test]
fn who_answers_the_asker_only() {
    let (mut f, a, b) = alice_and_bob(16);
    f.apply(Event::Who { session: a.0 });
    let w = f.frames(a);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["users"], serde_json::json!(["alice", "bob"]));
    assert!(f.frames(b).is_empty());
}

#[test]
fn typing_is_throttled_and_never_echoed() {
    let (mut f, a, b) = alice_and_bob(16);
    f.typing(a, true);
    f.typing(a, true);
    assert_eq!(f.types(b), ["typing"]);
    assert!(f.frames(a).is_empty());
    f.now.at += Duration::from_millis(500);
    f.typing(a, false);
    let t = f.frames(b);
    assert_eq!((t.len(), &t[0]["active"]), (1, &Value::Bool(false)));
    assert!(f.queue.is_empty(), "typing is never stored");
}

#[test]
fn a_held_back_typing_stop_is_sent_when_the_interval_ends() {
    let (mut f, a, b) = alice_and_bob(16);
    f.typing(a, true);
    f.typing(a, false);
    let t = f.frames(b);
    assert_eq!((t.len(), &t[0]["active"]), (1, &Value::Bool(true)));
    // The held state sets the timer: due at the end of the interval, not before.
    assert_eq!(
        f.tick(Duration::ZERO),
        Some(f.now.at + Duration::from_millis(500))
    );
    assert!(f.frames(b).is_empty(), "held back until the interval ends");
    assert_eq!(f.tick(Duration::from_millis(500)), None);
    let t = f.frames(b);
    assert_eq!((t.len(), &t[0]["active"]), (1, &Value::Bool(false)));
    f.tick(Duration::from_millis(500));
    assert!(f.frames(b).is_empty(), "sent once");
}

/// A room of more than 50 users coalesces its presence over a longer window
/// (1 s at 51–100 users): a join storm into a big room sends the whole list
/// to everyone less often. A new joiner still gets its list at once, and
/// the others their `system` join line.
#[test]
fn a_big_room_coalesces_presence_longer_and_joiners_get_theirs_at_once() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "big");
    for i in 0..59 {
        f.join(&format!("user{i}"), "x", "big");
    }
    f.tick(Duration::from_millis(600));
    f.frames(a);
    let late = f.join("latecomer", "l", "big");
    // 61 users: a 1 s window from the last frame, sent 10 ms ago.
    let next = f.tick(Duration::from_millis(10));
    assert_eq!(next, Some(f.now.at + Duration::from_millis(990)));
    let mine = f.frames(late);
    assert_eq!(mine.len(), 1, "the joiner's own list at once");
    assert_eq!(mine[0]["count"], 61);
    let a_got = f.frames(a);
    assert_eq!(a_got.len(), 1, "{a_got:?}");
    assert_eq!(a_got[0]["content"], "latecomer joined");
    // 600 ms after the last frame: a 50-user room's window would be over.
    f.tick(Duration::from_millis(590));
    assert!(f.frames(a).is_empty(), "held back: the window is 1 s");
    f.tick(Duration::from_millis(400));
    let p = f.frames(a);
    assert_eq!((p.len(), &p[0]["count"]), (1, &serde_json::json!(61)));
    assert!(f.frames(late).is_empty(), "it has this very list already");
    // Two more within the next window: each gets its own at once, and the
    // frame for everyone skips only the one whose list is still current.
    let (x, y) = (f.join("xavier", "x", "big"), f.join("yolanda", "y", "big"));
    f.tick(Duration::ZERO);
    assert_eq!(presence_counts(&mut f, x), [63]);
    assert_eq!(presence_counts(&mut f, y), [63]);
    let z = f.join("zach", "z", "big");
    f.tick(Duration::ZERO);
    assert_eq!(presence_counts(&mut f, z), [64]);
    f.tick(Duration::from_millis(1000));
    for s in [a, late, x, y] {
        assert_eq!(presence_counts(&mut f, s), [64]);
    }
    assert!(
        presence_counts(&mut f, z).is_empty(),
        "z has this list already"
    );
}

/// The `count` of each presence frame `s` got.
fn presence_counts(f: &mut Fixture, s: Sess) -> Vec<u64> {
    f.frames(s)
        .iter()
        .filter(|v| v["type"] == "presence")
        .map(|v| v["count"].as_u64().unwrap())
        .collect()
}
