//! The composition root: opens storage, starts the storage writer, the hub and
//! the HTTP edge, and shuts them down in order.
//!
//! Shutdown order: stop accepting → `/readyz` 503 → sessions close with 1001 →
//! the hub stops → the storage writer applies and flushes everything queued →
//! return. Every message that was broadcast is on disk when `run` returns.
//!
//! The same shutdown runs when storage fails (sled keeps a write error, so the
//! node cannot recover in-process): then `run` returns `StorageFailed`, which
//! `main` turns into exit status `EXIT_STORAGE_FAILED`. Messages broadcast but
//! not written were never `saved`; their senders resend them after a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, AuthConfig, purge, tokens};
use crate::cluster::{Cluster, ClusterConfig, ClusterDeps, ClusterView};
use crate::config::Config;
use crate::files;
use crate::http::client_ip::TrustedProxies;
use crate::http::guard::{ConnCaps, KeyedLimit, LOGINS_PER_USER_GLOBAL_FACTOR, Limits};
use crate::http::{self, AppState, Edge, Hosts, Origins};
use crate::hub::{HubConfig, HubHandle};
use crate::metrics::Metrics;
use crate::session::{SessionConfig, SessionCtx};
use crate::storage::{AccountLog, StorageHandle, StorageHealth, StorageWriterConfig, Store};
use crate::tls::{Tls, local_names};

mod live;

/// Storage → hub events (durable ids, receipts). Full → the writer waits: the
/// hub drains it first in every turn, and never waits on storage itself.
const STORAGE_EVENTS_QUEUE: usize = 1024;
/// Cluster mode: account changes waiting for the log (sign-ups, log-ins,
/// refreshes, logouts). Full → `unavailable`; clients retry.
const ACCOUNT_QUEUE: usize = 256;
/// Keyed rate limiters forget recovered keys this often.
const LIMITER_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// After storage failed, sessions get this long to send the senders' errors.
const FAILED_NOTICE_GRACE: Duration = Duration::from_millis(200);
/// Sessions get this long to send their Close frames at shutdown.
const SESSION_GRACE: Duration = Duration::from_secs(5);
/// Descriptors besides client connections: sled's files, listeners, epoll,
/// the metrics port, log and certificate files.
const FD_HEADROOM: u64 = 256;
/// The `--metrics-listen` port is for a scraper or two: small caps of its own,
/// so an attack on the main port never locks the operator out of it.
const METRICS_HTTP_CAPS: (usize, usize) = (64, 16);

/// Exit status after storage failed (EX_TEMPFAIL): free disk space and start again.
pub const EXIT_STORAGE_FAILED: u8 = 75;

/// The server stopped because storage failed; the text is sled's error.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageFailed(pub String);

/// A started server. `shutdown` runs the ordered shutdown and waits for it.
pub struct Running {
    pub addr: SocketAddr,
    /// `https://…` or `http://…`, for people and scripts.
    pub url: String,
    pub tls: Option<Arc<Tls>>,
    /// The `--metrics-listen` address, when metrics have a port of their own.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound cluster address (gossip and node links), in cluster mode.
    pub cluster_addr: Option<SocketAddr>,
    pub cluster: Option<ClusterView>,
    stop: CancellationToken,
    storage: Arc<StorageHealth>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Prints where to connect (first line: the URL) and how to trust the CA.
    pub fn announce(&self) {
        println!("hubbub listening on {}", self.url);
        if let Some(tls) = &self.tls {
            println!("{}", tls.trust_help());
        }
        if let Some(a) = self.metrics_addr {
            println!("metrics on http://{a}/metrics");
        }
        if let (Some(a), Some(c)) = (self.cluster_addr, &self.cluster) {
            println!(
                "hubbub cluster on {a} (node {}, generation {})",
                c.node, c.generation
            );
        }
        tracing::info!(url = %self.url, "listening");
    }

