//! The cluster's endpoints. Without cluster mode both answer 404, as before
//! they existed.

use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::AppState;
use super::api::{admin_ok, identify};
use super::reply;
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
