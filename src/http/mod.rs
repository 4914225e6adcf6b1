//! The HTTP edge: the only module that imports warp. Routes, the WebSocket
//! upgrade, static files, health. Everything a client can get wrong here is
//! answered with a JSON error body, never an internal detail.

// Handlers return a ready `Response` as their error: clearer than a rejection
// type per failure, and nothing here is on a hot path.
#![allow(clippy::result_large_err)]

mod api;
pub mod client_ip;
mod cluster;
mod conn;
pub mod guard;
mod policy;
pub mod reply;
pub mod serve;
mod web;
mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::auth::Auth;
use crate::hub::HubHandle;
use crate::protocol::ErrorCode;
use crate::session::SessionCtx;
use crate::storage::{StorageState, Store};

/// Largest JSON body accepted on `/api/*`.
const MAX_BODY: u64 = policy::MAX_API_BODY;
/// `/readyz` fails when the hub takes longer than this to answer.
const HUB_PING_TIMEOUT: Duration = Duration::from_millis(100);

pub use policy::{Hosts, Origins};

#[derive(Clone)]
pub struct AppState {
    pub auth: Auth,
    pub store: Store,
    pub hub: HubHandle,
    pub sessions: SessionCtx,
    pub tracker: TaskTracker,
    pub origins: Arc<Origins>,
    pub draining: Arc<AtomicBool>,
    /// `None`: the files embedded at build time.
    pub web_dir: Option<PathBuf>,
    pub limits: Arc<guard::Limits>,
    /// Serving TLS: adds `Strict-Transport-Security`.
    pub tls: bool,
    pub admin_token: Option<Arc<str>>,
    /// Serve `/metrics` on the main port (no `--metrics-listen`).
    pub metrics_on_main: bool,
    /// `--metrics-token`: `/metrics` wants it as a bearer token.
    pub metrics_token: Option<Arc<str>>,
    /// The `Host` values the main port answers to.
    pub hosts: Arc<Hosts>,
    /// Cluster mode's membership and readiness; `None` for a single node.
    pub cluster: Option<crate::cluster::ClusterView>,
}

fn with_state(state: AppState) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

fn body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes())
}

/// The client's limiter key (see `client_ip`): from the peer address the
/// accept loop attached, and the forwarding headers when the peer is a
/// trusted proxy.
fn client_key(
    limits: Arc<guard::Limits>,
) -> impl Filter<Extract = (IpAddr,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::headers_cloned())
        .map(move |p: Option<PeerAddr>, h: warp::http::HeaderMap| {
            let peer = p.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
            limits.client_key(peer, &h)
        })
}

/// Every route, boxed, with rejections turned into JSON errors and the
/// security headers, CORS and CSRF policy of `policy.rs` applied.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let policy = Arc::new(policy::Policy {
        hosts: state.hosts.clone(),
        origins: state.origins.clone(),
        tls: state.tls,
        metrics: state.sessions.metrics.clone(),
    });
    let inner = inner_routes(state);
    policy::wrap(policy, inner)
}

/// `GET`, and `HEAD` answered like it (hyper sends the head, with the
/// length the body would have, and drops the body).
fn get() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

