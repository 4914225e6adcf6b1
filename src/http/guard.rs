//! Abuse limits at the edge: keyed rate limiters (per address, per username)
//! and caps on open connections (WebSockets, and HTTP before an upgrade).
//! All are checked before any work.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use warp::http::{HeaderMap, HeaderValue, header};
use warp::reply::Response;

use super::client_ip::{TrustedProxies, limit_key};
use super::reply;
use crate::metrics::CapHit;
use crate::protocol::ErrorCode;

/// A per-key limit of `n` per minute, all of it usable as a burst.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        KeyedLimit {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(seconds)` to wait, rounded up, when over the limit.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|nu| {
            let wait = nu.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets keys whose limits have fully recovered, so memory stays bounded
    /// however many addresses or names have been seen.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// `429` with `Retry-After` in whole seconds.
pub fn too_many(retry_after_s: u64) -> Response {
    let mut r = reply::error(ErrorCode::RateLimited, "too many requests; retry later");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
    r
}

/// The global per-username log-in limit is this many times the per-(username,
/// address) one: a guesser spread over many addresses is still slowed, while
/// one guesser can no longer lock the owner out from elsewhere.
pub const LOGINS_PER_USER_GLOBAL_FACTOR: u32 = 10;

/// Every address-keyed limiter is keyed by `client_ip::limit_key` of the
/// client address (`TrustedProxies::client_addr`).
pub struct Limits {
    pub proxies: TrustedProxies,
    pub upgrades: KeyedLimit<IpAddr>,
    pub signups: KeyedLimit<IpAddr>,
    pub logins: KeyedLimit<IpAddr>,
    /// Per (lower-cased username, client key): a guesser exhausts only their own budget.
    pub logins_per_user: KeyedLimit<(String, IpAddr)>,
    /// Per username from all addresses, `LOGINS_PER_USER_GLOBAL_FACTOR` times higher.
    pub logins_per_user_global: KeyedLimit<String>,
    pub refreshes: KeyedLimit<IpAddr>,
    /// Open WebSockets.
    pub conns: Arc<ConnCaps>,
}

impl Limits {
    /// The limiter key of the client behind a request from `peer`.
    pub fn client_key(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        limit_key(self.proxies.client_addr(peer, headers))
    }

    /// Both per-username log-in limits; the per-address one first, so a
    /// guesser already refused does not use up the username's global budget.
    pub fn check_login_user(&self, username: &str, client: IpAddr) -> Result<(), u64> {
        let name = username.to_ascii_lowercase();
        self.logins_per_user.check(&(name.clone(), client))?;
        self.logins_per_user_global.check(&name)
    }

    pub fn prune(&self) {
        self.upgrades.prune();
        self.signups.prune();
        self.logins.prune();
        self.logins_per_user.prune();
        self.logins_per_user_global.prune();
        self.refreshes.prune();
    }

    /// Prunes every `every` until the process ends.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                match me.upgrade() {
                    Some(l) => l.prune(),
                    None => break,
                }
            }
        });
    }
}

/// Caps on open connections, in total and per address: one instance for
/// WebSockets, one for HTTP connections not (yet) upgraded.
pub struct ConnCaps {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    /// A std mutex: held for one map update, never across `.await`.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; dropping it frees the place.
pub struct ConnSlot {
    caps: Arc<ConnCaps>,
    /// `None`: counted in the total only (a trusted proxy's connection).
    ip: Option<IpAddr>,
}

impl ConnCaps {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        ConnCaps {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a place for a connection from `ip`, or says which cap is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, CapHit> {
        self.acquire_slot(Some(ip))
    }

    /// Takes a place counted in the total only: for a trusted proxy, whose
    /// one address stands for many clients (their per-address caps apply
    /// later, by forwarded address, to the WebSockets they open).
    pub fn try_acquire_total(self: &Arc<Self>) -> Result<ConnSlot, CapHit> {
        self.acquire_slot(None)
    }

    /// Check-and-add under one lock, so two accepts never both take the last place.
    fn acquire_slot(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnSlot, CapHit> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(CapHit::Total);
        }
        if let Some(ip) = ip {
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(CapHit::PerAddress);
            }
            *n += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnSlot {
            caps: self.clone(),
            ip,
        })
    }
}

/// Takes a WebSocket slot, or answers `503` (server full) / `429` (this address has too many).
pub fn acquire(limits: &Arc<Limits>, ip: IpAddr) -> Result<ConnSlot, Response> {
    limits.conns.try_acquire(ip).map_err(|hit| match hit {
        CapHit::Total => reply::error(ErrorCode::Unavailable, "server is full; retry later"),
        CapHit::PerAddress => too_many(5),
    })
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let caps = &self.caps;
        let mut per_ip = caps.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = self.ip
            && let Some(n) = per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        caps.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_limit_and_prune() {
        let l = KeyedLimit::<IpAddr>::per_minute(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(&a).is_ok() && l.check(&a).is_ok());
        let wait = l.check(&a).unwrap_err();
        assert!((1..=31).contains(&wait), "{wait}");
        assert!(l.check(&b).is_ok());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn caps_free_on_drop() {
        let limits = Arc::new(Limits {
            proxies: TrustedProxies::default(),
            upgrades: KeyedLimit::per_minute(1),
            signups: KeyedLimit::per_minute(1),
            logins: KeyedLimit::per_minute(1),
            logins_per_user: KeyedLimit::per_minute(1),
            logins_per_user_global: KeyedLimit::per_minute(1),
            refreshes: KeyedLimit::per_minute(1),
            conns: Arc::new(ConnCaps::new(3, 2)),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = acquire(&limits, a).unwrap();
        let _s2 = acquire(&limits, a).unwrap();
        assert_eq!(
            acquire(&limits, a).err().map(|r| r.status()),
            Some(warp::http::StatusCode::TOO_MANY_REQUESTS)
        );
        let _s3 = acquire(&limits, b).unwrap();
        assert_eq!(
            acquire(&limits, b).err().map(|r| r.status()),
            Some(warp::http::StatusCode::SERVICE_UNAVAILABLE)
        );
        drop(s1);
        let _s4 = acquire(&limits, a).unwrap();
        assert_eq!(limits.conns.open(), 3);
    }
}
