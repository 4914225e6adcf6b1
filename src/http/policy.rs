//! Browser-facing policy, applied around every route: which origins may use
//! the API and the WebSocket, CORS for the listed ones, a CSRF check on
//! state-changing requests, and security headers on every response.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::path::FullPath;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::reply;
use crate::metrics::{Metrics, Route, StatusClass};
use crate::protocol::ErrorCode;
use crate::tls::ServedNames;

/// The web UI's Content-Security-Policy: only our own scripts, styles and
/// sockets; no inline code, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Cluster mode: `CSP` with the peers' origins (and their WebSocket forms)
/// added to `connect-src`, so a page may move its socket to another node.
fn cluster_csp(peers: &[String]) -> Option<HeaderValue> {
    let mut connect = String::from("'self'");
    for p in peers {
        let ws = p
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| p.strip_prefix("http://").map(|r| format!("ws://{r}")))?;
        connect.push_str(&format!(" {p} {ws}"));
    }
    HeaderValue::from_str(&CSP.replace("connect-src 'self'", &format!("connect-src {connect}")))
        .ok()
}

/// Origins allowed to open a WebSocket or call the API from a browser: the
/// configured list (exact `scheme://host[:port]`), plus the server itself (an
/// `Origin` whose host:port equals the request's `Host`).
pub struct Origins {
    /// The scheme this server is reached by; `None` (TLS off, maybe behind a
    /// TLS proxy) accepts `http` and `https` for the server's own host.
    pub scheme: Option<&'static str>,
    pub allowed: Vec<String>,
    /// Cluster mode: every origin a peer has advertised (authenticated
    /// gossip), so a page loaded from one node may open its socket at another.
    pub peers: Option<crate::cluster::ClusterView>,
}

impl Origins {
    /// Listed with `--allowed-origin`: exact, case-insensitive, no prefix or substring matching.
    pub fn listed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
            || self
                .peers
                .as_ref()
                .is_some_and(|p| p.is_peer_origin(origin))
    }

    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.listed(origin) {
            return true;
        }
        match (host, origin.split_once("://")) {
            (Some(host), Some((scheme, rest))) => {
                let scheme_ok = match self.scheme {
                    Some(s) => scheme.eq_ignore_ascii_case(s),
                    None => {
                        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
                    }
                };
                scheme_ok && rest.eq_ignore_ascii_case(host)
            }
            _ => false,
        }
    }
}

/// The `Host` values this server answers to, against DNS rebinding: a page of
/// `evil.example` whose name is re-pointed at 127.0.0.1 reaches us with
/// `Host: evil.example`, and is refused. Allowed: `localhost`, loopback
/// addresses, the listen address, and the configured names (`--tls-hostname`,
/// `--public-host`, the hosts of `--allowed-origin`), and with TLS the names
/// of the certificate being served. Ports are not compared: the name is what
/// a rebinding attacker cannot forge.
pub struct Hosts {
    listen: IpAddr,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    served: Option<Arc<ServedNames>>,
}

impl Hosts {
    /// `names` may be bare hosts, `host:port`, `[v6]:port` or origin URLs.
    pub fn new(listen: IpAddr, names: impl IntoIterator<Item = String>) -> Self {
        let mut h = Hosts {
            listen,
            names: Vec::new(),
            ips: Vec::new(),
            served: None,
        };
        for n in names {
            let n = n.split_once("://").map_or(n.as_str(), |(_, rest)| rest);
            let n = n.split('/').next().unwrap_or_default();
            let bare = host_part(n).unwrap_or(n);
            let bare = bare.trim_start_matches("*.");
            match bare.parse::<IpAddr>() {
                Ok(ip) => h.ips.push(ip),
                Err(_) => h
                    .names
                    .push(bare.trim_end_matches('.').to_ascii_lowercase()),
            }
        }
        h
    }

    /// Also allows the names of the served certificate, as they are at each request.
    pub fn with_served(mut self, served: Arc<ServedNames>) -> Self {
        self.served = Some(served);
        self
    }

