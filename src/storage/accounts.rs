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
            if rec.spent {
                self.revoke_family(&rec.family)?;
                return Ok(SpendOutcome::Reused(rec));
            }
            if rec.expires_ms <= now_ms {
                return Ok(SpendOutcome::Invalid);
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

    pub fn revoke_family(&self, family: &Uuid) -> Result<()> {
        self.inner.families.insert(family.as_bytes(), &[1])?;
        Ok(())
    }

    pub fn family_revoked(&self, family: &Uuid) -> Result<bool> {
        Ok(self.inner.families.contains_key(family.as_bytes())?)
    }
}
