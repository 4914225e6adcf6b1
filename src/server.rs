//! The composition root: opens storage, starts the storage writer, the hub and
//! the HTTP edge, and shuts them down in order.
//!
//! Shutdown order: stop accepting → `/readyz` 503 → sessions close with 1001 →
//! the hub stops → the storage writer applies and flushes everything queued →
//! return. Every message that was broadcast is on disk when `run` returns.

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

use crate::auth::{Auth, AuthConfig, tokens};
use crate::config::Config;
use crate::http::guard::{ConnCaps, KeyedLimit, Limits};
use crate::http::{self, AppState, Origins};
use crate::hub::{HubConfig, HubHandle};
use crate::metrics::Metrics;
use crate::session::{SessionConfig, SessionCtx};
use crate::storage::{StorageHandle, StorageWriterConfig, Store};
use crate::tls::{Tls, local_names};

/// Storage → hub events (durable ids, receipts). Full → the writer waits: the
/// hub drains it first in every turn, and never waits on storage itself.
const STORAGE_EVENTS_QUEUE: usize = 1024;
/// Keyed rate limiters forget recovered keys this often.
const LIMITER_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Sessions get this long to send their Close frames at shutdown.
const SESSION_GRACE: Duration = Duration::from_secs(5);

/// A started server. `shutdown` runs the ordered shutdown and waits for it.
pub struct Running {
    pub addr: SocketAddr,
    /// `https://…` or `http://…`, for people and scripts.
    pub url: String,
    pub tls: Option<Arc<Tls>>,
    /// The `--metrics-listen` address, when metrics have a port of their own.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
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
        tracing::info!(url = %self.url, "listening");
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?
    }

    /// Waits until the server stops on its own (after `stop` fires elsewhere).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Binds, starts everything, and returns once the server accepts connections.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    cfg.validate()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr().context("local address")?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = open_store(&cfg).await?;
    let secret = match &cfg.jwt_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => tokens::load_or_create_secret(&cfg.data_dir.join("jwt_secret"))?,
    };
    let auth_cfg = AuthConfig {
        access_ttl: Duration::from_secs(cfg.access_ttl_secs),
        refresh_ttl: Duration::from_secs(cfg.refresh_ttl_secs),
    };
    let auth = Auth::new(store.clone(), &secret, auth_cfg)?;
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
        upgrades: KeyedLimit::per_minute(cfg.upgrades_per_min),
        signups: KeyedLimit::per_minute(cfg.signups_per_min),
        logins: KeyedLimit::per_minute(cfg.logins_per_min),
        logins_per_user: KeyedLimit::per_minute(cfg.logins_per_user_per_min),
        conns: ConnCaps::new(cfg.max_connections, cfg.max_connections_per_address),
    });
    limits.spawn_pruner(LIMITER_PRUNE_EVERY);
    let head = store.last_cursor().context("reading the log heads")?;

    let metrics = Metrics::new();
    metrics.register_storage(store.decode_errors());
    let (events_tx, events_rx) = mpsc::channel(STORAGE_EVENTS_QUEUE);
    let (storage, storage_task) = StorageHandle::spawn(
        store.clone(),
        StorageWriterConfig {
            queue: cfg.storage_queue,
        },
        events_tx,
        metrics.clone(),
    );
    let hub_cfg = HubConfig {
        metrics: metrics.clone(),
        node: cfg.node_id.clone(),
        max_sessions_per_user: cfg.max_sessions_per_user,
        queue: cfg.hub_queue,
    };
    let (hub, hub_task) = HubHandle::spawn(hub_cfg, head, storage.clone(), events_rx);

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
            ping_interval: cfg.ping_interval(),
            idle_timeout: cfg.idle_timeout(),
        }),
        node: cfg.node_id.clone().into(),
        shutdown: sessions_stop.clone(),
    };
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
        }),
        draining: draining.clone(),
        web_dir: cfg.web_dir.clone(),
        limits,
        tls: tls.is_some(),
        admin_token: cfg.admin_token.as_deref().map(Arc::from),
        metrics_on_main: cfg.metrics_listen.is_none(),
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
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(http::serve(
            l,
            http::metrics_routes(state.clone()),
            None,
            http_stop.clone(),
        ))
    });
    let http_task = tokio::spawn(http::serve(
        listener,
        http::routes(state),
        tls.clone(),
        http_stop.clone(),
    ));

    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tracing::info!("shutting down: draining sessions and the write-ahead queue");
            draining.store(true, Ordering::SeqCst);
            http_stop.cancel();
            sessions_stop.cancel();
            tracker.close();
            if tokio::time::timeout(SESSION_GRACE, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("some sessions had not closed after the grace period");
            }
            hub_task.shutdown().await;
            storage_task.shutdown().await;
            http_task.await.context("http task")?;
            if let Some(t) = metrics_task {
                t.await.context("metrics task")?;
            }
            tracing::info!("shutdown complete");
            Ok(())
        }
    });
    Ok(Running {
        metrics_addr,
        addr,
        url,
        tls,
        stop,
        task,
    })
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

/// Runs until `shutdown` resolves, then shuts down in order.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(cfg).await?;
    running.announce();
    shutdown.await;
    running.shutdown().await
}
