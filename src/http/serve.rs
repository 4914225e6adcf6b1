//! The accept loop: our own, because warp 0.4 has no TLS and its graceful
//! shutdown does not know about upgraded sockets. Each connection is served by
//! hyper (HTTP/1.1, upgrades on) over TLS or plain TCP; the peer address rides
//! along as a request extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::tls::Tls;

/// The client's address, readable in filters with `warp::ext::optional::<PeerAddr>()`.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// In-flight HTTP requests get this long to finish at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// A TLS handshake, or a request's headers, that take longer are dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Sent to a plain-HTTP request on the TLS port instead of a hang.
const PLAIN_ON_TLS_PORT_BODY: &str = r#"{"error":{"code":"bad_request","message":"this port speaks HTTPS: use https:// and wss://"}}"#;

/// Serves `routes` until `stop` is cancelled, then lets in-flight requests finish.
/// Upgraded WebSockets are not tracked here: sessions close themselves (1001).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let svc = TowerToHyperService::new(warp::service(routes));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
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
        let (svc, builder, watcher, tls) = (
            svc.clone(),
            builder.clone(),
            graceful.watcher(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    hyper::service::Service::call(&svc, req)
                },
            );
            let result = match tls {
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .into_owned(),
                        )
                        .await
                }
                Some(tls) => match tls_handshake(tcp, &tls).await {
                    Some(s) => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                    .into_owned(),
                            )
                            .await
                    }
                    None => return,
                },
            };
            if let Err(e) = result {
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

/// Completes the TLS handshake within the timeout. A client speaking plain
/// HTTP gets a clear 400 instead of a hang.
async fn tls_handshake(
    mut tcp: TcpStream,
    tls: &Tls,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_ON_TLS_PORT_BODY}",
                PLAIN_ON_TLS_PORT_BODY.len()
            );
            let _ =
                tokio::time::timeout(Duration::from_secs(1), tcp.write_all(resp.as_bytes())).await;
            let _ = tcp.shutdown().await;
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