    /// Resolves when storage has failed: the server is then shutting down on
    /// its own, and `shutdown` returns `StorageFailed`.
    pub async fn storage_failed(&self) {
        self.storage.failed().await;
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?
    }
}

/// Binds, starts everything, and returns once the server accepts connections.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    cfg.validate()?;
    check_fd_limit(&cfg);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr().context("local address")?;
    files::create_private_dir(&cfg.data_dir)?;
    let store = open_store(&cfg).await?;
    // Cluster mode: one JWT secret per cluster, derived from the cluster
    // secret, and account changes through the replicated log.
    let cluster_secret = cfg.cluster_secret()?;
    let secret = match (&cluster_secret, &cfg.jwt_secret) {
        (Some(c), _) => crate::cluster::keys::jwt_secret(c)?.to_vec(),
        (None, Some(s)) => s.as_bytes().to_vec(),
        (None, None) => tokens::load_or_create_secret(&cfg.data_dir.join("jwt_secret"))?,
    };
    let (account_log, account_rx) = match &cluster_secret {
        Some(_) => {
            let (tx, rx) = mpsc::channel(ACCOUNT_QUEUE);
            (Some(AccountLog(tx)), Some(rx))
        }
        None => (None, None),
    };
    let auth_cfg = AuthConfig {
        access_ttl: Duration::from_secs(cfg.access_ttl_secs),
        refresh_ttl: Duration::from_secs(cfg.refresh_ttl_secs),
    };
    let auth = Auth::with_log(store.clone(), &secret, auth_cfg, account_log)?;
    let tls = if cfg.tls_on() {
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Tls::files(c.clone(), k.clone())?,
            _ => Tls::local(&cfg.certs_dir, local_names(addr, &cfg.tls_hostname))?,
        };
        Some(Arc::new(tls))
    } else {
        None
    };
    let host = if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!(
        "{}://{host}:{}",
        if tls.is_some() { "https" } else { "http" },
        addr.port()
    );
    let limits = Arc::new(Limits {
        proxies: TrustedProxies::new(cfg.trusted_proxy.clone()),
        upgrades: KeyedLimit::per_minute(cfg.upgrades_per_min),
        signups: KeyedLimit::per_minute(cfg.signups_per_min),
        logins: KeyedLimit::per_minute(cfg.logins_per_min),
        logins_per_user: KeyedLimit::per_minute(cfg.logins_per_user_per_min),
        logins_per_user_global: KeyedLimit::per_minute(
            cfg.logins_per_user_per_min
                .saturating_mul(LOGINS_PER_USER_GLOBAL_FACTOR),
        ),
        refreshes: KeyedLimit::per_minute(cfg.refreshes_per_min),
        conns: Arc::new(ConnCaps::new(
            cfg.max_connections,
            cfg.max_connections_per_address,
        )),
    });
    limits.spawn_pruner(LIMITER_PRUNE_EVERY);
    let head = store.last_cursor().context("reading the log heads")?;

    let metrics = Metrics::new();
    metrics.register_storage(store.decode_errors());
    let (events_tx, events_rx) = mpsc::channel(STORAGE_EVENTS_QUEUE);
    let events_tx_cluster = events_tx.clone();
    let (storage, storage_task) = StorageHandle::spawn(
        store.clone(),
        StorageWriterConfig {
            queue: cfg.storage_queue,
            data_dir: cfg.data_dir.clone(),
            min_free_bytes: cfg.min_free_mb.saturating_mul(1 << 20),
        },
        events_tx,
        metrics.clone(),
    );
    // Cluster mode: what other nodes' sessions did, for the hub.
    let (live_tx, live_rx) = mpsc::channel(LIVE_QUEUE);
    // Cluster mode: other nodes' users per room, for the hub's presence.
    let (peers_tx, peers_rx) = mpsc::channel(PEERS_QUEUE);
    // Cluster mode: appends, acks, read positions and first joins go to the
    // replicated log instead of the writer (which still watches the disk), and come back applied.
    let (storage, cluster) = match cluster_flags(&cfg, &url)? {
        None => (storage, None),
        Some(ccfg) => {
            let (replicated, proposals) = storage.replicated(cfg.storage_queue);
            let accounts = account_rx.context("cluster mode without an account queue")?;
            let deps = ClusterDeps {
                store: store.clone(),
                events: events_tx_cluster.clone(),
                proposals,
                accounts,
                metrics: metrics.register_cluster(),
                live: live_tx,
                peers: peers_tx,
            };
            (replicated, Some(Cluster::start(ccfg, deps).await?))
        }
    };
    drop(events_tx_cluster);
    let cluster_view = cluster.as_ref().map(Cluster::view);
    let cluster_addr = cluster.as_ref().map(|c| c.addr);
    let (relay_tx, relay_rx) = mpsc::channel(LIVE_QUEUE);
    let hub_cfg = HubConfig {
        metrics: metrics.clone(),
        max_sessions_per_user: cfg.max_sessions_per_user,
        queue: cfg.hub_queue,
        replicated: cluster.is_some(),
        relay: cluster.is_some().then_some(relay_tx),
        presence: cluster_view.clone().map(|v| {
            let sink: crate::hub::PresenceSink =
                Arc::new(move |room, users| v.local_users(room, users));
            sink
        }),
    };
    let storage_health = storage.health().clone();
    let (hub, hub_task) = HubHandle::spawn(hub_cfg, head, storage.clone(), events_rx);
    let hub_for_stop = hub.clone();
    if let Some(view) = &cluster_view {
        tokio::spawn(close_when_not_serving(view.readiness(), hub.clone()));
        tokio::spawn(live::to_peers(relay_rx, view.clone()));
        tokio::spawn(live::from_peers(live_rx, hub.clone()));
        tokio::spawn(live::move_users(view.clone(), hub.clone()));
        tokio::spawn(live::presence_from_peers(peers_rx, hub.clone()));
    }

    let sessions_stop = CancellationToken::new();
    let sessions = SessionCtx {
        metrics: metrics.clone(),
        hub: hub.clone(),
        store: store.clone(),
        storage,
        cfg: Arc::new(SessionConfig {
            max_frame: cfg.max_frame,
            msgs_per_sec: cfg.msgs_per_sec,
            burst: cfg.burst,
            queue: cfg.session_queue,
            max_rooms: cfg.max_rooms_per_connection,
            ping_interval: cfg.ping_interval(),
            idle_timeout: cfg.idle_timeout(),
            replicated: cluster.is_some(),
        }),
        node: cfg.node_id.clone().into(),
        shutdown: sessions_stop.clone(),
    };
    let purge_stop = CancellationToken::new();
    let purge_task = purge::spawn(
        auth.clone(),
        metrics.clone(),
        Duration::from_secs(cfg.refresh_purge_secs),
        purge_stop.clone(),
    );
    let tracker = TaskTracker::new();
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        auth,
        store,
        hub,
        sessions,
        tracker: tracker.clone(),
        origins: Arc::new(Origins {
            scheme: tls.as_ref().map(|_| "https"),
            allowed: cfg.allowed_origin.clone(),
            peers: cluster_view.clone(),
        }),
        draining: draining.clone(),
        web_dir: cfg.web_dir.clone(),
        limits,
        tls: tls.is_some(),
        admin_token: cfg.admin_token.as_deref().map(Arc::from),
        metrics_on_main: cfg.metrics_listen.is_none(),
        metrics_token: cfg.metrics_token.as_deref().map(Arc::from),
        hosts: Arc::new(hosts(&cfg, addr, tls.as_deref())),
        cluster: cluster_view.clone(),
    };
    let http_stop = CancellationToken::new();
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding --metrics-listen {a}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let edge = Edge {
        request_timeout: cfg.request_timeout(),
        caps: Arc::new(ConnCaps::new(
            cfg.max_http_connections,
            cfg.max_http_connections_per_address,
        )),
        proxies: TrustedProxies::new(cfg.trusted_proxy.clone()),
        metrics: metrics.clone(),
    };
    let metrics_task = metrics_listener.map(|l| {
        let edge = Edge {
            caps: Arc::new(ConnCaps::new(METRICS_HTTP_CAPS.0, METRICS_HTTP_CAPS.1)),
            ..edge.clone()
        };
        tokio::spawn(http::serve(
            l,
            http::metrics_routes(state.clone()),
            None,
            http_stop.clone(),
            edge,
        ))
    });
    let http_task = tokio::spawn(http::serve(
        listener,
        http::routes(state),
        tls.clone(),
        http_stop.clone(),
        edge,
    ));

    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (stop, health, hub) = (stop.clone(), storage_health.clone(), hub_for_stop);
        async move {
            let failed = tokio::select! {
                // Failure first: `main` cancels `stop` as soon as it sees the
                // failure, so both may be ready here, and the exit status
                // must still say storage failed.
                biased;
                reason = health.failed() => Some(reason),
                _ = stop.cancelled() => None,
            };
            if let Some(c) = &cluster {
                c.drain().await;
            }
            match &failed {
                None => {
                    tracing::info!("shutting down: draining sessions and the write-ahead queue")
                }
                Some(e) => {
                    tracing::error!(
                        error = %e,
                        "storage failed; stopping so sled can recover on restart; free disk space and start hubbub again"
                    );
                    draining.store(true, Ordering::SeqCst);
                    tell_senders(&hub).await;
                }
            }
            draining.store(true, Ordering::SeqCst);
            http_stop.cancel();
            sessions_stop.cancel();
            purge_stop.cancel();
            tracker.close();
            if tokio::time::timeout(SESSION_GRACE, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("some sessions had not closed after the grace period");
            }
            // Before the store's last users go: a purge holds it while it runs.
            if let Err(e) = purge_task.await {
                tracing::warn!(error = %e, "refresh-token purge task failed");
            }
            hub_task.shutdown().await;
            storage_task.shutdown().await;
            http_task.await.context("http task")?;
            if let Some(t) = metrics_task {
                t.await.context("metrics task")?;
            }
            if let Some(c) = cluster {
                c.shutdown().await;
            }
            tracing::info!("shutdown complete");
            match failed {
                None => Ok(()),
                Some(e) => Err(StorageFailed(e).into()),
            }
        }
    });
    Ok(Running {
        storage: storage_health,
        metrics_addr,
        cluster_addr,
        cluster: cluster_view,
        addr,
        url,
        tls,
        stop,
        task,
    })
}

