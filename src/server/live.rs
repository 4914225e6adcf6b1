//! Cluster mode: carries the hub's relays (kicks, typing) to the other nodes
//! and theirs to the hub. The hub does not know the cluster and the cluster
//! does not know the hub: these two pumps translate between them.

use tokio::sync::mpsc;

use crate::cluster::ClusterView;
use crate::cluster::live::Note;
use crate::hub::{HubHandle, Relay};

/// The hub's relays to every peer. Ends when the hub stops.
pub async fn to_peers(mut rx: mpsc::Receiver<Relay>, view: ClusterView) {
    while let Some(r) = rx.recv().await {
        let note = match r {
            Relay::Joined {
                user,
                client,
                session,
                at_ms,
            } => Note::Joined {
                user,
                client,
                session,
                at_ms,
            },
            Relay::Typing { room, user, active } => Note::Typing { room, user, active },
        };
        view.relay(&note);
    }
}

/// Peers' notes to the hub. Ends when the cluster or the hub stops.
pub async fn from_peers(mut rx: mpsc::Receiver<Note>, hub: HubHandle) {
    while let Some(n) = rx.recv().await {
        let relay = match n {
            Note::Joined {
                user,
                client,
                session,
                at_ms,
            } => Relay::Joined {
                user,
                client,
                session,
                at_ms,
            },
            Note::Typing { room, user, active } => Relay::Typing { room, user, active },
        };
        if hub.remote(relay).await.is_err() {
            return;
        }
    }
}
