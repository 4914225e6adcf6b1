//! Account changes as values: what a node does to its account tables, so
//! that in cluster mode the same change is applied on every node through
//! the replicated log (single node: applied here at once, as before).
//!
//! Every op is deterministic given the op and the time it carries (the
//! log's stamp in a cluster), and applying one twice (a re-applied log
//! entry after a crash) gives the same tables and the same outcome.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{RefreshRecord, Result, SpendOutcome, Store, UserRecord};
use crate::protocol::Username;

/// One change to the account tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AccountOp {
    /// Creates the user unless the name is taken.
    CreateUser(UserRecord),
    PutRefresh {
        hash: Vec<u8>,
        rec: RefreshRecord,
    },
    /// Uses a refresh token once. `op` names this use: applying the same
    /// use again answers as the first time did (a re-applied entry must not
    /// look like a reuse and revoke the family).
    Spend {
        hash: Vec<u8>,
        op: Uuid,
    },
    RevokeFamily {
        family: Uuid,
        user: Username,
    },
    SetDisabled {
        name: Username,
        disabled: bool,
    },
}

/// What an op did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AccountOutcome {
    /// `CreateUser`: created (`false`: the name was taken).
    Created(bool),
    /// `SetDisabled`: the user exists.
    Found(bool),
    Spent(Spent),
    Done,
}

/// [`SpendOutcome`] as a value that travels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Spent {
    Invalid,
    Reused(RefreshRecord),
    Fresh(RefreshRecord),
}

impl From<SpendOutcome> for Spent {
    fn from(s: SpendOutcome) -> Self {
        match s {
            SpendOutcome::Invalid => Spent::Invalid,
            SpendOutcome::Reused(r) => Spent::Reused(r),
            SpendOutcome::Fresh(r) => Spent::Fresh(r),
        }
    }
}

/// The tree that remembers which use spent a token (cluster mode only).
pub(super) const SPEND_OPS: &str = "refreshhash_spendop";

impl Store {
    /// Applies one account op at `now_ms`.
    pub fn apply_account(&self, op: &AccountOp, now_ms: u64) -> Result<AccountOutcome> {
        Ok(match op {
            AccountOp::CreateUser(rec) => AccountOutcome::Created(self.create_user(rec)?),
            AccountOp::PutRefresh { hash, rec } => {
                self.put_refresh(hash, rec)?;
                AccountOutcome::Done
            }
            AccountOp::Spend { hash, op } => {
                AccountOutcome::Spent(self.spend_once(hash, op, now_ms)?)
            }
            AccountOp::RevokeFamily { family, .. } => {
                self.revoke_family(family, now_ms)?;
                AccountOutcome::Done
            }
            AccountOp::SetDisabled { name, disabled } => {
                AccountOutcome::Found(self.set_disabled(name, *disabled)?)
            }
        })
    }

    /// `spend_refresh`, remembering the use: the same use again is `Fresh`
    /// again instead of a reuse.
    fn spend_once(&self, hash: &[u8], op: &Uuid, now_ms: u64) -> Result<Spent> {
        let ops = self.inner.db.open_tree(SPEND_OPS)?;
        if ops.get(hash)?.is_some_and(|v| v.as_ref() == op.as_bytes()) {
            let rec = self
                .inner
                .refresh
                .get(hash)?
                .map(|b| super::decode::<RefreshRecord>(&b))
                .transpose()?;
            return Ok(rec.map_or(Spent::Invalid, Spent::Fresh));
        }
        let out = Spent::from(self.spend_refresh(hash, now_ms)?);
        if matches!(out, Spent::Fresh(_)) {
            ops.insert(hash, op.as_bytes())?;
        }
        Ok(out)
    }
}

/// An account op on its way to the replicated log, with where its outcome goes.
pub struct AccountProposal {
    pub op: AccountOp,
    pub reply: oneshot::Sender<AccountOutcome>,
}

/// Cluster mode: the queue of account ops to the log's proposer. Full →
/// the caller gets `unavailable` (a sign-up, log-in or refresh is retried
/// by the client), never waits.
#[derive(Clone)]
pub struct AccountLog(pub mpsc::Sender<AccountProposal>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spend_applied_twice_is_one_use_and_a_second_use_is_reuse() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), 1 << 20).unwrap();
        let user = Username::parse("ann").unwrap();
        let rec = RefreshRecord {
            family: Uuid::new_v4(),
            username: user.clone(),
            expires_ms: 10_000,
            spent: false,
        };
        let hash = vec![7u8; 32];
        store
            .apply_account(
                &AccountOp::PutRefresh {
                    hash: hash.clone(),
                    rec,
                },
                1,
            )
            .unwrap();
        let first = AccountOp::Spend {
            hash: hash.clone(),
            op: Uuid::new_v4(),
        };
        for _ in 0..2 {
            let out = store.apply_account(&first, 5).unwrap();
            assert!(
                matches!(out, AccountOutcome::Spent(Spent::Fresh(_))),
                "{out:?}"
            );
        }
        let other = AccountOp::Spend {
            hash,
            op: Uuid::new_v4(),
        };
        let out = store.apply_account(&other, 6).unwrap();
        assert!(
            matches!(out, AccountOutcome::Spent(Spent::Reused(_))),
            "{out:?}"
        );
    }
}