    /// Whether a request's `Host` header names this server.
    pub fn allows(&self, host_header: &str) -> bool {
        let Some(host) = host_part(host_header.trim()) else {
            return false;
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            // An address cannot be re-pointed by DNS. Listening on every
            // address, any of the machine's addresses may arrive here.
            return ip.is_loopback()
                || self.listen.is_unspecified()
                || ip == self.listen
                || self.ips.contains(&ip)
                || self.served.as_ref().is_some_and(|s| s.get().covers_ip(ip));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "localhost"
            || self.names.contains(&host)
            || self
                .served
                .as_ref()
                .is_some_and(|s| s.get().covers_name(&host))
    }
}

/// The host of `host[:port]` or `[v6addr][:port]`; `None` when malformed.
fn host_part(h: &str) -> Option<&str> {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = h.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)).then_some(ip);
    }
    let host = match h.split_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => h,
    };
    (!host.is_empty()).then_some(host)
}

pub struct Policy {
    pub hosts: Arc<Hosts>,
    pub origins: Arc<Origins>,
    pub tls: bool,
    pub metrics: Arc<Metrics>,
}

/// A fixed route name for the request metric (never the raw path: no
/// unbounded label values).
fn route_label(path: &str) -> Route {
    match path {
        "/api/auth/signup" => Route::Signup,
        "/api/auth/login" => Route::Login,
        "/api/auth/refresh" => Route::Refresh,
        "/api/auth/logout" => Route::Logout,
        "/api/me" => Route::Me,
        "/ws" => Route::Ws,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        p if p.starts_with("/api/rooms/") => Route::History,
        p if p.starts_with("/api/admin/") => Route::Admin,
        p if p.starts_with("/api/") => Route::ApiOther,
        _ => Route::Static,
    }
}

#[derive(Debug)]
struct CrossSite;
impl warp::reject::Reject for CrossSite {}

#[derive(Debug)]
struct BadHost;
impl warp::reject::Reject for BadHost {}

#[derive(Debug)]
struct TooLarge;
impl warp::reject::Reject for TooLarge {}

/// Largest request body on `/api/*` (the JSON endpoints read at most this).
pub const MAX_API_BODY: u64 = 16 * 1024;

fn is_api(path: &FullPath) -> bool {
    path.as_str().starts_with("/api/")
}

impl Policy {
    /// Answers a preflight. The origin, credentials and `Vary` headers are
    /// added by `decorate`, as on every API response to a listed origin.
    fn preflight(&self, origin: Option<String>) -> Response {
        match origin {
            Some(o) if self.origins.listed(&o) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("content-type, authorization"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                r
            }
            _ => reply::error(ErrorCode::Forbidden, "origin not allowed"),
        }
    }

