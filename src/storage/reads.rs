//! Read positions and the per-user room list: where each user stopped
//! reading each room they joined, and the unread and mention counts after it.
//!
//! Tree `username_roomname_cursor`: user `\0` room → the read cursor (16
//! bytes, big-endian) or nothing (joined, nothing read yet). Written by
//! `remember_member` (a join adds the room without touching a position) and
//! `move_read` (forward only). In cluster mode both come from the replicated
//! log (`ReadCmd`, `StorageCmd::Member`), applied on every node, and the
//! tree travels in the log's snapshots.
//!
//! Counts are computed when asked, from the indexes the log already has:
//! unread from the room's public view range merged with the user's own
//! private range after the read cursor (each record read for its sender,
//! since own messages never count), mentions from the mention index
//! (`views.rs`). Both stop at [`COUNT_CAP`], so a room costs O(cap) reads
//! however far behind its reader is.

use std::ops::Bound;

use super::history::merge_cursors;
use super::queue::{ReadCmd, StorageEvent};
use super::views::mention_cursors;
use super::{Result, Store, log_key};
use crate::protocol::{Cursor, RoomName, Username};

/// Counts stop here: 100 means "100 or more" (clients show "99+").
pub const COUNT_CAP: usize = 100;

/// Records an unread count examines at most: own messages are skipped, and
/// a user who wrote this many in a row after their read position gets a
/// lower bound rather than an unbounded scan.
const UNREAD_SCAN_MAX: usize = 1000;

/// One room of a user's room list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRead {
    pub room: RoomName,
    /// The newest message of the room the user may see.
    pub last_cursor: Option<Cursor>,
    /// The user's read position (`None`: nothing read).
    pub read_cursor: Option<Cursor>,
    /// Messages after `read_cursor` the user may see and did not send, up to [`COUNT_CAP`].
    pub unread: usize,
    /// Messages after `read_cursor` that mention the user, up to [`COUNT_CAP`].
    pub mentions: usize,
}

pub(super) fn user_room_key(user: &Username, room: &RoomName) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 1 + room.as_str().len());
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(room.as_str().as_bytes());
    k
}

/// A stored position: 16 cursor bytes, or empty for "nothing read".
fn position(v: &[u8]) -> Option<Cursor> {
    Cursor::from_key(v)
}

impl Store {
    /// A `read` frame: moves `user`'s position in `room` forward to `cursor`
    /// and makes it durable before it is announced. `None`: not forward
    /// (ignored, like a receipt that does not move); `Some`: the room's state
    /// after the move, for the `read` frame. Off the async workers.
    pub async fn mark_read(
        &self,
        user: Username,
        room: RoomName,
        cursor: Cursor,
    ) -> Result<Option<RoomRead>> {
        let moved = self
            .blocking(move |s| {
                if !s.move_read(&user, &room, cursor)? {
                    return Ok(None);
                }
                s.room_read(&user, &room).map(Some)
            })
            .await?;
        if moved.is_some() {
            self.flush().await?;
        }
        Ok(moved)
    }

    /// A `read` from the replicated log (cluster mode), on every node: the
    /// position moves forward only; when it moved, the event carries the
    /// room's counts at the new position, for the user's connections on
    /// this node. Not flushed: the log is durable before it is applied.
    pub(super) fn apply_read(&self, r: &ReadCmd) -> Result<Option<StorageEvent>> {
        if !self.move_read(&r.user, &r.room, r.cursor)? {
            return Ok(None);
        }
        let read = self.room_read_at(&r.user, &r.room, Some(r.cursor))?;
        Ok(Some(StorageEvent::ReadMoved {
            user: r.user.clone(),
            read,
        }))
    }

    /// `GET /api/rooms`: `user`'s room list with positions and counts, off
    /// the async workers.
    pub async fn room_list(&self, user: Username) -> Result<Vec<RoomRead>> {
        self.blocking(move |s| s.rooms_of(&user)).await
    }

    /// Adds `room` to `user`'s room list if it is not there (a position is kept).
    pub(super) fn list_room(&self, user: &Username, room: &RoomName) -> Result<()> {
        // Err(CompareAndSwapError): already listed, which is all we wanted.
        let _ = self.inner.user_rooms.compare_and_swap(
            user_room_key(user, room),
            None::<&[u8]>,
            Some(&[] as &[u8]),
        )?;
        Ok(())
    }

