//! The shell's outbox, over real channels (`try_send` needs no runtime).

use super::*;
use crate::protocol::Frame;

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

/// The core and the outbox wired the way the shell wires them (no runtime):
/// removals and deliveries go to the outbox, refusals back to the core.
struct Wired {
    hub: HubState,
    outbox: Outbox,
    now: Now,
}

impl Wired {
    fn new() -> Self {
        Wired {
            hub: HubState::new(8, Cursor::ZERO),
            outbox: Outbox::default(),
            now: Now {
                at: Instant::now(),
                ms: 1_000_000,
            },
        }
    }

    fn apply(&mut self, ev: Event) {
        let fx = self.hub.apply(ev, self.now);
        for r in fx.removed {
            self.outbox.remove(r.session, r.close);
        }
        for d in fx.deliveries {
            self.outbox.push(&d.to, &d.frame);
        }
    }

    fn attach(&mut self, l: SessionLink) {
        let join = self.outbox.attach(l);
        self.apply(join);
    }

    /// The end of a hub turn, as `Shell::flush`.
    fn flush(&mut self) {
        while !self.outbox.is_empty() {
            for (session, refusal) in self.outbox.flush() {
                self.apply(match refusal {
                    Refusal::Full => Event::Evicted { session },
                    Refusal::Closed => Event::Gone { session },
                });
                self.outbox.remove(session, None);
            }
        }
    }

    fn chat(&mut self, session: Uuid, content: &str) {
        let msg = NewMsg {
            id: Uuid::new_v4(),
            kind: MsgKind::Chat,
            target: None,
            content: content.into(),
            action: false,
            target_known: false,
            mentions: Vec::new(),
        };
        self.apply(Event::Post {
            session,
            msg,
            storage: Ok(()),
        });
    }
}

/// `user`'s subscriptions of one multi-room connection (queue of `queue`
/// items) to `rooms`, each joined and flushed in a turn of its own; its
/// queue drained after.
fn multi(
    w: &mut Wired,
    user: &str,
    rooms: &[String],
    queue: usize,
) -> (
    Vec<Uuid>,
    mpsc::Receiver<Vec<Frame>>,
    watch::Receiver<Option<CloseCode>>,
) {
    let (out_tx, mut rx) = mpsc::channel(queue);
    let (close_tx, close) = watch::channel(None);
    let conn = Uuid::new_v4();
    let mut subs = Vec::new();
    for room in rooms {
        let id = Uuid::new_v4();
        w.attach(SessionLink {
            id,
            conn,
            user: Username::parse(user).unwrap(),
            client: ClientId::parse(user).unwrap(),
            room: RoomName::parse(room).unwrap(),
            family: None,
            away: false,
            out_tx: out_tx.clone(),
            close_tx: close_tx.clone(),
            held: false,
        });
        w.flush();
        while rx.try_recv().is_ok() {}
        subs.push(id);
    }
    (subs, rx, close)
}

fn room_of(f: &Frame) -> String {
    let v: Value = serde_json::from_str(f.as_str()).unwrap();
    v["room"].as_str().unwrap_or_default().to_owned()
}

/// Issue 14: a connection in k busy rooms takes ONE queue item per turn, as
/// a single-room one does, and is not evicted for being in many rooms; a
/// really full queue still evicts the whole connection (4002).
#[test]
fn a_connection_in_k_busy_rooms_gets_one_item_per_turn() {
    const K: usize = 5;
    const QUEUE: usize = 2;
    let mut w = Wired::new();
    let rooms: Vec<String> = (0..K).map(|i| format!("r{i}")).collect();
    // One writer per room, each on a single-room connection of its own.
    let mut writers = Vec::new();
    let mut _their_ends = Vec::new();
    for r in &rooms {
        let (mut l, rx, close) = link(1024);
        l.user = Username::parse("bob").unwrap();
        l.client = ClientId::parse(&format!("b{r}")).unwrap();
        l.room = RoomName::parse(r).unwrap();
        writers.push(l.id);
        _their_ends.push((rx, close));
        w.attach(l);
    }
    w.flush();
    let (subs, mut rx, close) = multi(&mut w, "alice", &rooms, QUEUE);
    let sessions = w.hub.session_count();

    // One message into each room, all in one turn.
    for (i, s) in writers.iter().enumerate() {
        w.chat(*s, &format!("m{i}"));
    }
    w.flush();
    assert_eq!(*close.borrow(), None, "not evicted for being in {K} rooms");
    assert_eq!(w.hub.session_count(), sessions);
    let item = rx.try_recv().expect("the turn's item");
    assert!(rx.try_recv().is_err(), "one item for the whole turn");
    let got: Vec<String> = item.iter().map(room_of).collect();
    assert_eq!(got, rooms, "each room's message once, in push order");

    // A queue that really stays full still evicts the connection whole.
    for _ in 0..QUEUE + 1 {
        w.chat(writers[0], "more");
        w.flush();
    }
    assert_eq!(*close.borrow(), Some(CloseCode::Evicted));
    assert_eq!(w.hub.session_count(), sessions - subs.len());
}