    /// A state-changing API request from a page of another origin is refused
    /// before any handler runs (cookies are SameSite, this is the second lock).
    fn cross_site(
        &self,
        method: &warp::http::Method,
        path: &FullPath,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> bool {
        let changes_state = !matches!(*method, warp::http::Method::GET | warp::http::Method::HEAD);
        changes_state && is_api(path) && origin.is_some_and(|o| !self.origins.allows(o, host))
    }

    fn decorate(&self, mut r: Response, path: &FullPath, origin: Option<&str>) -> Response {
        self.metrics
            .http_request(
                route_label(path.as_str()),
                StatusClass::of(r.status().as_u16()),
            )
            .inc();
        let api = is_api(path);
        let h = r.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let csp = self
            .origins
            .peers
            .as_ref()
            .and_then(|p| cluster_csp(&p.peer_origins()))
            .unwrap_or(HeaderValue::from_static(CSP));
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
        if self.tls {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            );
        }
        if !api && !h.contains_key(header::CACHE_CONTROL) {
            // The web UI's files: revalidate, so a new deploy reaches open browsers.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        if api {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(o) = origin.filter(|o| self.origins.listed(o))
                && let Ok(v) = HeaderValue::from_str(o)
            {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        r
    }
}

/// Wraps `inner` (which never rejects) with preflight handling, the CSRF
/// check and the response headers.
pub fn wrap(policy: Arc<Policy>, inner: BoxedFilter<(Response,)>) -> BoxedFilter<(Response,)> {
    let origin = || warp::header::optional::<String>("origin");
    let p = policy.clone();
    let preflight = warp::options()
        .and(warp::path("api"))
        .and(origin())
        .map(move |o| p.preflight(o));
    let p = policy.clone();
    let csrf = warp::method()
        .and(warp::path::full())
        .and(origin())
        .and(warp::header::optional::<String>("host"))
        .and_then(move |m, path, o: Option<String>, host: Option<String>| {
            let blocked = p.cross_site(&m, &path, o.as_deref(), host.as_deref());
            async move {
                if blocked {
                    Err(warp::reject::custom(CrossSite))
                } else {
                    Ok(())
                }
            }
        })
        .untuple_one();
    // A declared body over the API limit is refused on every /api route,
    // also on those that never read a body.
    let body_limit = warp::path::full()
        .and(warp::header::optional::<u64>("content-length"))
        .and_then(|path: FullPath, len: Option<u64>| async move {
            if is_api(&path) && len.is_some_and(|l| l > MAX_API_BODY) {
                Err(warp::reject::custom(TooLarge))
            } else {
                Ok(())
            }
        })
        .untuple_one();
    // Checked before anything else: a request for another host is not ours.
    let p = policy.clone();
    let host = warp::header::optional::<String>("host")
        .and_then(move |h: Option<String>| {
            // No `Host` at all (HTTP/1.0 tools): browsers always send one,
            // so rebinding cannot arrive without it.
            let ok = h.as_deref().is_none_or(|h| p.hosts.allows(h));
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(BadHost))
                }
            }
        })
        .untuple_one();
    let guarded = host
        .and(preflight.or(body_limit.and(csrf).and(inner)).unify())
        .recover(|r: Rejection| async move {
            let resp = if r.find::<BadHost>().is_some() {
                reply::error(ErrorCode::BadRequest, "unknown host")
            } else if r.find::<CrossSite>().is_some() {
                reply::error(ErrorCode::Forbidden, "cross-site request refused")
            } else if r.find::<TooLarge>().is_some() {
                reply::error(ErrorCode::TooLarge, "request body too large")
            } else {
                reply::error(ErrorCode::NotFound, "no such route")
            };
            Ok::<_, Infallible>(resp)
        });
    warp::path::full()
        .and(origin())
        .and(guarded.unify())
        .map(move |path: FullPath, o: Option<String>, r: Response| {
            policy.decorate(r, &path, o.as_deref())
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_csp_lets_sockets_reach_peers_only() {
        let peers = [
            "https://127.0.0.1:8442".to_owned(),
            "http://10.0.0.2:80".to_owned(),
        ];
        let v = cluster_csp(&peers).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.contains(
            "connect-src 'self' https://127.0.0.1:8442 wss://127.0.0.1:8442 http://10.0.0.2:80 ws://10.0.0.2:80;"
        ), "{v}");
        assert!(v.contains("script-src 'self';"));
        assert!(cluster_csp(&["ftp://x".to_owned()]).is_none());
    }

    #[test]
    fn origin_matching_is_exact() {
        let o = Origins {
            scheme: Some("https"),
            allowed: vec!["https://chat.example.com".into()],
            peers: None,
        };
        assert!(o.allows("https://chat.example.com", None));
        assert!(o.allows("https://chat.example.com/", None));
        assert!(!o.allows("https://chat.example.com.evil.net", None));
        assert!(!o.allows("https://evil.net/https://chat.example.com", None));
        assert!(!o.allows("http://chat.example.com", None));
        assert!(o.allows("https://127.0.0.1:8443", Some("127.0.0.1:8443")));
        assert!(!o.allows("http://127.0.0.1:8443", Some("127.0.0.1:8443")));
        assert!(!o.allows("https://127.0.0.1:8444", Some("127.0.0.1:8443")));
        assert!(!o.allows("null", Some("127.0.0.1:8443")));
        let plain = Origins {
            scheme: None,
            allowed: vec![],
            peers: None,
        };
        assert!(plain.allows("https://chat.example.com", Some("chat.example.com")));
        assert!(!plain.allows("ftp://chat.example.com", Some("chat.example.com")));
    }

    #[test]
    fn hosts_allow_loopback_listen_and_configured_names_only() {
        let h = Hosts::new(
            "10.0.0.5".parse().unwrap(),
            [
                "chat.example.com".to_owned(),
                "https://app.example.net:8443".to_owned(),
                "192.168.1.9".to_owned(),
            ],
        );
        for ok in [
            "localhost",
            "LOCALHOST:8443",
            "localhost.",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:8443",
            "10.0.0.5:8443",
            "chat.example.com",
            "Chat.Example.Com:443",
            "app.example.net:8443",
            "192.168.1.9:80",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8443",
            "localhost.evil.example",
            "chat.example.com.evil.net",
            "10.0.0.6",
            "[::2]:80",
            "localhost:x",
            "localhost:1:2",
            "",
            "[::1",
            "::1",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        // Listening on every address: any address, still no foreign names.
        let any = Hosts::new("0.0.0.0".parse().unwrap(), Vec::new());
        assert!(any.allows("192.168.7.7:8443"));
        assert!(!any.allows("evil.example"));
    }
}
