//! The message-id rule, in one place: a client picks each message's id, and
//! may resend it (after a reconnect, or an `unavailable`). An id already used
//! by the same sender in the same room is that message again (answered with
//! `saved`, never stored twice); used by anyone or anywhere else, it is a
//! `conflict`.
//!
//! The id index on disk is the truth. The hub keeps the ids of recent
//! messages (durable or not yet) in memory as a cache of the same index and
//! judges them with [`IdUse::judge`], the same rule.

use uuid::Uuid;

use super::{Result, Store};
use crate::protocol::{RoomName, Username};

/// What an incoming message's id means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdUse {
    /// Never used: a new message.
    Fresh,
    /// This sender's message in this room: an idempotent resend.
    Resend,
    /// Names another sender's or another room's message.
    Conflict,
}

impl IdUse {
    /// The rule. `owner`: who sent the message the id already names, and
    /// where (`None`: the id is unused).
    pub fn judge(
        owner: Option<(&Username, &RoomName)>,
        sender: &Username,
        room: &RoomName,
    ) -> IdUse {
        match owner {
            None => IdUse::Fresh,
            Some((s, r)) if s == sender && r == room => IdUse::Resend,
            Some(_) => IdUse::Conflict,
        }
    }
}

impl Store {
    /// Classifies `id` for a message from `sender` in `room` against the id
    /// index on disk.
    pub fn classify_id(&self, id: &Uuid, sender: &Username, room: &RoomName) -> Result<IdUse> {
        let owner = self.msgref(id)?;
        Ok(IdUse::judge(
            owner.as_ref().map(|r| (&r.sender, &r.room)),
            sender,
            room,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_rule() {
        let (ann, bob) = (
            Username::parse("ann").unwrap(),
            Username::parse("bob").unwrap(),
        );
        let (a, b) = (RoomName::parse("a").unwrap(), RoomName::parse("b").unwrap());
        assert_eq!(IdUse::judge(None, &ann, &a), IdUse::Fresh);
        assert_eq!(IdUse::judge(Some((&ann, &a)), &ann, &a), IdUse::Resend);
        assert_eq!(IdUse::judge(Some((&bob, &a)), &ann, &a), IdUse::Conflict);
        assert_eq!(IdUse::judge(Some((&ann, &b)), &ann, &a), IdUse::Conflict);
    }
}
