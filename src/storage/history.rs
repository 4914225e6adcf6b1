//! History queries: pages of one room's log as one user may see them.
//!
//! The log on disk lags the hub by at most one group commit, so every query
//! also takes the hub's not-yet-durable messages of the room (`pending`) and
//! merges them by cursor: a page never misses a message that was broadcast.
//!
//! The disk side reads the view index (`views.rs`): the room's public range
//! merged with the reader's own private range, so a page examines about
//! `limit + 1` records however many private messages between others it skips.

use std::ops::Bound;
use std::sync::Arc;

use super::{Result, Store, log_key};
use crate::metrics::Metrics;
use crate::protocol::{Cursor, PageDir, RoomName, Status, StoredMsg, Username};

/// A message of a page and its status (`None`: not on disk yet).
type PageItem = (Arc<StoredMsg>, Option<Status>);

/// One page, oldest first. `status` is `None` for a message still on its way to disk.
pub struct Page {
    pub msgs: Vec<(Arc<StoredMsg>, Option<Status>)>,
    /// More visible messages exist beyond this page in the direction asked.
    pub more: bool,
    /// Log records read from disk for this page: at most `limit + 1` plus any
    /// skipped (undecodable, or indexed but missing). The bound the view index buys.
    pub examined: usize,
}

impl Page {
    pub fn empty() -> Self {
        Page {
            msgs: Vec::new(),
            more: false,
            examined: 0,
        }
    }
}

/// One history read: whose, where, which page.
pub struct HistoryQuery {
    pub room: RoomName,
    pub viewer: Username,
    pub want: Want,
    /// The newest cursor considered (the room's head when a session joined),
    /// so that a page and the live stream after it never overlap.
    pub upto: Option<Cursor>,
}

/// Which page a history read wants.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    /// `limit` messages in direction `dir` (the `history` frame, HTTP).
    Page(PageDir, usize),
    /// A join: up to `max` messages after `since` if it names a message of
    /// the room (a resume), else the latest `latest`.
    Resume {
        since: Option<Cursor>,
        max: usize,
        latest: usize,
    },
}

/// What a history read found.
pub struct Fetched {
    pub page: Page,
    /// A `Want::Resume` found its cursor and continued after it.
    pub resumed: bool,
}

impl Store {
    /// The one history read used by a join, the `history` frame and the HTTP
    /// endpoint: the disk page merged with the hub's not-yet-durable messages
    /// of the room (`pending`), read off the async workers, its work counted
    /// in `hubbub_history_examined`.
    pub async fn fetch_history(
        &self,
        q: HistoryQuery,
        pending: Vec<Arc<StoredMsg>>,
        metrics: &Metrics,
    ) -> Result<Fetched> {
        let fetched = self
            .blocking(move |store| store.fetch_now(&q, &pending))
            .await?;
        metrics
            .history_examined
            .observe(fetched.page.examined as f64);
        Ok(fetched)
    }

    fn fetch_now(&self, q: &HistoryQuery, pending: &[Arc<StoredMsg>]) -> Result<Fetched> {
        let (dir, limit, resumed) = match q.want {
            Want::Page(dir, limit) => (dir, limit, false),
            Want::Resume { since, max, latest } => {
                // A cursor past `upto` is stored but not yet shown live here
                // (cluster mode: applied before the hub took it): the live
                // stream from `upto` on would repeat what the client saw up
                // to it, so it is not a resume this read can honour.
                let shown = |c: Cursor| q.upto.is_none_or(|u| c <= u);
                let found = since.filter(|&c| {
                    shown(c)
                        && self.has_cursor(&q.room, c, pending).unwrap_or_else(|e| {
                            tracing::error!(error = %e, "resume lookup failed");
                            false
                        })
                });
                match found {
                    Some(c) => (PageDir::After(c), max, true),
                    None => (PageDir::Latest, latest, false),
                }
            }
        };
        let page = self.page(&q.room, &q.viewer, dir, limit, q.upto, pending)?;
        Ok(Fetched { page, resumed })
    }

