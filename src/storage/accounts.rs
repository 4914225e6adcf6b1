//! Account tables: users, refresh tokens (stored by hash) and token families.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Record, Result, Store, decode, encode};
use crate::protocol::Username;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: Username,
    pub created_ms: u64,
    /// argon2id PHC string.
    pub phc: String,
    pub disabled: bool,
}

/// One refresh token. Each is used once; using a spent one revokes its family.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub family: Uuid,
    pub username: Username,
    pub expires_ms: u64,
    pub spent: bool,
}

pub enum SpendOutcome {
    /// No such token, or its family was revoked, or it expired.
    Invalid,
    /// The token had been used already: its family is now revoked.
    Reused(RefreshRecord),
    /// First use: the token is now spent; issue a successor in the same family.
    Fresh(RefreshRecord),
}

impl Store {
    /// Creates a user; `false` when the name is taken (atomic compare-and-swap).
    pub fn create_user(&self, rec: &UserRecord) -> Result<bool> {
        let bytes = encode(rec)?;
        let swapped = self.inner.users.compare_and_swap(
            rec.username.as_str(),
            None as Option<&[u8]>,
            Some(bytes),
        )?;
        Ok(swapped.is_ok())
    }

    pub fn user(&self, name: &Username) -> Result<Option<UserRecord>> {
        self.inner
            .users
            .get(name.as_str())?
            .map(|b| decode(&b))
            .transpose()
    }

    pub fn user_exists(&self, name: &Username) -> Result<bool> {
        Ok(self.inner.users.contains_key(name.as_str())?)
    }

    pub fn put_refresh(&self, hash: &[u8], rec: &RefreshRecord) -> Result<()> {
        self.inner.refresh.insert(hash, encode(rec)?)?;
        Ok(())
    }

    /// Uses a refresh token once. Concurrent uses of one token: exactly one is
    /// `Fresh`, the others see it spent and revoke the family (as reuse should).
    pub fn spend_refresh(&self, hash: &[u8], now_ms: u64) -> Result<SpendOutcome> {
        loop {
            let Some(old) = self.inner.refresh.get(hash)? else {
                return Ok(SpendOutcome::Invalid);
            };
            let rec: RefreshRecord = decode(&old)?;
            if self.family_revoked(&rec.family)? {
                return Ok(SpendOutcome::Invalid);
            }
            // Expiry before the spent flag: a token past its lifetime is
            // refused the same way whether or not the purge has removed it yet.
            if rec.expires_ms <= now_ms {
                return Ok(SpendOutcome::Invalid);
            }
            if rec.spent {
                self.revoke_family(&rec.family, now_ms)?;
                return Ok(SpendOutcome::Reused(rec));
            }
            let spent = RefreshRecord {
                spent: true,
                ..rec.clone()
            };
            if self
                .inner
                .refresh
                .compare_and_swap(hash, Some(old), Some(encode(&spent)?))?
                .is_ok()
            {
                return Ok(SpendOutcome::Fresh(rec));
            }
        }
    }

    /// The user and family of a token, if the token exists (for logout).
    pub fn refresh_owner(&self, hash: &[u8]) -> Result<Option<(Username, Uuid)>> {
        let rec = self
            .inner
            .refresh
            .get(hash)?
            .map(|b| decode::<RefreshRecord>(&b))
            .transpose()?;
        Ok(rec.map(|r| (r.username, r.family)))
    }

    /// Sets an account's `disabled` flag; `false` when there is no such user.
    pub fn set_disabled(&self, name: &Username, disabled: bool) -> Result<bool> {
        let Some(mut u) = self.user(name)? else {
            return Ok(false);
        };
        u.disabled = disabled;
        self.inner.users.insert(name.as_str(), encode(&u)?)?;
        Ok(true)
    }

    /// Every account, by username. A record that does not decode is skipped
    /// and counted: one bad record must not hide every other account.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let mut out = Vec::new();
        for kv in self.inner.users.iter() {
            let (k, v) = kv?;
            out.extend(self.decode_or_skip(Record::User, &k, &v));
        }
        Ok(out)
    }

    /// Marks a family revoked at `now_ms` (big-endian u64; revoking again
    /// moves the time on, which only keeps the marker longer).
    pub fn revoke_family(&self, family: &Uuid, now_ms: u64) -> Result<()> {
        self.inner
            .families
            .insert(family.as_bytes(), &now_ms.to_be_bytes())?;
        Ok(())
    }

    pub fn family_revoked(&self, family: &Uuid) -> Result<bool> {
        Ok(self.inner.families.contains_key(family.as_bytes())?)
    }
}

/// What one purge of the token tables removed, and the rows left after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub tokens_purged: u64,
    pub families_purged: u64,
    pub tokens_left: u64,
    pub families_left: u64,
}

/// Rows between two looks at the purge's stop flag.
const PURGE_STOP_CHECK: u64 = 1024;

