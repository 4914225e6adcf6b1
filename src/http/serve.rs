//! The accept loop: our own, because warp 0.4 has no TLS and its graceful
//! shutdown does not know about upgraded sockets. Each accepted connection
//! takes a place under the HTTP connection caps (or is closed at once) and is
//! served by `conn.rs` under its time limits; the peer address rides along as
//! a request extension. Running out of file descriptors pauses accepting with
//! a growing back-off instead of spinning.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::client_ip::{TrustedProxies, limit_key};
use super::conn::{HttpSlot, Routes, Shared, serve_conn};
use super::guard::ConnCaps;
use crate::metrics::{AcceptError, Metrics};
use crate::tls::Tls;

/// In-flight HTTP requests get this long to finish at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// The first pause after an accept failed for lack of descriptors; it doubles
/// up to `FD_BACKOFF_MAX` while the failures go on. Connections close on their
/// own time limits meanwhile, so waiting frees descriptors; retrying at once
/// only burns CPU and fills the log.
const FD_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const FD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After any other accept error (e.g. a connection reset before it was taken).
const OTHER_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The limits of one listener's HTTP connections.
#[derive(Clone)]
pub struct Edge {
    /// `--request-timeout-secs`: head phase, each body, idle keep-alive.
    pub request_timeout: Duration,
    /// Open HTTP connections not upgraded, in total and per address.
    pub caps: Arc<ConnCaps>,
    /// Connections from these count in the total cap only.
    pub proxies: TrustedProxies,
    pub metrics: Arc<Metrics>,
}

/// Serves `routes` until `stop` is cancelled, then lets in-flight requests finish.
/// Upgraded WebSockets are not tracked here: sessions close themselves (1001).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
    edge: Edge,
) {
    let svc = TowerToHyperService::new(warp::service(routes));
    let routes: Routes = Box::new(move |req| {
        let fut = hyper::service::Service::call(&svc, req);
        Box::pin(async move {
            match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    });
    let shared = Arc::new(Shared {
        routes,
        tls,
        request_timeout: edge.request_timeout,
        metrics: edge.metrics.clone(),
        stop: stop.clone(),
        kill: CancellationToken::new(),
    });
    let conns = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    let pause = backoff.failed(&e, &edge.metrics);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        backoff.accepted();
        // The clock starts at accept, before the TLS handshake.
        let deadline = Instant::now() + edge.request_timeout;
        // Keyed like every per-address limit (IPv6 by /64); a trusted proxy
        // speaks for many clients, so only the total cap applies to it.
        let ip = peer.ip().to_canonical();
        let acquired = if edge.proxies.trusts(ip) {
            edge.caps.try_acquire_total()
        } else {
            edge.caps.try_acquire(limit_key(ip))
        };
        let slot = match acquired {
            Ok(s) => HttpSlot::new(s, edge.metrics.http_connections.clone()),
            Err(hit) => {
                // Closed at once: no handshake, no bytes, nothing to wait for.
                edge.metrics.http_refused(hit).inc();
                tracing::debug!(%peer, cap = hit.label(), "HTTP connection over a cap closed");
                drop(tcp);
                continue;
            }
        };
        conns.spawn(serve_conn(tcp, peer, deadline, shared.clone(), slot));
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(DRAIN_GRACE, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still running after the drain grace period");
        shared.kill.cancel();
    }
}

/// Out of descriptors (or kernel memory for sockets): waiting helps.
fn is_fd_limit(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One stretch of accept failures for lack of descriptors: a warning when it
/// starts, a note with the count when it ends, a pause that grows in between.
#[derive(Default)]
struct AcceptBackoff {
    failures: u64,
    since: Option<Instant>,
    pause: Duration,
}

impl AcceptBackoff {
    /// Counts the error and returns how long to pause before the next accept.
    fn failed(&mut self, e: &io::Error, metrics: &Metrics) -> Duration {
        if !is_fd_limit(e) {
            metrics.accept_error(AcceptError::Other).inc();
            tracing::debug!(error = %e, "accept failed");
            return OTHER_ERROR_PAUSE;
        }
        metrics.accept_error(AcceptError::FdLimit).inc();
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            self.pause = FD_BACKOFF_FIRST;
            tracing::warn!(
                error = %e,
                "accept failed: out of file descriptors; pausing accepts until connections close"
            );
        } else {
            self.pause = (self.pause * 2).min(FD_BACKOFF_MAX);
        }
        self.pause
    }

    /// An accept succeeded: ends a stretch of failures, if one was running.
    fn accepted(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                failures = self.failures,
                secs = since.elapsed().as_secs_f64(),
                "accepting connections again"
            );
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fd_backoff_grows_to_a_ceiling_and_resets() {
        let m = Metrics::new();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..6)
            .map(|_| b.failed(&emfile, &m).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        b.accepted();
        assert_eq!(b.failed(&emfile, &m), FD_BACKOFF_FIRST);
        let reset = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(b.failed(&reset, &m), OTHER_ERROR_PAUSE);
        let text = m.render();
        assert!(
            text.contains("hubbub_accept_errors_total{kind=\"fd_limit\"} 7"),
            "{text}"
        );
        assert!(text.contains("hubbub_accept_errors_total{kind=\"other\"} 1"));
    }
}
