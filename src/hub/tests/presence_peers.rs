//! Cluster mode: a room's presence is the union of its local users and
//! every serving node's (as the cluster resolved their digests); a change
//! that leaves the union as it was sends nothing; a node gone takes its
//! users with it; the local user set (not sessions) is what is published.

use super::*;
use crate::hub::state::PeerPresence;

fn cluster_fixture() -> Fixture {
    let mut f = Fixture::new(8, 16);
    f.hub = HubState::new(8, Cursor::ZERO).with_replicated_log();
    f
}

fn users(names: &[&str]) -> Vec<Username> {
    names.iter().map(|n| Username::parse(n).unwrap()).collect()
}

fn on(f: &mut Fixture, node: &str, names: &[&str]) -> Effects {
    f.apply(Event::Peers(PeerPresence::Users {
        node: node.to_owned(),
        room: RoomName::parse("lobby").unwrap(),
        users: users(names),
    }))
}

fn gone(f: &mut Fixture, node: &str) {
    f.apply(Event::Peers(PeerPresence::Gone {
        node: node.to_owned(),
    }));
}

/// The presence frames `s` got after 600 ms, as their user lists.
fn presences(f: &mut Fixture, s: Sess) -> Vec<Value> {
    f.tick(Duration::from_millis(600));
    f.frames(s)
        .into_iter()
        .filter(|v| v["type"] == "presence")
        .map(|v| v["users"].clone())
        .collect()
}

#[test]
fn presence_is_the_union_over_nodes_and_who_says_the_same() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "a", "lobby");
    assert_eq!(presences(&mut f, a), [serde_json::json!(["alice"])]);
    on(&mut f, "n2", &["bob", "carol"]);
    on(&mut f, "n3", &["alice", "dave"]);
    let p = presences(&mut f, a);
    assert_eq!(p, [serde_json::json!(["alice", "bob", "carol", "dave"])]);
    f.apply(Event::Who { session: a.0 });
    let w = f.frames(a);
    assert_eq!(w[0]["users"], p[0]);
    assert_eq!(w[0]["count"], 4);
}

#[test]
fn a_remote_change_that_leaves_the_union_as_it_was_sends_nothing() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "a", "lobby");
    on(&mut f, "n2", &["bob"]);
    presences(&mut f, a);
    // alice on n3 too, bob on n3 too: the union is still alice and bob.
    on(&mut f, "n3", &["alice", "bob"]);
    on(&mut f, "n2", &[]);
    assert!(presences(&mut f, a).is_empty());
    assert_eq!(f.tick(Duration::ZERO), None, "no timer either");
}

#[test]
fn a_node_gone_takes_its_users_along_and_only_its_own() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "a", "lobby");
    on(&mut f, "n2", &["bob"]);
    on(&mut f, "n3", &["carol"]);
    presences(&mut f, a);
    gone(&mut f, "n2");
    assert_eq!(
        presences(&mut f, a),
        [serde_json::json!(["alice", "carol"])]
    );
    gone(&mut f, "n2");
    assert!(
        presences(&mut f, a).is_empty(),
        "gone twice changes nothing"
    );
}

#[test]
fn peers_are_kept_while_no_local_session_is_in_the_room() {
    let mut f = cluster_fixture();
    on(&mut f, "n2", &["bob"]);
    let a = f.join("alice", "a", "lobby");
    assert_eq!(presences(&mut f, a), [serde_json::json!(["alice", "bob"])]);
}

#[test]
fn the_local_user_set_is_published_not_sessions() {
    let mut f = cluster_fixture();
    let lobby = RoomName::parse("lobby").unwrap();
    let a = f.join("alice", "a", "lobby");
    assert_eq!(f.hub.local_users(&lobby), users(&["alice"]));
    let published = |fx: Effects| fx.local_users;
    // A second session of alice: the user set did not change.
    let id = Uuid::new_v4();
    f.live.insert(id);
    let fx = f.apply(Event::Join {
        session: id,
        conn: id,
        user: Username::parse("alice").unwrap(),
        client: ClientId::parse("a2").unwrap(),
        room: lobby.clone(),
        family: None,
        away: false,
    });
    assert!(published(fx).is_empty());
    let b = f.join("bob", "b", "lobby");
    assert_eq!(f.hub.local_users(&lobby), users(&["alice", "bob"]));
    let fx = f.apply(Event::Leave { session: a.0 });
    assert!(published(fx).is_empty(), "alice still has a session");
    let fx = f.apply(Event::Leave { session: id });
    assert_eq!(published(fx), std::slice::from_ref(&lobby));
    let fx = f.apply(Event::Leave { session: b.0 });
    assert_eq!(
        published(fx),
        std::slice::from_ref(&lobby),
        "the last one: an empty set"
    );
    assert!(f.hub.local_users(&lobby).is_empty());
}

#[test]
fn a_single_node_publishes_nothing() {
    let mut f = Fixture::new(8, 16);
    let id = Uuid::new_v4();
    f.live.insert(id);
    let fx = f.apply(Event::Join {
        session: id,
        conn: id,
        user: Username::parse("alice").unwrap(),
        client: ClientId::parse("a").unwrap(),
        room: RoomName::parse("lobby").unwrap(),
        family: None,
        away: false,
    });
    assert!(fx.local_users.is_empty());
}

/// A user listed by another node joining here changes nobody's list: the
/// others here get no presence (the joiner does; the local set changed, so
/// it is published).
#[test]
fn joining_here_when_listed_on_another_node_sends_presence_to_the_joiner_only() {
    let mut f = cluster_fixture();
    let a = f.join("alice", "a", "lobby");
    on(&mut f, "n2", &["bob"]);
    assert_eq!(presences(&mut f, a), [serde_json::json!(["alice", "bob"])]);
    f.now.at += Duration::from_millis(600);
    let b = f.join("bob", "b", "lobby");
    let fx = f.apply(Event::Tick);
    assert_eq!(fx.deliveries.len(), 1, "{:?}", fx.deliveries);
    assert_eq!(fx.deliveries[0].to, [b.0]);
    assert!(presences(&mut f, a).is_empty());
    assert_eq!(presences(&mut f, b), [serde_json::json!(["alice", "bob"])]);
}
