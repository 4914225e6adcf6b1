//! The view index: which messages each reader may see, so that a history page
//! reads O(limit) keys however many private messages between others lie in
//! its range (the shared log holds both kinds, interleaved by cursor).
//!
//! Keys `0x01` room `\0` viewer `\0` cursor (16 bytes, big-endian) → (), in
//! the log tree itself (`roomname_cursor_msg`): a commit stays one batch and
//! a message and its view keys land together. `viewer` is empty for a chat
//! message (everyone in the room sees it) and the sender's and the target's
//! name for a private one. Names never hold a 0 byte and usernames are never
//! empty, so "public" and each reader's own privates are separate contiguous,
//! time-ordered ranges; a page merges the two. The log records stay the
//! record; view keys carry no value.
//!
//! The writer adds a message's view keys in the same batch as the message. At
//! open, [`Store::catch_up_views`] indexes the records that have none: the
//! whole log on the first start after an upgrade, or a tail written by an
//! older binary.

use std::ops::Bound;

use super::{Result, Store, log_key};
use crate::protocol::{Cursor, MsgKind, RoomName, StoredMsg, Username};

/// The first byte of every view key. Room names start with a lowercase letter
/// or digit, so the view keys are one range of the log tree apart from every
/// room's log range, and a commit writes message and view keys in one batch.
const VIEW_SPACE: u8 = 0x01;

/// Index keys written per batch while catching up: bounds the memory of a
/// one-time index build over a large log.
const CATCH_UP_BATCH: usize = 10_000;

/// The first byte of every mention key: `0x02` room `\0` user `\0` cursor →
/// (), one per user a chat message mentions (`StoredMsg::mentions`). Apart
/// from the view keys and every room's log range, like them; written in the
/// same batch as the message. Records from before mentions have none, and
/// need none.
const MENTION_SPACE: u8 = 0x02;

fn mention_key(room: &RoomName, user: &Username, cursor: Option<Cursor>) -> Vec<u8> {
    let mut k = Vec::with_capacity(room.as_str().len() + user.as_str().len() + 19);
    k.push(MENTION_SPACE);
    k.extend_from_slice(room.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    if let Some(c) = cursor {
        k.extend_from_slice(&c.to_key());
    }
    k
}

/// The cursors of `room`'s messages that mention `user`, after `after`, oldest first.
pub(super) fn mention_cursors<'a>(
    store: &'a Store,
    room: &RoomName,
    user: &Username,
    after: Bound<Cursor>,
) -> impl Iterator<Item = Result<Cursor>> + 'a {
    let lo = match after {
        Bound::Excluded(c) => Bound::Excluded(mention_key(room, user, Some(c))),
        Bound::Included(c) => Bound::Included(mention_key(room, user, Some(c))),
        Bound::Unbounded => Bound::Included(mention_key(room, user, None)),
    };
    let hi = Bound::Included(mention_key(room, user, Some(Cursor::MAX)));
    store
        .inner
        .log
        .range::<Vec<u8>, _>((lo, hi))
        .filter_map(|kv| match kv {
            Ok((k, _)) => k
                .len()
                .checked_sub(16)
                .and_then(|at| Cursor::from_key(&k[at..]))
                .map(Ok),
            Err(e) => Some(Err(e.into())),
        })
}