    /// Up to `limit` visible messages in direction `dir`; `upto` caps the newest
    /// cursor considered (the room's head when a session joined), so a page and
    /// the live stream after it never overlap.
    pub(super) fn page(
        &self,
        room: &RoomName,
        viewer: &Username,
        dir: PageDir,
        limit: usize,
        upto: Option<Cursor>,
        pending: &[Arc<StoredMsg>],
    ) -> Result<Page> {
        let upto = upto.unwrap_or(Cursor::MAX);
        let want = limit + 1;
        let visible = |m: &StoredMsg| m.visible_to(viewer) && m.cursor <= upto;
        let (lo, hi, backward) = match dir {
            PageDir::Latest => (Bound::Unbounded, Bound::Included(upto), true),
            PageDir::Before(c) => (Bound::Unbounded, Bound::Excluded(c.min(Cursor::MAX)), true),
            PageDir::After(c) => (Bound::Excluded(c), Bound::Included(upto), false),
        };
        let in_range = |c: Cursor| {
            let above = match lo {
                Bound::Excluded(l) => c > l,
                _ => true,
            };
            let below = match hi {
                Bound::Excluded(h) => c < h,
                Bound::Included(h) => c <= h,
                Bound::Unbounded => true,
            };
            above && below
        };

        let (from_disk, examined) =
            self.page_from_disk(room, viewer, (lo, hi), backward, want, &visible)?;

        let mut from_memory: Vec<(Arc<StoredMsg>, Option<Status>)> = pending
            .iter()
            .filter(|m| visible(m) && in_range(m.cursor))
            .map(|m| (m.clone(), None))
            .collect();
        from_memory.sort_by_key(|(m, _)| m.cursor);
        if backward {
            from_memory.reverse();
        }
        from_memory.truncate(want);

        // Merge two lists sorted in the page's direction; the disk copy wins a tie
        // (it carries a status).
        let mut merged = Vec::with_capacity(want);
        let (mut a, mut b) = (
            from_disk.into_iter().peekable(),
            from_memory.into_iter().peekable(),
        );
        let before = |x: Cursor, y: Cursor| if backward { x > y } else { x < y };
        while merged.len() < want {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0.cursor == y.0.cursor => {
                    b.next();
                    a.next()
                }
                (Some(x), Some(y)) if before(y.0.cursor, x.0.cursor) => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(item) => merged.push(item),
                None => break,
            }
        }
        let more = merged.len() > limit;
        merged.truncate(limit);
        if backward {
            merged.reverse();
        }
        Ok(Page {
            msgs: merged,
            more,
            examined,
        })
    }

    /// Up to `want` visible messages from disk in the page's direction, and
    /// how many records were read for them.
    fn page_from_disk(
        &self,
        room: &RoomName,
        viewer: &Username,
        (lo, hi): (Bound<Cursor>, Bound<Cursor>),
        backward: bool,
        want: usize,
        visible: &dyn Fn(&StoredMsg) -> bool,
    ) -> Result<(Vec<PageItem>, usize)> {
        let mut from_disk: Vec<PageItem> = Vec::new();
        let mut examined = 0;
        if self.room_known(room) {
            let public = self.view_cursors(room, "", lo, hi, backward);
            let mine = self.view_cursors(room, viewer.as_str(), lo, hi, backward);
            for c in merge_cursors(public, mine, backward) {
                let c = c?;
                examined += 1;
                let key = log_key(room, c);
                // An index entry without its record (never written so: the
                // writer applies the log first) is skipped like an undecodable one.
                let Some(v) = self.inner.log.get(&key)? else {
                    continue;
                };
                let Some(m) = self.decode_msg_or_skip(&key, &v) else {
                    continue;
                };
                if visible(&m) {
                    let status = self.status_of(&m.id)?;
                    from_disk.push((Arc::new(m), Some(status)));
                    if from_disk.len() == want {
                        break;
                    }
                }
            }
        }
        Ok((from_disk, examined))
    }

    /// Whether `cursor` names a message of this room, on disk or pending.
    pub(super) fn has_cursor(
        &self,
        room: &RoomName,
        cursor: Cursor,
        pending: &[Arc<StoredMsg>],
    ) -> Result<bool> {
        if pending.iter().any(|m| m.cursor == cursor) {
            return Ok(true);
        }
        Ok(self.room_known(room) && self.inner.log.contains_key(log_key(room, cursor))?)
    }
}

/// Merges two cursor streams sorted in the page's direction into one, without
/// duplicates (a message is either public or private, so a cursor in both
/// would be an index fault, not two messages).
pub(super) fn merge_cursors(
    a: impl Iterator<Item = Result<Cursor>>,
    b: impl Iterator<Item = Result<Cursor>>,
    backward: bool,
) -> impl Iterator<Item = Result<Cursor>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut last: Option<Cursor> = None;
    std::iter::from_fn(move || {
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => true,
                (_, Some(Err(_))) | (None, Some(_)) => false,
                (Some(Ok(x)), Some(Ok(y))) => (x > y) == backward || x == y,
            };
            let next = if take_a { a.next() } else { b.next() };
            match next {
                Some(Ok(c)) if last == Some(c) => continue,
                Some(Ok(c)) => {
                    last = Some(c);
                    return Some(Ok(c));
                }
                other => return other,
            }
        }
    })
}

#[cfg(test)]
mod resume_tests {
    use std::sync::Arc;
    use std::time::Instant;

    use uuid::Uuid;

    use super::*;
    use crate::protocol::MsgKind;
    use crate::storage::StorageCmd;

    fn post(seq: u64) -> StorageCmd {
        StorageCmd::Append(
            Arc::new(StoredMsg {
                id: Uuid::new_v4(),
                kind: MsgKind::Chat,
                room: RoomName::parse("lobby").unwrap(),
                sender: Username::parse("alice").unwrap(),
                target: None,
                content: "hi".into(),
                action: false,
                ts_ms: 7,
                cursor: Cursor { ms: 7, seq },
                mentions: Vec::new(),
            }),
            Instant::now(),
        )
    }

    fn resume(since: u64, upto: u64) -> HistoryQuery {
        HistoryQuery {
            room: RoomName::parse("lobby").unwrap(),
            viewer: Username::parse("bob").unwrap(),
            want: Want::Resume {
                since: Some(Cursor { ms: 7, seq: since }),
                max: 100,
                latest: 50,
            },
            upto: Some(Cursor { ms: 7, seq: upto }),
        }
    }

    #[test]
    fn a_resume_past_what_was_shown_is_not_honoured() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), 1 << 20).unwrap();
        store
            .apply_replicated(&[post(0), post(1), post(2)])
            .unwrap();
        // Stored up to 2; the hub has shown up to 2: resumed after 1.
        let f = store.fetch_now(&resume(1, 2), &[]).unwrap();
        assert!(f.resumed);
        assert_eq!(f.page.msgs.len(), 1);
        // Shown only up to 0 (1 and 2 are still on their way to the hub,
        // which will send them live): a resume after 1 would see 1 twice.
        let f = store.fetch_now(&resume(1, 0), &[]).unwrap();
        assert!(!f.resumed, "since is past upto");
    }
}
