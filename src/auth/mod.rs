//! Accounts and credentials: sign-up, log-in, refresh-token rotation with
//! reuse detection, log-out, and access-token checks. Built on `storage`'s
//! account tables; knows nothing of HTTP.

pub mod password;
mod pool;
pub mod purge;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use tokens::{Identity, Jwt};

use crate::error::InternalError;
use crate::protocol::{Username, time::now_ms};
use crate::storage::{
    AccountLog, AccountOp, AccountOutcome, AccountProposal, PurgeStats, RefreshRecord, Spent,
    Store, UserRecord,
};

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed (bad username or password shape).
    #[error("{0}")]
    Invalid(&'static str),
    /// The username is taken.
    #[error("username is taken")]
    Taken,
    /// Unknown user, wrong password, or an invalid/expired/revoked refresh token.
    #[error("invalid credentials")]
    Unauthorized,
    /// A spent refresh token was used again: its family is now revoked, and the
    /// sockets opened with it must close.
    #[error("refresh token reused")]
    Reused { username: Username, family: Uuid },
    /// Cluster mode: the change could not be committed (no majority, or too
    /// busy); the client retries, maybe at another node.
    #[error("accounts are unavailable; retry")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// Cluster mode: how long an account change may take to commit.
const ACCOUNT_WRITE_TIMEOUT: Duration = Duration::from_secs(6);

/// A successful sign-up, log-in or refresh: the user and fresh credentials.
pub struct Session {
    pub user: UserRecord,
    pub access: String,
    /// When `access` expires (ms since the epoch): clients refresh before it.
    pub access_expires_ms: u64,
    pub refresh: String,
}

#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    jwt: Jwt,
    cfg: AuthConfig,
    /// Verified against for unknown users so both failures take the same time.
    dummy_phc: String,
    /// argon2 runs here, never on the async workers or tokio's blocking pool.
    hasher: pool::HashPool,
    /// Cluster mode: account changes go through the replicated log, so every
    /// node has every account. `None`: written here at once.
    log: Option<AccountLog>,
}

/// Hashing threads: sign-ups and log-ins beyond this many at once wait their turn.
const HASH_THREADS: usize = 2;

impl Auth {
    pub fn new(store: Store, secret: &[u8], cfg: AuthConfig) -> Result<Self, InternalError> {
        Self::with_log(store, secret, cfg, None)
    }

    /// `log`: cluster mode's queue to the replicated log.
    pub fn with_log(
        store: Store,
        secret: &[u8],
        cfg: AuthConfig,
        log: Option<AccountLog>,
    ) -> Result<Self, InternalError> {
        let dummy_phc = password::hash("not a real password, only for timing")?;
        Ok(Auth {
            inner: Arc::new(Inner {
                store,
                jwt: Jwt::new(secret),
                cfg,
                dummy_phc,
                hasher: pool::HashPool::new(HASH_THREADS)?,
                log,
            }),
        })
    }

