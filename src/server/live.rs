//! Cluster mode: carries the hub's relays (kicks, typing) to the other nodes
//! and theirs to the hub, and moves users whose home moved. The hub does not
//! know the cluster and the cluster does not know the hub: these tasks
//! connect them.

use tokio::sync::mpsc;

use crate::cluster::{ClusterView, ring};
use crate::hub::{HubHandle, Relay};

/// The hub's relays to every peer. Ends when the hub stops.
pub async fn to_peers(mut rx: mpsc::Receiver<Relay>, view: ClusterView) {
    while let Some(r) = rx.recv().await {
        view.relay(&r);
    }
}

/// Peers' relays to the hub. Ends when the cluster or the hub stops.
pub async fn from_peers(mut rx: mpsc::Receiver<Relay>, hub: HubHandle) {
    while let Some(r) = rx.recv().await {
        if hub.remote(r).await.is_err() {
            return;
        }
    }
}

/// Moves users whose home moved: once the ring has not changed for
/// [`ring::STABLE`], the users served here as at home whose home on the
/// settled ring is another node are closed with 1001; their clients
/// reconnect at the new home with `since`. Sessions served here away from
/// home (the loop shield, or placed with `from=` on purpose) stay.
/// Ends when the ring or the hub stops.
pub async fn move_users(view: ClusterView, hub: HubHandle) {
    let mut rx = view.ring();
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        // Settle: every further change restarts the wait.
        loop {
            match tokio::time::timeout(ring::STABLE, rx.changed()).await {
                Err(_) => break,
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
            }
        }
        let now = rx.borrow_and_update().clone();
        let Ok(users) = hub.homed_users().await else {
            return;
        };
        let moved: Vec<_> = users
            .into_iter()
            .filter(|u| now.home(u.as_str()).is_some_and(|h| h.node != *view.node))
            .collect();
        if !moved.is_empty() {
            tracing::info!(
                users = moved.len(),
                "homes moved: closing their sessions here (1001)"
            );
            if hub.move_users(moved).await.is_err() {
                return;
            }
        }
    }
}
