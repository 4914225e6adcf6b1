//! The accept loop: our own, because warp 0.4 has no TLS and its graceful
//! shutdown does not know about upgraded sockets. Each connection is served by
//! hyper with upgrades enabled; the peer address rides along as an extension.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// The client's address, readable in filters with `warp::ext::optional::<PeerAddr>()`.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// In-flight HTTP requests get this long to finish at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Serves `routes` until `stop` is cancelled, then lets in-flight requests finish.
/// Upgraded WebSockets are not tracked here: sessions close themselves (1001).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let svc = TowerToHyperService::new(warp::service(routes));
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let svc = svc.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                hyper::service::Service::call(&svc, req)
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still running after the drain grace period");
    }
}