fn view_prefix(room: &RoomName, viewer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(room.as_str().len() + viewer.len() + 19);
    k.push(VIEW_SPACE);
    k.extend_from_slice(room.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(viewer.as_bytes());
    k.push(0);
    k
}

fn view_key(room: &RoomName, viewer: &str, cursor: Cursor) -> Vec<u8> {
    let mut k = view_prefix(room, viewer);
    k.extend_from_slice(&cursor.to_key());
    k
}

/// The view keys of one message: one for a chat message, one per distinct
/// party (sender, target) for a private one. The first is the one
/// `catch_up_views` checks. A chat message's mention keys follow.
pub(super) fn view_keys(m: &StoredMsg) -> Vec<Vec<u8>> {
    match m.kind {
        MsgKind::Chat => std::iter::once(view_key(&m.room, "", m.cursor))
            .chain(
                m.mentions
                    .iter()
                    .map(|u| mention_key(&m.room, u, Some(m.cursor))),
            )
            .collect(),
        MsgKind::Private => {
            let mut keys = vec![view_key(&m.room, m.sender.as_str(), m.cursor)];
            if let Some(t) = m.target.as_ref().filter(|t| **t != m.sender) {
                keys.push(view_key(&m.room, t.as_str(), m.cursor));
            }
            keys
        }
    }
}

impl Store {
    /// The cursors in one view range (`viewer` "" = public) between `lo` and
    /// `hi`, newest first when `backward`.
    pub(super) fn view_cursors(
        &self,
        room: &RoomName,
        viewer: &str,
        lo: Bound<Cursor>,
        hi: Bound<Cursor>,
        backward: bool,
    ) -> Box<dyn Iterator<Item = Result<Cursor>> + Send> {
        let key = |b: Bound<Cursor>, unbounded: Cursor| match b {
            Bound::Included(c) => Bound::Included(view_key(room, viewer, c)),
            Bound::Excluded(c) => Bound::Excluded(view_key(room, viewer, c)),
            // Stay inside this viewer's range of the room.
            Bound::Unbounded => Bound::Included(view_key(room, viewer, unbounded)),
        };
        let range = self
            .inner
            .log
            .range::<Vec<u8>, _>((key(lo, Cursor::ZERO), key(hi, Cursor::MAX)));
        let cursor_of = |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Option<Result<Cursor>> {
            match kv {
                // Every key in the range ends in 16 cursor bytes; skip one that does not.
                Ok((k, _)) => k
                    .len()
                    .checked_sub(16)
                    .and_then(|at| Cursor::from_key(&k[at..]))
                    .map(Ok),
                Err(e) => Some(Err(e.into())),
            }
        };
        if backward {
            Box::new(range.rev().filter_map(cursor_of))
        } else {
            Box::new(range.filter_map(cursor_of))
        }
    }

    /// Indexes the log records that have no view entry yet. Per room it walks
    /// back from the newest record to the first one already indexed (the
    /// writer indexes in log order), so a normal start reads one record per
    /// room; then it indexes from there forwards, so that a build cut short
    /// leaves an indexed prefix and the next start resumes it. Returns how many
    /// records it indexed.
    pub(super) fn catch_up_views(&self) -> Result<usize> {
        let started = std::time::Instant::now();
        let rooms: Vec<RoomName> = self.lock_rooms().iter().cloned().collect();
        let mut indexed = 0;
        for room in &rooms {
            let from = self.first_unindexed(room)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let range = self
                .inner
                .log
                .range::<Vec<u8>, _>((from, Bound::Included(log_key(room, Cursor::MAX))));
            for kv in range {
                let (k, v) = kv?;
                let Some(m) = self.decode_msg_or_skip(&k, &v) else {
                    continue;
                };
                for key in view_keys(&m) {
                    batch.insert(key, &[]);
                    in_batch += 1;
                }
                indexed += 1;
                if in_batch >= CATCH_UP_BATCH {
                    self.inner.log.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            self.inner.log.apply_batch(batch)?;
        }
        if indexed > 0 {
            self.inner.db.flush()?;
            tracing::info!(
                records = indexed,
                rooms = rooms.len(),
                ms = started.elapsed().as_millis() as u64,
                "built the history view index for records written without it"
            );
        }
        Ok(indexed)
    }

    /// Where a room's unindexed tail starts: just after the newest record
    /// that has its view entry, or the room's first record.
    fn first_unindexed(&self, room: &RoomName) -> Result<Bound<Vec<u8>>> {
        let range = self
            .inner
            .log
            .range(log_key(room, Cursor::ZERO)..=log_key(room, Cursor::MAX));
        for kv in range.rev() {
            let (k, v) = kv?;
            // Not counted here: the forward pass counts and logs bad records.
            let Ok(m) = super::decode_msg(&v) else {
                continue;
            };
            if let Some(first) = view_keys(&m).first()
                && self.inner.log.contains_key(first)?
            {
                return Ok(Bound::Excluded(k.to_vec()));
            }
        }
        Ok(Bound::Included(log_key(room, Cursor::ZERO)))
    }
}
