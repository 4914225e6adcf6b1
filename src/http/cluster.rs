//! The cluster's endpoints and the upgrade's redirect to a user's home node.
//! Without cluster mode the endpoints answer 404, as before they existed.

use std::collections::HashMap;

use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::AppState;
use super::api::{admin_ok, identify, settle_identity};
use super::reply;
use crate::cluster::ClusterView;
use crate::protocol::ErrorCode;

/// `GET /api/admin/cluster` (admin token): this node and every member it
/// knows, dead ones included.
pub async fn admin(state: AppState, headers: HeaderMap) -> Response {
    if let Err(r) = admin_ok(&state, &headers) {
        return r;
    }
    let Some(c) = &state.cluster else {
        return reply::error(ErrorCode::NotFound, "not in cluster mode");
    };
    reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "node": &*c.node,
            "generation": c.generation,
            "ready": c.is_ready(),
            "members": c.members(),
            "links_up": c.links_up(),
            "ring": c.ring().borrow().nodes().collect::<Vec<_>>(),
            "log": c.log_status(),
            "gossip_state_bytes": c.gossip_state_bytes(),
        }),
    )
}

/// `GET /api/cluster/nodes` (logged in): where a client may connect — the
/// advertised URLs of live, ready nodes.
pub async fn nodes(state: AppState, headers: HeaderMap) -> Response {
    if let Err(r) = identify(&state, &headers) {
        return r;
    }
    let Some(c) = &state.cluster else {
        return reply::error(ErrorCode::NotFound, "not in cluster mode");
    };
    let nodes: Vec<_> = c
        .serving()
        .into_iter()
        .map(|(node, url)| serde_json::json!({ "node": node, "url": url }))
        .collect();
    reply::json(StatusCode::OK, &serde_json::json!({ "nodes": nodes }))
}

/// `POST /api/admin/cluster/remove/{node}` (admin token): removes a node
/// from the log's membership, deliberately (a dead node is never removed
/// automatically).
pub async fn remove(node: String, state: AppState, headers: HeaderMap) -> Response {
    if let Err(r) = admin_ok(&state, &headers) {
        return r;
    }
    let Some(c) = &state.cluster else {
        return reply::error(ErrorCode::NotFound, "not in cluster mode");
    };
    match c.remove(&node).await {
        Ok(()) => reply::json(
            StatusCode::OK,
            &serde_json::json!({ "removed": node, "log": c.log_status() }),
        ),
        Err(e) => reply::error(ErrorCode::Conflict, &e),
    }
}

/// `GET /api/cluster/route` (logged in): where the caller's socket belongs,
/// `{"url": "wss://…/ws", "node": "…"}`. Browsers do not follow a redirect
/// on a WebSocket handshake, so the web client asks this first.
pub async fn route(state: AppState, headers: HeaderMap) -> Response {
    settle_identity(&state, &headers).await;
    let who = match identify(&state, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(c) = &state.cluster else {
        return reply::error(ErrorCode::NotFound, "not in cluster mode");
    };
    match c.home(who.username.as_str()) {
        Some(home) => reply::json(
            StatusCode::OK,
            &serde_json::json!({ "url": home.ws_url(), "node": home.node }),
        ),
        None => reply::error(
            ErrorCode::Unavailable,
            "no node serves right now: try again shortly",
        ),
    }
}

/// Where `user`'s upgrade is served. `Ok(away)`: here — `away` when this
/// node is not its home but serves it anyway: the request was redirected
/// already (it carries `from`). That is the loop shield: two nodes that
/// disagree about the ring (one still counts a node the other saw die)
/// redirect a client at most once, never back and forth or on to a third;
/// a request `from` the very node this ring names is the common case of
/// it. `Err`: 307 to the home node's `/ws`, same query plus
/// `from=<this node>`.
pub fn place(
    cluster: &ClusterView,
    user: &str,
    query: &HashMap<String, String>,
) -> Result<bool, Response> {
    let Some(home) = cluster.home(user) else {
        return Ok(false);
    };
    if home.node == *cluster.node {
        return Ok(false);
    }
    if query.get("from").is_some_and(|f| !f.is_empty()) {
        return Ok(true);
    }
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .filter(|(k, _)| k.as_str() != "from")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.push(("from", &cluster.node));
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    let location = format!("{}?{}", home.ws_url(), q.join("&"));
    let mut resp = reply::json(
        StatusCode::TEMPORARY_REDIRECT,
        &serde_json::json!({ "url": location, "node": home.node }),
    );
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            Err(resp)
        }
        // A URL made of an advertised URL and escaped pairs is a valid
        // header value; if a peer advertised something odd, serve here.
        Err(_) => Ok(true),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn query_values_are_escaped_for_the_location() {
        assert_eq!(escape("lobby-1_a.b~c"), "lobby-1_a.b~c");
        assert_eq!(escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