impl Store {
    /// Deletes refresh-token rows that can never matter again, and revocation
    /// markers older than `family_keep_ms`; stops early when `stop()` says so.
    ///
    /// - A token past `expires_ms` is refused whatever else its row says, so
    ///   it goes, spent or not: a spent token is kept (for reuse detection)
    ///   exactly as long as it could have been valid.
    /// - Every token of a revoked family is refused by the marker alone, so
    ///   they go at once; the marker stays.
    /// - A marker must outlive the family's access tokens (they are checked
    ///   against it) and refresh tokens: the caller passes the longest
    ///   lifetime plus a margin as `family_keep_ms`.
    pub fn purge_refresh(
        &self,
        now_ms: u64,
        family_keep_ms: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<PurgeStats> {
        let mut st = PurgeStats::default();
        if self.purge_tokens(now_ms, stop, &mut st)? {
            self.purge_families(now_ms, family_keep_ms, stop, &mut st)?;
        }
        Ok(st)
    }

    /// The token half of `purge_refresh`; `false` when stopped early.
    fn purge_tokens(
        &self,
        now_ms: u64,
        stop: &dyn Fn() -> bool,
        st: &mut PurgeStats,
    ) -> Result<bool> {
        for (i, row) in self.inner.refresh.iter().enumerate() {
            if (i as u64 + 1).is_multiple_of(PURGE_STOP_CHECK) && stop() {
                return Ok(false);
            }
            let (key, value) = row?;
            // A row we cannot read is left alone (and counted): never guess.
            let gone = match decode::<RefreshRecord>(&value) {
                Ok(rec) => rec.expires_ms <= now_ms || self.family_revoked(&rec.family)?,
                Err(_) => false,
            };
            if gone {
                self.inner.refresh.remove(&key)?;
                st.tokens_purged += 1;
            } else {
                st.tokens_left += 1;
            }
        }
        Ok(true)
    }

    /// The marker half of `purge_refresh`.
    fn purge_families(
        &self,
        now_ms: u64,
        family_keep_ms: u64,
        stop: &dyn Fn() -> bool,
        st: &mut PurgeStats,
    ) -> Result<()> {
        for (i, row) in self.inner.families.iter().enumerate() {
            if (i as u64 + 1).is_multiple_of(PURGE_STOP_CHECK) && stop() {
                return Ok(());
            }
            let (key, value) = row?;
            let Ok(at) = <[u8; 8]>::try_from(value.as_ref()).map(u64::from_be_bytes) else {
                // A marker from before markers had a time: start its clock now.
                self.inner.families.insert(&key, &now_ms.to_be_bytes())?;
                st.families_left += 1;
                continue;
            };
            // Compare-and-swap: a revocation in the meantime keeps the marker.
            if at.saturating_add(family_keep_ms) <= now_ms
                && self
                    .inner
                    .families
                    .compare_and_swap(&key, Some(value), None as Option<&[u8]>)?
                    .is_ok()
            {
                st.families_purged += 1;
            } else {
                st.families_left += 1;
            }
        }
        Ok(())
    }

    /// Rows in the refresh-token and revoked-family tables (a full scan).
    pub fn refresh_rows(&self) -> (usize, usize) {
        (self.inner.refresh.len(), self.inner.families.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(family: Uuid, expires_ms: u64, spent: bool) -> RefreshRecord {
        RefreshRecord {
            family,
            username: Username::parse("alice").unwrap(),
            expires_ms,
            spent,
        }
    }

    #[test]
    fn purge_removes_only_rows_that_can_never_matter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let (live, revoked, old) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        store
            .put_refresh(b"live", &rec(live, 2_000, false))
            .unwrap();
        store
            .put_refresh(b"spent", &rec(live, 2_000, true))
            .unwrap();
        store
            .put_refresh(b"expired", &rec(live, 1_000, true))
            .unwrap();
        store
            .put_refresh(b"revoked", &rec(revoked, 2_000, false))
            .unwrap();
        store.inner.refresh.insert(b"unreadable", &[0xff]).unwrap();
        store.revoke_family(&revoked, 900).unwrap();
        store.revoke_family(&old, 100).unwrap();
        // A marker written before markers carried a time.
        let legacy = Uuid::new_v4();
        store
            .inner
            .families
            .insert(legacy.as_bytes(), &[1])
            .unwrap();

        // At 1000 ms, keeping markers 500 ms: `old` goes, `revoked` stays.
        let st = store.purge_refresh(1_000, 500, &|| false).unwrap();
        assert_eq!((st.tokens_purged, st.tokens_left), (2, 3), "{st:?}");
        assert_eq!((st.families_purged, st.families_left), (1, 2), "{st:?}");
        assert_eq!(store.refresh_rows(), (3, 2));
        assert!(matches!(
            store.spend_refresh(b"spent", 1_000).unwrap(),
            SpendOutcome::Reused(_)
        ));
        assert!(store.family_revoked(&legacy).unwrap());

        // Later, the legacy marker (clock started at 1000) and the rest expire.
        let st = store.purge_refresh(3_000, 500, &|| false).unwrap();
        assert_eq!(st.families_left, 0, "{st:?}");
        assert_eq!(store.refresh_rows(), (1, 0), "the unreadable row stays");
        // A stop request is honoured.
        for i in 0..3000u32 {
            store
                .put_refresh(&i.to_be_bytes(), &rec(live, 1, false))
                .unwrap();
        }
        let st = store.purge_refresh(3_000, 500, &|| true).unwrap();
        assert!(st.tokens_purged < 3000, "{st:?}");
    }
}