    /// Builds the room lists from the member records once, when the tree is
    /// new (a data directory from before read positions).
    pub(super) fn catch_up_room_lists(&self) -> Result<()> {
        if !self.inner.user_rooms.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for k in self.inner.room_members.iter().keys() {
            let k = k?;
            let Some(at) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            let mut flipped = k[at + 1..].to_vec();
            flipped.push(0);
            flipped.extend_from_slice(&k[..at]);
            batch.insert(flipped, &[]);
            n += 1;
        }
        if n > 0 {
            self.inner.user_rooms.apply_batch(batch)?;
            self.inner.db.flush()?;
            tracing::info!(
                records = n,
                "built the per-user room lists from the member records"
            );
        }
        Ok(())
    }

    /// Moves `user`'s read position in `room` to `cursor` if that is forward;
    /// returns whether it moved. Atomic (compare-and-swap), so two sessions
    /// moving it at once cannot move it back. Not flushed here.
    pub(super) fn move_read(
        &self,
        user: &Username,
        room: &RoomName,
        cursor: Cursor,
    ) -> Result<bool> {
        let mut moved = false;
        self.inner
            .user_rooms
            .fetch_and_update(user_room_key(user, room), |old| {
                let before = old.and_then(position);
                moved = before.is_none_or(|b| cursor > b);
                Some(if moved {
                    cursor.to_key().to_vec()
                } else {
                    old.map(<[u8]>::to_vec).unwrap_or_default()
                })
            })?;
        Ok(moved)
    }

    /// `user`'s state in one room: positions and counts.
    pub(super) fn room_read(&self, user: &Username, room: &RoomName) -> Result<RoomRead> {
        let read = self
            .inner
            .user_rooms
            .get(user_room_key(user, room))?
            .and_then(|v| position(&v));
        self.room_read_at(user, room, read)
    }

    /// Every room in `user`'s list with its state: newest activity first,
    /// rooms without messages last, then by name.
    pub(super) fn rooms_of(&self, user: &Username) -> Result<Vec<RoomRead>> {
        let mut prefix = user.as_str().as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.inner.user_rooms.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let Some(room) = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(RoomName::parse)
            else {
                continue;
            };
            out.push(self.room_read_at(user, &room, position(&v))?);
        }
        // `None` sorts before `Some`: reversed, rooms without messages come last.
        out.sort_by(|a, b| b.last_cursor.cmp(&a.last_cursor).then(a.room.cmp(&b.room)));
        Ok(out)
    }

    fn room_read_at(
        &self,
        user: &Username,
        room: &RoomName,
        read: Option<Cursor>,
    ) -> Result<RoomRead> {
        let after = read.map_or(Bound::Unbounded, Bound::Excluded);
        let newest = |viewer: &str| {
            self.view_cursors(room, viewer, Bound::Unbounded, Bound::Unbounded, true)
                .next()
                .transpose()
        };
        let last_cursor = newest("")?.max(newest(user.as_str())?);
        let mentions = mention_cursors(self, room, user, after)
            .take(COUNT_CAP)
            .collect::<Result<Vec<_>>>()?
            .len();
        Ok(RoomRead {
            room: room.clone(),
            last_cursor,
            read_cursor: read,
            unread: self.unread(user, room, after)?,
            mentions,
        })
    }

    /// Visible messages after `after` not sent by `user`, up to [`COUNT_CAP`].
    fn unread(&self, user: &Username, room: &RoomName, after: Bound<Cursor>) -> Result<usize> {
        if !self.room_known(room) {
            return Ok(0);
        }
        let public = self.view_cursors(room, "", after, Bound::Unbounded, false);
        let mine = self.view_cursors(room, user.as_str(), after, Bound::Unbounded, false);
        let mut unread = 0;
        for c in merge_cursors(public, mine, false).take(UNREAD_SCAN_MAX) {
            let key = log_key(room, c?);
            let Some(v) = self.inner.log.get(&key)? else {
                continue;
            };
            let Some(m) = self.decode_msg_or_skip(&key, &v) else {
                continue;
            };
            if m.sender != *user {
                unread += 1;
                if unread == COUNT_CAP {
                    break;
                }
            }
        }
        Ok(unread)
    }
}