/// A held subscription's frames stay gathered (not sent with the others'),
/// and follow its `subscribed`/`history` once released; an `unsubscribed`
/// rides the connection's item after that room's last frame, also when it
/// was the connection's last room.
#[test]
fn held_frames_wait_and_unsubscribed_is_the_rooms_last_frame() {
    let mut o = Outbox::default();
    let (a, mut rx, _close) = link(8);
    let conn = a.conn;
    let (mut b, _, _) = link(8);
    b.conn = conn;
    b.out_tx = a.out_tx.clone();
    b.close_tx = a.close_tx.clone();
    b.held = true;
    let (ia, ib) = (a.id, b.id);
    o.attach(a);
    o.attach(b);
    let sys = |c: &str| {
        encode(&ServerMsg::System {
            room: "lobby",
            content: c,
        })
    };
    let text = |item: Vec<Frame>| -> Vec<String> {
        item.iter()
            .map(|f| {
                let v: Value = serde_json::from_str(f.as_str()).unwrap();
                v["content"]
                    .as_str()
                    .unwrap_or(v["type"].as_str().unwrap())
                    .to_owned()
            })
            .collect()
    };

    o.push(&[ia, ib], &sys("1"));
    assert!(o.flush().is_empty());
    assert_eq!(text(rx.try_recv().unwrap()), ["1"], "b's copy is held");
    o.push(&[ia, ib], &sys("2"));
    o.release(ib, vec![sys("b-subscribed"), sys("b-history")]);
    o.push(&[ia, ib], &sys("3"));
    assert!(o.flush().is_empty());
    assert_eq!(
        text(rx.try_recv().unwrap()),
        ["2", "b-subscribed", "b-history", "1", "2", "3", "3"]
    );
    assert!(rx.try_recv().is_err());

    // Unsubscribe as the shell does it: `last`, then the core's removal.
    let gone = encode(&ServerMsg::Unsubscribed { room: "lobby" });
    o.push(&[ia, ib], &sys("4"));
    o.last(ia, gone.clone());
    o.remove(ia, None);
    o.push(&[ib], &sys("5"));
    o.last(ib, gone.clone());
    o.remove(ib, None);
    assert!(o.flush().is_empty());
    assert_eq!(
        text(rx.try_recv().unwrap()),
        ["4", "4", "unsubscribed", "5", "unsubscribed"]
    );
    o.push(&[ia, ib], &sys("6"));
    assert!(o.is_empty(), "nothing after the last room");
}

/// A connection whose writer is gone reports every subscription as closed.
#[test]
fn a_closed_connection_reports_each_subscription() {
    let mut o = Outbox::default();
    let (a, rx, _close) = link(8);
    let (mut b, _, _) = link(8);
    b.conn = a.conn;
    b.out_tx = a.out_tx.clone();
    b.close_tx = a.close_tx.clone();
    let (ia, ib) = (a.id, b.id);
    o.attach(a);
    o.attach(b);
    drop(rx);
    o.push(&[ia], &encode(&ServerMsg::Unsubscribed { room: "lobby" }));
    assert_eq!(o.flush(), [(ia, Refusal::Closed), (ib, Refusal::Closed)]);
}
