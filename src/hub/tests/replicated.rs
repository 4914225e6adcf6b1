//! Cluster mode: a post is proposed to the replicated log and shown only
//! when its entry is committed (`StorageEvent::Committed`), with the log's
//! cursor; a resend of a stored id only answers its sender.

use super::*;
use crate::storage::CommittedMsg;

/// Commits everything queued (the "log"), giving cursors from `first` on.
fn commit_queued(f: &mut Fixture, first: Cursor, fresh: bool) -> Vec<Cursor> {
    let mut c = first;
    let msgs: Vec<CommittedMsg> = f
        .queue
        .drain(..)
        .map(|m| {
            c = c.next(m.ts_ms);
            let mut m = (*m).clone();
            m.cursor = c;
            CommittedMsg {
                msg: Arc::new(m),
                fresh,
            }
        })
        .collect();
    let cursors = msgs.iter().map(|m| m.msg.cursor).collect();
    f.apply(Event::Storage(StorageEvent::Committed(msgs)));
    cursors
}

fn replicated(queue_cap: usize) -> (Fixture, Sess, Sess) {
    let mut f = Fixture::new(8, queue_cap);
    f.hub = HubState::new(8, Cursor::ZERO).with_replicated_log();
    let a = f.join("alice", "a", "lobby");
    let b = f.join("bob", "b", "lobby");
    f.tick(Duration::ZERO);
    let (_, _) = (f.frames(a), f.frames(b));
    (f, a, b)
}

#[test]
fn a_post_is_proposed_and_shown_only_when_committed() {
    let (mut f, a, b) = replicated(16);
    let id = f.chat(a, "hi");
    assert!(
        f.frames(a).is_empty() && f.frames(b).is_empty(),
        "nothing before commit"
    );
    assert_eq!(f.queue.len(), 1);
    assert_eq!(f.queue[0].cursor, Cursor::ZERO, "the log assigns cursors");
    assert!(
        f.pending_ids("lobby").is_empty(),
        "nothing pending to merge"
    );
    let cursors = commit_queued(&mut f, Cursor { ms: 5, seq: 7 }, true);
    let got = f.frames(b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], id.to_string());
    assert_eq!(got[0]["cursor"], cursors[0].to_string());
    let mine = f.frames(a);
    let kinds: Vec<&str> = mine.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["chat", "receipt"], "shown, then saved");
    assert_eq!(mine[1]["status"], "saved");
    // A later join's history goes up to the committed message.
    let c = f.join("carol", "c", "lobby");
    assert_eq!(f.last_join.as_ref().unwrap().head, cursors[0]);
    f.frames(c);
}

#[test]
fn a_committed_resend_answers_its_sender_only() {
    let (mut f, a, b) = replicated(16);
    let id = f.chat(a, "hi");
    commit_queued(&mut f, Cursor::ZERO, false);
    assert!(f.frames(b).is_empty(), "a resend is shown to nobody");
    let mine = f.frames(a);
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0]["type"].as_str(), mine[0]["id"].as_str()),
        (Some("receipt"), Some(id.to_string().as_str()))
    );
    // Known durable now: a further resend is answered at once, not proposed.
    let fx = f.send(a, id, MsgKind::Chat, None, "hi");
    assert!(fx.append.is_none());
    assert_eq!(f.frames(a)[0]["status"], "saved");
}

#[test]
fn a_failed_proposal_is_unavailable_to_its_sender_and_may_be_resent() {
    let (mut f, a, b) = replicated(16);
    let id = f.chat(a, "hi");
    let failed: Vec<DurableMsg> = f
        .queue
        .drain(..)
        .map(|m| lobby_msg(m.id, "alice"))
        .collect();
    f.apply(Event::Storage(StorageEvent::Failed(failed)));
    let e = f.frames(a);
    assert_eq!(
        (e[0]["code"].as_str(), e[0]["id"].as_str()),
        (Some("unavailable"), Some(id.to_string().as_str()))
    );
    assert!(f.frames(b).is_empty());
    let fx = f.send(a, id, MsgKind::Chat, None, "hi");
    assert!(fx.append.is_some(), "the id is free again");
}

#[test]
fn an_installed_snapshot_closes_every_session_and_moves_the_head() {
    let (mut f, a, b) = replicated(16);
    let head = Cursor { ms: 900, seq: 3 };
    f.apply(Event::Storage(StorageEvent::Installed { head }));
    assert_eq!(f.closed(a), Some(CloseCode::GoingAway));
    assert_eq!(f.closed(b), Some(CloseCode::GoingAway));
    // A join after it reads history up to what the snapshot brought.
    let c = f.join("carol", "c", "lobby");
    assert_eq!(f.last_join.as_ref().unwrap().head, head);
    f.frames(c);
}

/// A read position applied from the log reaches each of the user's
/// connections here once (a multi-room one with two rooms too), nobody
/// else's; a node without the user's connections sends nothing.
#[test]
fn an_applied_read_reaches_each_connection_of_its_user_once() {
    let (mut f, a, b) = replicated(16);
    let multi = Uuid::new_v4();
    let m1 = f.subscribe(multi, "bob", "tab", "lobby");
    let m2 = f.subscribe(multi, "bob", "tab", "dev");
    f.tick(Duration::ZERO);
    for s in [a, b, m1, m2] {
        f.frames(s);
    }
    let cursor = Cursor { ms: 5, seq: 1 };
    let read = crate::storage::RoomRead {
        room: RoomName::parse("lobby").unwrap(),
        last_cursor: Some(cursor),
        read_cursor: Some(cursor),
        unread: 0,
        mentions: 0,
    };
    let bob = Username::parse("bob").unwrap();
    f.apply(Event::Storage(StorageEvent::ReadMoved {
        user: bob,
        read: read.clone(),
    }));
    let got = f.frames(b);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "read");
    assert_eq!(got[0]["room"], "lobby");
    assert_eq!(got[0]["cursor"], cursor.to_string());
    assert_eq!(
        (got[0]["unread"].as_u64(), got[0]["mentions"].as_u64()),
        (Some(0), Some(0))
    );
    let on_multi = f.frames(m1).len() + f.frames(m2).len();
    assert_eq!(on_multi, 1, "once per connection");
    assert!(f.frames(a).is_empty(), "not alice's");
    // Someone with no connection here: nothing at all.
    let carol = Username::parse("carol").unwrap();
    f.apply(Event::Storage(StorageEvent::ReadMoved {
        user: carol,
        read,
    }));
    for s in [a, b, m1, m2] {
        assert!(f.frames(s).is_empty());
    }
}
