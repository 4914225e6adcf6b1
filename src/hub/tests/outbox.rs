//! The shell's outbox, over real channels (`try_send` needs no runtime).

use super::*;

type Ends = (
    SessionLink,
    mpsc::Receiver<Vec<crate::protocol::Frame>>,
    watch::Receiver<Option<CloseCode>>,
);

fn link(queue: usize) -> Ends {
    let (out_tx, rx) = mpsc::channel(queue);
    let (close_tx, close) = watch::channel(None);
    let id = Uuid::new_v4();
    let l = SessionLink {
        id,
        conn: id,
        user: Username::parse("alice").unwrap(),
        client: ClientId::parse("a").unwrap(),
        room: RoomName::parse("lobby").unwrap(),
        family: None,
        away: false,
        out_tx,
        close_tx,
        held: false,
    };
    (l, rx, close)
}

#[test]
fn one_item_per_session_per_turn_and_full_or_closed_queues_are_reported() {
    let mut o = Outbox::default();
    let (fast, mut fast_rx, _) = link(8);
    let (slow, _slow_rx, _) = link(2);
    let (gone, gone_rx, _) = link(8);
    let ids = [fast.id, slow.id, gone.id];
    for l in [fast, slow, gone] {
        o.attach(l);
    }
    drop(gone_rx);
    let frame = encode(&ServerMsg::System {
        room: "lobby",
        content: "x",
    });
    let mut refused = Vec::new();
    for _ in 0..3 {
        // Two frames in one turn travel as one queue item.
        o.push(&ids, &frame);
        o.push(&ids, &frame);
        refused.extend(o.flush());
        assert!(o.is_empty());
        assert_eq!(fast_rx.try_recv().unwrap().len(), 2);
    }
    // In push order each turn; the slow queue holds two items, the third is refused.
    let (slow, gone) = (ids[1], ids[2]);
    assert_eq!(
        refused,
        [
            (gone, Refusal::Closed),
            (gone, Refusal::Closed),
            (slow, Refusal::Full),
            (gone, Refusal::Closed),
        ]
    );
}

#[test]
fn a_removed_session_is_closed_and_its_frames_dropped() {
    let mut o = Outbox::default();
    let (l, mut rx, close) = link(8);
    let id = l.id;
    o.attach(l);
    let frame = encode(&ServerMsg::System {
        room: "lobby",
        content: "x",
    });
    o.push(&[id], &frame);
    o.remove(id, Some(CloseCode::Evicted));
    assert!(o.flush().is_empty());
    assert_eq!(*close.borrow(), Some(CloseCode::Evicted));
    assert!(rx.try_recv().is_err(), "nothing sent after the removal");
    o.push(&[id], &frame);
    assert!(o.is_empty(), "a removed session gets nothing");
}
