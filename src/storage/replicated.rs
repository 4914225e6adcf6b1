//! Cluster mode: committed log entries applied to this node's store. The
//! replicated log is durable on a majority before an entry is applied, so
//! nothing here is flushed; re-applying an entry after a crash writes the
//! same keys again (cursors come from the log, ids decide duplicates).

use std::sync::Arc;

use super::queue::{CommittedMsg, StorageCmd, StorageEvent};
use super::{Result, Store};

impl Store {
    /// Applies the messages, acks, read positions and member records of
    /// committed entries, in order, and returns what the hub shows: the
    /// messages (fresh or resent), the receipts and read positions that moved.
    pub fn apply_replicated(&self, cmds: &[StorageCmd]) -> Result<Vec<StorageEvent>> {
        let applied = self.apply_batch(cmds)?;
        // An id resent while its first copy was still uncommitted can be in
        // the log twice, even in one batch: only its first copy is fresh (shown
        // live); the writer stored only that one.
        let mut shown = std::collections::HashSet::new();
        let msgs: Vec<CommittedMsg> = cmds
            .iter()
            .filter_map(|c| match c {
                StorageCmd::Append(m, _) => Some(CommittedMsg {
                    msg: Arc::clone(m),
                    fresh: applied.fresh.contains(&m.id) && shown.insert(m.id),
                }),
                StorageCmd::Ack(_) | StorageCmd::Read(_) | StorageCmd::Member { .. } => None,
            })
            .collect();
        let mut events = Vec::with_capacity(applied.events.len());
        if !msgs.is_empty() {
            events.push(StorageEvent::Committed(msgs));
        }
        // `Durable` is the write-ahead queue's report: the log replaces it.
        events.extend(
            applied
                .events
                .into_iter()
                .filter(|e| !matches!(e, StorageEvent::Durable(_))),
        );
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use uuid::Uuid;

    use super::*;
    use crate::protocol::{Cursor, MsgKind, RoomName, Status, StoredMsg, Username};
    use crate::storage::{AckCmd, ReadCmd};

    fn msg(id: Uuid, sender: &str, seq: u64) -> StorageCmd {
        let cursor = Cursor { ms: 7, seq };
        StorageCmd::Append(
            Arc::new(StoredMsg {
                id,
                kind: MsgKind::Chat,
                room: RoomName::parse("lobby").unwrap(),
                sender: Username::parse(sender).unwrap(),
                target: None,
                content: "hi".into(),
                action: false,
                ts_ms: 7,
                cursor,
                mentions: Vec::new(),
            }),
            Instant::now(),
        )
    }

    #[test]
    fn an_entry_applied_twice_is_stored_once_and_reports_its_resends() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), 1 << 20).unwrap();
        let bob = Username::parse("bob").unwrap();
        let room = RoomName::parse("lobby").unwrap();
        store.remember_member(&room, &bob).unwrap();
        let id = Uuid::new_v4();
        let entry = [
            msg(id, "alice", 0),
            StorageCmd::Ack(AckCmd {
                by: bob.clone(),
                ids: vec![id],
                status: Status::Seen,
            }),
        ];
        let first = store.apply_replicated(&entry).unwrap();
        assert!(matches!(&first[0], StorageEvent::Committed(m) if m[0].fresh && m[0].msg.id == id));
        assert!(
            matches!(&first[1], StorageEvent::Receipt { status: Status::Seen, by, .. } if *by == bob)
        );
        // A crash before the state machine recorded the entry: applied again.
        let again = store.apply_replicated(&entry).unwrap();
        assert_eq!(again.len(), 1, "the receipt does not move twice: {again:?}");
        assert!(matches!(&again[0], StorageEvent::Committed(m) if !m[0].fresh));
        assert_eq!(store.last_cursor().unwrap(), Cursor { ms: 7, seq: 0 });
    }

    /// Cluster mode: a first join and a read position come from the log; a
    /// member record before an ack in the same entry lets the ack count; a
    /// read moves forward only and reports the counts at its position.
    #[test]
    fn members_and_read_positions_apply_from_the_log_forward_only() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), 1 << 20).unwrap();
        let bob = Username::parse("bob").unwrap();
        let room = RoomName::parse("lobby").unwrap();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let member = StorageCmd::Member {
            room: room.clone(),
            user: bob.clone(),
        };
        let ack = StorageCmd::Ack(AckCmd {
            by: bob.clone(),
            ids: vec![first],
            status: Status::Seen,
        });
        let read = |ms, seq| {
            StorageCmd::Read(ReadCmd {
                user: bob.clone(),
                room: room.clone(),
                cursor: Cursor { ms, seq },
            })
        };
        let events = store
            .apply_replicated(&[
                msg(first, "alice", 0),
                msg(second, "alice", 1),
                member,
                ack,
                read(7, 0),
            ])
            .unwrap();
        assert!(store.was_member(&room, &bob).unwrap());
        assert!(matches!(&events[1], StorageEvent::Receipt { by, .. } if *by == bob));
        let StorageEvent::ReadMoved { user, read: r } = &events[2] else {
            panic!("{events:?}")
        };
        assert_eq!(*user, bob);
        assert_eq!(r.read_cursor, Some(Cursor { ms: 7, seq: 0 }));
        assert_eq!(
            (r.unread, r.mentions),
            (1, 0),
            "the second message is unread"
        );
        // Backwards, or the same position again (an entry applied twice): nothing.
        for (ms, seq) in [(7, 0), (6, 9)] {
            let again = store.apply_replicated(&[read(ms, seq)]).unwrap();
            assert!(again.is_empty(), "{again:?}");
        }
        let list = store.rooms_of(&bob).unwrap();
        assert_eq!(list.len(), 1, "the room is in bob's list");
        assert_eq!(list[0].read_cursor, Some(Cursor { ms: 7, seq: 0 }));
        let forward = store.apply_replicated(&[read(7, 1)]).unwrap();
        assert!(matches!(&forward[..], [StorageEvent::ReadMoved { read, .. }] if read.unread == 0));
    }

    #[test]
    fn an_id_twice_in_one_batch_is_fresh_once() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), 1 << 20).unwrap();
        let id = Uuid::new_v4();
        // The first copy's entry and the resend's, committed together.
        let events = store
            .apply_replicated(&[msg(id, "alice", 0), msg(id, "alice", 1)])
            .unwrap();
        let StorageEvent::Committed(m) = &events[0] else {
            panic!("{events:?}")
        };
        let fresh: Vec<bool> = m.iter().map(|c| c.fresh).collect();
        assert_eq!(fresh, [true, false], "shown live once");
        assert_eq!(store.last_cursor().unwrap(), Cursor { ms: 7, seq: 0 });
    }
}
