//! Stored messages, cursors and receipt statuses: the records that travel from
//! the hub to storage and back out in history.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::names::{RoomName, Username};

/// A position in the global message order: a millisecond timestamp, then a
/// sequence number that breaks ties inside one millisecond. Encoded big-endian
/// so that sled's byte order is time order; shown to clients as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub ms: u64,
    pub seq: u64,
}

impl Cursor {
    pub const ZERO: Cursor = Cursor { ms: 0, seq: 0 };
    pub const MAX: Cursor = Cursor {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn to_key(self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.ms.to_be_bytes());
        k[8..].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Option<Self> {
        let ms = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
        (k.len() == 16).then_some(Cursor { ms, seq })
    }

    /// Parses the wire form; anything that is not exactly 32 lowercase hex digits is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let ms = u64::from_str_radix(&s[..16], 16).ok()?;
        let seq = u64::from_str_radix(&s[16..], 16).ok()?;
        Some(Cursor { ms, seq })
    }

    /// The next cursor after `self` at wall-clock time `now_ms`: strictly greater
    /// even when the clock stands still or goes backwards.
    pub fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Cursor { ms: now_ms, seq: 0 }
        } else {
            Cursor {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.ms, self.seq)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgKind {
    Chat,
    Private,
}

impl MsgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MsgKind::Chat => "chat",
            MsgKind::Private => "private",
        }
    }
}

/// A message as the log keeps it. The room and cursor repeat the sled key so a
/// record read on its own (from the id index) is complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMsg {
    pub id: Uuid,
    pub kind: MsgKind,
    pub room: RoomName,
    pub sender: Username,
    pub target: Option<Username>,
    pub content: String,
    pub action: bool,
    pub ts_ms: u64,
    pub cursor: Cursor,
    /// Room members this chat message mentions (`@name`), checked at the
    /// edge; empty for a private message. The last field: a record stored
    /// before it existed ends after `cursor`, and storage decodes it as
    /// [`StoredMsgV1`].
    pub mentions: Vec<Username>,
}

/// A message as stored before mentions: how records written by earlier
/// versions decode (bincode has no field names, so a record ends where its
/// fields end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMsgV1 {
    pub id: Uuid,
    pub kind: MsgKind,
    pub room: RoomName,
    pub sender: Username,
    pub target: Option<Username>,
    pub content: String,
    pub action: bool,
    pub ts_ms: u64,
    pub cursor: Cursor,
}

impl From<StoredMsgV1> for StoredMsg {
    fn from(m: StoredMsgV1) -> Self {
        StoredMsg {
            id: m.id,
            kind: m.kind,
            room: m.room,
            sender: m.sender,
            target: m.target,
            content: m.content,
            action: m.action,
            ts_ms: m.ts_ms,
            cursor: m.cursor,
            mentions: Vec::new(),
        }
    }
}

impl StoredMsg {
    /// Whether this message mentions `user`.
    pub fn mentions(&self, user: &Username) -> bool {
        self.mentions.iter().any(|m| m == user)
    }

    /// Privacy rule shared by live delivery and every history query.
    pub fn visible_to(&self, user: &Username) -> bool {
        match self.kind {
            MsgKind::Chat => true,
            MsgKind::Private => &self.sender == user || self.target.as_ref() == Some(user),
        }
    }
}

/// Receipt status. Ordered: it only moves forward, merged with `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    Saved = 1,
    Delivered = 2,
    Seen = 3,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Saved => "saved",
            Status::Delivered => "delivered",
            Status::Seen => "seen",
        }
    }

    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Status::Saved),
            2 => Some(Status::Delivered),
            3 => Some(Status::Seen),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_sorts() {
        let a = Cursor {
            ms: 1_795_852_800_123,
            seq: 7,
        };
        assert_eq!(Cursor::parse(&a.to_string()), Some(a));
        assert_eq!(Cursor::from_key(&a.to_key()), Some(a));
        assert_eq!(a.to_string().len(), 32);
        let b = a.next(a.ms);
        let c = b.next(a.ms + 1);
        let d = c.next(a.ms - 5_000);
        assert!(a < b && b < c && c < d);
        assert!(a.to_key() < b.to_key() && b.to_key() < c.to_key() && c.to_key() < d.to_key());
    }

    #[test]
    fn cursor_rejects_garbage() {
        for bad in [
            "",
            "zz",
            &"0".repeat(31),
            &"0".repeat(33),
            &"A".repeat(32),
            "-0000000000000000000000000000000",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Cursor::from_key(&[0; 15]), None);
        assert_eq!(Cursor::from_key(&[0; 17]), None);
    }

    #[test]
    fn status_only_orders_forward() {
        assert!(Status::Saved < Status::Delivered && Status::Delivered < Status::Seen);
        assert_eq!(Status::Seen.max(Status::Delivered), Status::Seen);
        assert_eq!(
            Status::from_u8(Status::Delivered as u8),
            Some(Status::Delivered)
        );
        assert_eq!(Status::from_u8(0), None);
    }
}
