//! One HTTP connection, from accept to close or upgrade, under one clock:
//! the TLS handshake, the first byte and the first request head must all be
//! in by `deadline` (accept + `--request-timeout-secs`); each request body gets
//! the same span from its head; an idle keep-alive connection gets it for its
//! next head (hyper's `header_read_timeout`, which restarts when it goes idle).
//! Only WebSockets may stay open longer, and they have their own idle limit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::IntGauge;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::guard::ConnSlot;
use super::reply;
use crate::metrics::{Metrics, TimeoutPhase};
use crate::protocol::ErrorCode;
use crate::tls::Tls;
use crate::tls::stream::TlsStream;

/// The client's address, readable in filters with `warp::ext::optional::<PeerAddr>()`:
/// each connection puts it into every request it serves.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Sent to a plain-HTTP request on the TLS port instead of a hang.
const PLAIN_ON_TLS_PORT_BODY: &str = r#"{"error":{"code":"bad_request","message":"this port speaks HTTPS: use https:// and wss://"}}"#;
/// How long the 400 for plain HTTP on the TLS port may take to write.
const PLAIN_ON_TLS_WRITE: Duration = Duration::from_secs(1);

/// The warp routes as one function (warp's service type cannot be named).
pub(super) type Routes = Box<
    dyn Fn(hyper::Request<TimedBody>) -> Pin<Box<dyn Future<Output = Response> + Send>>
        + Send
        + Sync,
>;

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub routes: Routes,
    pub tls: Option<Arc<Tls>>,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Graceful shutdown: finish the request in flight, take no new one.
    pub stop: CancellationToken,
    /// The drain grace is over: drop the connection as it is.
    pub kill: CancellationToken,
}

/// A place under the HTTP connection caps, shown in `hubbub_http_connections`.
/// Dropped when the connection closes or has been handed to a WebSocket
/// session (which holds a WebSocket slot of its own by then).
pub(super) struct HttpSlot {
    _slot: ConnSlot,
    gauge: IntGauge,
}

impl HttpSlot {
    pub fn new(slot: ConnSlot, gauge: IntGauge) -> Self {
        gauge.inc();
        HttpSlot { _slot: slot, gauge }
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Serves one accepted connection until it closes, upgrades or runs out of time.
pub(super) async fn serve_conn(
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    shared: Arc<Shared>,
    slot: HttpSlot,
) {
    let _slot = slot;
    let _ = tcp.set_nodelay(true);
    match &shared.tls {
        None => run_http(TokioIo::new(tcp), peer, deadline, &shared).await,
        Some(tls) => {
            let stream = tokio::select! {
                s = tls_handshake(tcp, tls, deadline, &shared.metrics) => s,
                _ = shared.stop.cancelled() => None,
            };
            if let Some(s) = stream {
                run_http(TokioIo::new(s), peer, deadline, &shared).await;
            }
        }
    }
}

/// HTTP/1.1 with upgrades. HTTP/2 is not offered (ALPN says `http/1.1`), so no
/// version sniffing waits on the first bytes without a limit.
async fn run_http<I>(io: I, peer: SocketAddr, deadline: Instant, shared: &Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let head_seen = Arc::new(AtomicBool::new(false));
    let svc = {
        let (shared, head_seen) = (shared.clone(), head_seen.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            head_seen.store(true, Ordering::Relaxed);
            call_timed(shared.clone(), peer, req)
        })
    };
    let conn = http1(shared.request_timeout)
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::pin!(conn);
    // The whole head phase shares one deadline from accept; once the first
    // head is in, this never fires (hyper times later heads itself).
    let head_deadline = async {
        tokio::time::sleep_until(deadline).await;
        if head_seen.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(head_deadline);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        shared.metrics.http_timeout(TimeoutPhase::Head).inc();
                    }
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = &mut head_deadline => {
                shared.metrics.http_timeout(TimeoutPhase::Head).inc();
                tracing::debug!(%peer, "no request head within the request timeout");
                return;
            }
            _ = shared.stop.cancelled(), if !stopping => {
                // No request yet: nothing in flight to finish.
                if !head_seen.load(Ordering::Relaxed) {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.kill.cancelled() => return,
        }
    }
}

/// hyper's HTTP/1 server. Its `header_read_timeout` restarts whenever the
/// connection goes idle after a response, which limits idle keep-alives.
fn http1(request_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(request_timeout);
    builder
}

/// Calls the routes with a body that must arrive within the request timeout;
/// a body that does not is answered `408` and the connection closed.
async fn call_timed(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<Response, Infallible> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + shared.request_timeout;
    let mut req = req.map(|b| TimedBody::new(b, deadline, timed_out.clone()));
    req.extensions_mut().insert(PeerAddr(peer));
    let resp = (shared.routes)(req).await;
    if !timed_out.load(Ordering::Relaxed) {
        return Ok(resp);
    }
    shared.metrics.http_timeout(TimeoutPhase::Body).inc();
    tracing::debug!(%peer, "request body not received within the request timeout");
    let mut r = reply::error(
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(r)
}

/// The error a late body ends with (warp then rejects the request).
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the request timeout")]
struct BodyTimeout;

/// A request body that fails once `deadline` passes before its end.
pub(super) struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made on the first wait, so bodiless requests never start a timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl TimedBody {
    fn new(inner: Incoming, deadline: Instant, timed_out: Arc<AtomicBool>) -> Self {
        TimedBody {
            inner,
            deadline,
            timer: None,
            timed_out,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Completes the TLS handshake by `deadline`. A client speaking plain HTTP
/// gets a clear 400 instead of a hang.
async fn tls_handshake(
    mut tcp: TcpStream,
    tls: &Tls,
    deadline: Instant,
    metrics: &Metrics,
) -> Option<TlsStream> {
    let timed_out = || {
        metrics.http_timeout(TimeoutPhase::Head).inc();
        tracing::debug!("TLS handshake not done within the request timeout");
        None
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            let resp = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_ON_TLS_PORT_BODY}",
                PLAIN_ON_TLS_PORT_BODY.len()
            );
            let _ = tokio::time::timeout(PLAIN_ON_TLS_WRITE, tcp.write_all(resp.as_bytes())).await;
            let _ = tokio::time::timeout(PLAIN_ON_TLS_WRITE, tcp.shutdown()).await;
            return None;
        }
        Ok(_) => return None,
        Err(_) => return timed_out(),
    }
    match tokio::time::timeout_at(
        deadline,
        crate::tls::stream::accept(tcp, tls.config.clone()),
    )
    .await
    {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => timed_out(),
    }
}