/// Cluster mode: notes between the hub and the other nodes (kicks, typing)
/// waiting either way. Full → dropped (see `HubConfig::relay`, `live::Inbox`).
const LIVE_QUEUE: usize = 1024;
/// Cluster mode: other nodes' presence waiting for the hub. Full → the
/// cluster's reader waits (nothing is dropped; the hub never waits on it).
const PEERS_QUEUE: usize = 1024;

/// Cluster mode: when this node stops serving (no majority for a few
/// seconds), its sessions are closed with 1001 so that their clients
/// reconnect to a node that serves, and resume with `since`. Ends with the hub.
async fn close_when_not_serving(mut ready: tokio::sync::watch::Receiver<bool>, hub: HubHandle) {
    let mut was = *ready.borrow();
    while ready.changed().await.is_ok() {
        let now = *ready.borrow();
        if was && !now {
            tracing::warn!("no cluster majority: closing every session (1001)");
            if hub.close_all().await.is_err() {
                return;
            }
        }
        was = now;
    }
}

/// Cluster mode (`--cluster-listen`): the cluster's configuration. `None`
/// without it: then nothing of the cluster runs.
fn cluster_flags(cfg: &Config, url: &str) -> anyhow::Result<Option<ClusterConfig>> {
    let (Some(listen), Some(secret)) = (cfg.cluster_listen, cfg.cluster_secret()?) else {
        return Ok(None);
    };
    Ok(Some(ClusterConfig {
        node_id: cfg.node_id.clone(),
        listen,
        advertise: cfg.cluster_advertise,
        seeds: cfg.seeds.clone(),
        secret,
        url: cfg
            .advertise_url
            .clone()
            .map_or_else(|| url.to_owned(), |u| u.trim_end_matches('/').to_owned()),
        bootstrap_expect: cfg.bootstrap_expect,
        data_dir: cfg.data_dir.clone(),
        snapshot_every: cfg.snapshot_every,
        ring_exclude: cfg.ring_exclude.clone(),
    }))
}