    /// Cluster mode: proposes `op` and waits for its outcome, as applied here.
    async fn propose(&self, log: &AccountLog, op: AccountOp) -> Result<AccountOutcome, AuthError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        log.0
            .try_send(AccountProposal { op, reply })
            .map_err(|_| AuthError::Unavailable)?;
        match tokio::time::timeout(ACCOUNT_WRITE_TIMEOUT, outcome).await {
            Ok(Ok(o)) => Ok(o),
            _ => Err(AuthError::Unavailable),
        }
    }

    /// Durable before a client hears of it: flushed here, committed in a cluster.
    async fn settle(&self) -> Result<(), AuthError> {
        if self.inner.log.is_none() {
            self.inner.store.flush().await?;
        }
        Ok(())
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.cfg
    }

    pub async fn signup(&self, username: &str, pw: &str) -> Result<Session, AuthError> {
        let username = Username::parse(username)
            .ok_or(AuthError::Invalid("username must match ^[a-z0-9_]{3,32}$"))?;
        if !password::acceptable(pw) {
            return Err(AuthError::Invalid("password must be 8 to 128 bytes"));
        }
        if self.inner.store.user_exists(&username)? {
            return Err(AuthError::Taken);
        }
        let pw = pw.to_owned();
        let phc = self.inner.hasher.run(move || password::hash(&pw)).await??;
        let user = UserRecord {
            id: Uuid::now_v7(),
            username,
            created_ms: now_ms(),
            phc,
            disabled: false,
        };
        let created = match &self.inner.log {
            None => self.inner.store.create_user(&user)?,
            Some(log) => matches!(
                self.propose(log, AccountOp::CreateUser(user.clone()))
                    .await?,
                AccountOutcome::Created(true)
            ),
        };
        if !created {
            return Err(AuthError::Taken);
        }
        let session = self.start_session(user, Uuid::new_v4()).await?;
        self.settle().await?;
        Ok(session)
    }

    pub async fn login(&self, username: &str, pw: &str) -> Result<Session, AuthError> {
        let user = match Username::parse(username) {
            Some(name) => self.inner.store.user(&name)?,
            None => None,
        };
        let phc = user
            .as_ref()
            .map_or_else(|| self.inner.dummy_phc.clone(), |u| u.phc.clone());
        let pw = pw.to_owned();
        let ok = self
            .inner
            .hasher
            .run(move || password::verify(&pw, &phc))
            .await?;
        match user {
            Some(u) if ok && !u.disabled => {
                let s = self.start_session(u, Uuid::new_v4()).await?;
                self.settle().await?;
                Ok(s)
            }
            _ => Err(AuthError::Unauthorized),
        }
    }

    /// Rotates a refresh token. A spent token used again revokes its family:
    /// whoever holds any token of it (a thief or the user) must log in again.
    pub async fn refresh(&self, token: &str) -> Result<Session, AuthError> {
        let hash = tokens::refresh_hash(token);
        let spent = match &self.inner.log {
            None => Spent::from(self.inner.store.spend_refresh(&hash, now_ms())?),
            Some(log) => {
                let op = AccountOp::Spend {
                    hash,
                    op: Uuid::new_v4(),
                };
                match self.propose(log, op).await? {
                    AccountOutcome::Spent(s) => s,
                    _ => Spent::Invalid,
                }
            }
        };
        match spent {
            Spent::Invalid => Err(AuthError::Unauthorized),
            Spent::Reused(rec) => {
                tracing::warn!(user = %rec.username, "refresh token reused: family revoked");
                self.settle().await?;
                Err(AuthError::Reused {
                    username: rec.username,
                    family: rec.family,
                })
            }
            Spent::Fresh(rec) => {
                let user = self
                    .inner
                    .store
                    .user(&rec.username)?
                    .filter(|u| !u.disabled)
                    .ok_or(AuthError::Unauthorized)?;
                let s = self.start_session(user, rec.family).await?;
                self.settle().await?;
                Ok(s)
            }
        }
    }

    /// Revokes the refresh token's family, if the token is known; returns it
    /// so the caller can close the sockets opened with it.
    pub async fn logout(&self, token: Option<&str>) -> Result<Option<(Username, Uuid)>, AuthError> {
        let found = match token {
            Some(t) => self.inner.store.refresh_owner(&tokens::refresh_hash(t))?,
            None => None,
        };
        if let Some((user, family)) = &found {
            match &self.inner.log {
                None => self.inner.store.revoke_family(family, now_ms())?,
                Some(log) => {
                    let op = AccountOp::RevokeFamily {
                        family: *family,
                        user: user.clone(),
                    };
                    self.propose(log, op).await?;
                }
            }
            self.settle().await?;
        }
        Ok(found)
    }

    /// A valid access token whose user is enabled and whose family is not revoked.
    /// True when `access_token` is one of ours and current (signature and
    /// expiry only, no account lookup): in a cluster, a node that does not
    /// know its user or family yet may simply not have applied the sign-up.
    pub fn genuine(&self, access_token: &str) -> bool {
        self.inner.jwt.verify(access_token).is_some()
    }

    pub fn verify(&self, access_token: &str) -> Option<Identity> {
        let who = self.inner.jwt.verify(access_token)?;
        let store = &self.inner.store;
        if let Some(f) = &who.family
            && store.family_revoked(f).unwrap_or(true)
        {
            return None;
        }
        match store.user(&who.username) {
            Ok(Some(u)) if !u.disabled && u.id == who.user_id => Some(who),
            _ => None,
        }
    }

    /// Enables or disables an account; `false` when there is no such user.
    pub async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<bool, AuthError> {
        let found = match &self.inner.log {
            None => self.inner.store.set_disabled(name, disabled)?,
            Some(log) => {
                let op = AccountOp::SetDisabled {
                    name: name.clone(),
                    disabled,
                };
                matches!(self.propose(log, op).await?, AccountOutcome::Found(true))
            }
        };
        self.settle().await?;
        Ok(found)
    }

    /// Deletes the refresh-token rows that can never matter again (see
    /// `Store::purge_refresh`), off the async workers; returns early once
    /// `stop` is cancelled.
    pub async fn purge_refresh(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<PurgeStats, InternalError> {
        let cfg = &self.inner.cfg;
        let keep = cfg.access_ttl.max(cfg.refresh_ttl) + purge::FAMILY_MARKER_GRACE;
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let store = self.inner.store.clone();
        let stats = tokio::task::spawn_blocking(move || {
            store.purge_refresh(now_ms(), keep_ms, &|| stop.is_cancelled())
        })
        .await??;
        if stats.tokens_purged + stats.families_purged > 0 {
            self.inner.store.flush().await?;
        }
        Ok(stats)
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, InternalError> {
        self.inner.store.users()
    }

    pub fn user(&self, name: &Username) -> Result<Option<UserRecord>, InternalError> {
        self.inner.store.user(name)
    }

    async fn start_session(&self, user: UserRecord, family: Uuid) -> Result<Session, AuthError> {
        let now = now_ms();
        let access = self.inner.jwt.issue(
            user.id,
            &user.username,
            family,
            now / 1000,
            self.inner.cfg.access_ttl.as_secs(),
        )?;
        let (refresh, hash) = tokens::new_refresh()?;
        let rec = RefreshRecord {
            family,
            username: user.username.clone(),
            expires_ms: now + self.inner.cfg.refresh_ttl.as_millis() as u64,
            spent: false,
        };
        match &self.inner.log {
            None => self.inner.store.put_refresh(&hash, &rec)?,
            Some(log) => {
                self.propose(log, AccountOp::PutRefresh { hash, rec })
                    .await?;
            }
        }
        let access_expires_ms = (now / 1000 + self.inner.cfg.access_ttl.as_secs()) * 1000;
        Ok(Session {
            user,
            access,
            access_expires_ms,
            refresh,
        })
    }
}
