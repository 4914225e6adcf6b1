//! Cluster mode: what the core relays to other nodes (a session registered,
//! typing states past the throttle) and what it does with theirs.

use super::*;
use crate::hub::state::Relay;

fn cluster_fixture() -> Fixture {
    let mut f = Fixture::new(8, 16);
    f.hub = HubState::new(8, Cursor::ZERO).with_replicated_log();
    f
}

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

fn remote_join(f: &mut Fixture, user: &str, client: &str, session: Uuid, at_ms: u64) {
    f.apply(Event::Remote(Relay::Joined {
        user: name(user),
        client: ClientId::parse(client).unwrap(),
        session,
        at_ms,
    }));
}

#[test]
fn a_join_is_relayed_with_its_session_and_time() {
    let mut f = cluster_fixture();
    let id = Uuid::new_v4();
    f.live.insert(id);
    let fx = f.apply(Event::Join {
        session: id,
        conn: id,
        user: name("alice"),
        client: ClientId::parse("tab1").unwrap(),
        room: RoomName::parse("lobby").unwrap(),
        family: None,
        away: false,
    });
    assert_eq!(
        fx.relay,
        [Relay::Joined {
            user: name("alice"),
            client: ClientId::parse("tab1").unwrap(),
            session: id,
            at_ms: f.now.ms,
        }]
    );
}

#[test]
fn a_single_node_relays_nothing() {
    let mut f = Fixture::new(8, 16);
    let a = f.join("alice", "a", "lobby");
    let fx = f.apply(Event::Typing {
        session: a.0,
        active: true,
    });
    assert!(fx.relay.is_empty());
}

#[test]
fn a_later_session_elsewhere_replaces_only_the_same_client() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "tab1", "lobby");
    let other = f.join("alice", "tab2", "lobby");
    let bob = f.join("bob", "tab1", "lobby");
    // Registered before ours: ours stays (it kicked that one).
    let ms = f.now.ms;
    remote_join(&mut f, "alice", "tab1", Uuid::new_v4(), ms - 1);
    assert_eq!(f.closed(a), None);
    // Registered after ours: ours goes with 4001; another client id and
    // another user with the same client id stay.
    remote_join(&mut f, "alice", "tab1", Uuid::new_v4(), ms + 1);
    assert_eq!(f.closed(a), Some(CloseCode::Replaced));
    assert_eq!((f.closed(other), f.closed(bob)), (None, None));
}

#[test]
fn two_joins_at_the_same_ms_leave_exactly_one() {
    let (mut f1, mut f2) = (cluster_fixture(), cluster_fixture());
    let s1 = f1.join("alice", "tab1", "lobby");
    let s2 = f2.join("alice", "tab1", "lobby");
    let ms = f1.now.ms;
    remote_join(&mut f1, "alice", "tab1", s2.0, ms);
    remote_join(&mut f2, "alice", "tab1", s1.0, ms);
    let closed = [f1.closed(s1), f2.closed(s2)];
    assert_eq!(
        closed.iter().filter(|c| c.is_some()).count(),
        1,
        "{closed:?}"
    );
}

#[test]
fn typing_past_the_throttle_is_relayed_and_a_peers_is_shown_here() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "a", "lobby");
    let b = f.join("bob", "b", "lobby");
    let a2 = f.join("carol", "c", "lobby");
    f.tick(Duration::ZERO);
    let _ = (f.frames(a), f.frames(b), f.frames(a2));
    let fx = f.apply(Event::Typing {
        session: a.0,
        active: true,
    });
    assert_eq!(fx.relay.len(), 1);
    let fx = f.apply(Event::Typing {
        session: a.0,
        active: false,
    });
    assert!(fx.relay.is_empty(), "throttled as on one node");
    f.now.at += Duration::from_millis(500);
    assert_eq!(
        f.apply(Event::Tick).relay,
        [Relay::Typing {
            room: RoomName::parse("lobby").unwrap(),
            user: name("alice"),
            active: false,
        }],
        "the held stop is relayed when the interval ends"
    );
    let _ = (f.frames(a), f.frames(b), f.frames(a2));
    // Bob types on another node: Alice and Carol here see it; Bob's own
    // session here does not (never echoed); nothing is relayed back.
    let fx = f.apply(Event::Remote(Relay::Typing {
        room: RoomName::parse("lobby").unwrap(),
        user: name("bob"),
        active: true,
    }));
    assert!(fx.relay.is_empty());
    assert_eq!(
        (f.types(a), f.types(a2)),
        (vec!["typing".to_owned()], vec!["typing".to_owned()])
    );
    assert!(f.frames(b).is_empty());
}
