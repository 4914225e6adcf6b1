//! Cluster mode: carries the hub's relays (kicks, typing) to the other nodes
//! and theirs to the hub, and other nodes' presence to the hub. The hub does not know the cluster and the cluster
//! does not know the hub: these two pumps connect them.

use tokio::sync::mpsc;

use crate::cluster::ClusterView;
use crate::hub::{HubHandle, PeerPresence, Relay};

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

/// Other nodes' presence to the hub. Ends when the cluster or the hub stops.
pub async fn presence_from_peers(mut rx: mpsc::Receiver<PeerPresence>, hub: HubHandle) {
    while let Some(p) = rx.recv().await {
        if hub.peers(p).await.is_err() {
            return;
        }
    }
}