fn inner_routes(state: AppState) -> BoxedFilter<(Response,)> {
    let s = || with_state(state.clone());
    let headers = || warp::header::headers_cloned();
    let client = || client_key(state.limits.clone());
    let auth = warp::path("api").and(warp::path("auth"));
    let signup = auth
        .and(warp::path("signup"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(client())
        .and(body())
        .then(api::signup);
    let login = auth
        .and(warp::path("login"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(client())
        .and(body())
        .then(api::login);
    let refresh = auth
        .and(warp::path("refresh"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(client())
        .and(headers())
        .then(api::refresh);
    let logout = auth
        .and(warp::path("logout"))
        .and(warp::path::end())
        .and(warp::post())
        .and(s())
        .and(headers())
        .then(api::logout);
    let me = warp::path!("api" / "me")
        .and(get())
        .and(s())
        .and(headers())
        .then(api::me);
    let history = warp::path!("api" / "rooms" / String / "messages")
        .and(get())
        .and(warp::query::<HashMap<String, String>>())
        .and(s())
        .and(headers())
        .then(api::history);
    let rooms = warp::path!("api" / "rooms")
        .and(get())
        .and(s())
        .and(headers())
        .then(api::rooms);
    // Only GET: a HEAD cannot upgrade.
    let ws = warp::path!("ws")
        .and(warp::get())
        .and(client())
        .and(warp::query::<HashMap<String, String>>())
        .and(headers())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(s())
        .then(ws::upgrade);
    let healthz = warp::path!("healthz")
        .and(get())
        .map(|| reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let readyz = warp::path!("readyz").and(get()).and(s()).then(readyz);
    let on_main = state.metrics_on_main;
    let metrics = warp::path!("metrics")
        .and(get())
        .and(s())
        .and(headers())
        .map(move |st: AppState, h: warp::http::HeaderMap| {
            if on_main {
                metrics_reply(&st, &h)
            } else {
                reply::error(ErrorCode::NotFound, "no such route")
            }
        });
    let admin_users = warp::path!("api" / "admin" / "users")
        .and(get())
        .and(s())
        .and(headers())
        .then(api::admin_users);
    let admin_set = warp::path!("api" / "admin" / "users" / String / String)
        .and(warp::post())
        .and(s())
        .and(headers())
        .then(api::admin_set_disabled);
    let admin_cluster = warp::path!("api" / "admin" / "cluster")
        .and(get())
        .and(s())
        .and(headers())
        .then(cluster::admin);
    let cluster_remove = warp::path!("api" / "admin" / "cluster" / "remove" / String)
        .and(warp::post())
        .and(s())
        .and(headers())
        .then(cluster::remove);
    let cluster_nodes = warp::path!("api" / "cluster" / "nodes")
        .and(get())
        .and(s())
        .and(headers())
        .then(cluster::nodes);
    let cluster_route = warp::path!("api" / "cluster" / "route")
        .and(get())
        .and(s())
        .and(headers())
        .then(cluster::route);
    let web = match state.web_dir.clone() {
        Some(dir) => get().and(web::from_dir(dir)).boxed(),
        None => get()
            .and(warp::path::full())
            .and_then(|p: warp::path::FullPath| async move {
                web::embedded(p.as_str()).ok_or_else(warp::reject::not_found)
            })
            .boxed(),
    };

    signup
        .or(login)
        .unify()
        .or(refresh)
        .unify()
        .or(logout)
        .unify()
        .or(me)
        .unify()
        .or(history)
        .unify()
        .or(rooms)
        .unify()
        .or(ws)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(admin_users)
        .unify()
        .or(admin_set)
        .unify()
        .or(admin_cluster)
        .unify()
        .or(cluster_nodes)
        .unify()
        .or(cluster_route)
        .unify()
        .or(cluster_remove)
        .unify()
        .or(web)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::reply::with::header(
            "x-content-type-options",
            "nosniff",
        ))
        .map(Reply::into_response)
        .boxed()
}

/// The Prometheus exposition, with the queue depths sampled now.
fn render_metrics(state: &AppState) -> Response {
    let m = &state.sessions.metrics;
    m.storage_queue_depth
        .set(state.sessions.storage.depth() as i64);
    m.hub_queue_depth.set(state.hub.depth() as i64);
    let mut r = m.render().into_response();
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `/metrics`, behind the bearer check when `--metrics-token` is set.
fn metrics_reply(state: &AppState, headers: &warp::http::HeaderMap) -> Response {
    if let Some(expected) = state.metrics_token.as_deref() {
        let given = headers
            .get(warp::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| api::constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            let mut r = reply::error(ErrorCode::Unauthorized, "metrics token required");
            r.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    render_metrics(state)
}

/// Routes of the separate `--metrics-listen` port: `/metrics` and `/healthz` only.
pub fn metrics_routes(state: AppState) -> BoxedFilter<(Response,)> {
    let metrics = warp::path!("metrics")
        .and(get())
        .and(warp::header::headers_cloned())
        .map(move |h: warp::http::HeaderMap| metrics_reply(&state, &h));
    let healthz = warp::path!("healthz")
        .and(get())
        .map(|| reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    metrics.or(healthz).unify().recover(recover).unify().boxed()
}

async fn readyz(state: AppState) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return reply::error(ErrorCode::Unavailable, "draining");
    }
    if state.cluster.as_ref().is_some_and(|c| !c.is_ready()) {
        return reply::error(ErrorCode::Unavailable, "cluster not formed yet");
    }
    // A node that refuses messages is not ready: a balancer sends users elsewhere.
    match state.sessions.storage.health().state() {
        StorageState::Ok => {}
        StorageState::Full => {
            return reply::error(
                ErrorCode::Unavailable,
                "storage full: free space under --min-free-mb",
            );
        }
        StorageState::Failed => {
            return reply::error(ErrorCode::Unavailable, "storage failed; stopping");
        }
    }
    match tokio::time::timeout(HUB_PING_TIMEOUT, state.hub.ping()).await {
        Ok(Ok(())) => reply::json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        _ => reply::error(ErrorCode::Unavailable, "hub not answering"),
    }
}

async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let resp = if r.is_not_found() {
        reply::error(ErrorCode::NotFound, "no such route")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        reply::error(ErrorCode::TooLarge, "request body too large")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        reply::error(ErrorCode::MethodNotAllowed, "method not allowed")
    } else if r.find::<warp::reject::InvalidQuery>().is_some()
        || r.find::<warp::reject::LengthRequired>().is_some()
    {
        reply::error(ErrorCode::BadRequest, "malformed request")
    } else {
        tracing::debug!(rejection = ?r, "unhandled rejection");
        reply::error(ErrorCode::BadRequest, "malformed request")
    };
    Ok(resp)
}

pub use conn::PeerAddr;
pub use serve::{Edge, serve};