/// The Host allow-list: loopback, the listen address, the configured names,
/// and the names of the served certificate (followed across reloads).
fn hosts(cfg: &Config, addr: SocketAddr, tls: Option<&Tls>) -> Hosts {
    let configured = cfg
        .tls_hostname
        .iter()
        .chain(&cfg.public_host)
        .chain(&cfg.allowed_origin)
        .cloned();
    let hosts = Hosts::new(addr.ip(), configured);
    match tls {
        Some(t) => hosts.with_served(t.served_names()),
        None => hosts,
    }
}

/// After storage failed: waits until the hub has handled the failed batch (it
/// takes storage events before commands, so a ping answered means the senders'
/// `unavailable` errors are queued), then gives sessions a moment to write them
/// before they are closed. Best effort: a sender that misses it resends anyway.
async fn tell_senders(hub: &HubHandle) {
    let _ = tokio::time::timeout(FAILED_NOTICE_GRACE, hub.ping()).await;
    tokio::time::sleep(FAILED_NOTICE_GRACE).await;
}

/// Raises the open-files limit (every connection is a descriptor, and the
/// usual soft default of 1024 is far below the connection caps) and warns
/// when even the hard limit is below what the caps allow.
fn check_fd_limit(cfg: &Config) {
    let need = (cfg.max_connections as u64)
        .saturating_add(cfg.max_http_connections as u64)
        .saturating_add(FD_HEADROOM);
    match raise_nofile_limit() {
        Ok(limit) if limit < need => tracing::warn!(
            limit,
            need,
            "the open-files limit (ulimit -n, hard) is below --max-connections + \
             --max-http-connections + headroom: raise it or lower the caps"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

/// Caps glibc's malloc arenas (`--malloc-arenas`, 0 = leave glibc's
/// default); false if the allocator refused (or is not glibc). Process-wide,
/// and only in effect when called before a second thread allocates: glibc
/// fixes the limit when it first makes an extra arena, so main calls it
/// before the runtime starts, and logs the answer once logging is up. With
/// glibc's default (8 per core) RSS after 1 M stored messages was 159–193 MB,
/// with 2 arenas 142–163 MB; the same at 5 M (docs/BENCHMARKS.md, "History
/// growth").
pub fn limit_malloc_arenas(arenas: u32) -> bool {
    if arenas == 0 {
        return true;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator tuning value; it returns 0 on failure.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int) } == 1;
    #[cfg(not(target_env = "gnu"))]
    let ok = false;
    ok
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Opens the database. A restart right after a stop may find the file lock
/// still held for a moment (the old process, or tasks of an in-process server,
/// still letting go), so a lock error is retried for up to two seconds.
async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let path = cfg.data_dir.join("db");
    let mut tries = 0;
    loop {
        match Store::open(&path, cfg.cache_mb << 20) {
            Ok(s) => return Ok(s),
            Err(e) if tries < 20 && e.is_lock_held() => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).context(
                    "opening the database (is another hubbub using this data directory?)",
                );
            }
        }
    }
}

/// Runs until `shutdown` resolves or storage fails, then shuts down in order.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(cfg).await?;
    running.announce();
    tokio::select! {
        _ = shutdown => {}
        _ = running.storage_failed() => {}
    }
    running.shutdown().await
}
