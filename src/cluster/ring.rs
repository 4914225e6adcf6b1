//! Where a user is homed: a consistent-hash ring with virtual nodes over the
//! live, ready, non-draining members (user id → node). Every node builds the
//! same ring from the same membership: the points depend only on the node
//! names, never on the order members were heard of.
//!
//! Homing keeps one user's sessions, its session cap and its typing state on
//! one node. Nothing depends on it for correctness (any node serves anyone):
//! two nodes that briefly disagree about membership disagree about some
//! homes, and the loop shield (`from=` on the redirect) settles it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::gossip::View;

/// Points per node: with 3 nodes, each node's share of 10 000 users stays
/// within about ±15 % of a third (see the tests).
const VNODES: u32 = 160;

/// Users whose home moved are moved only once the ring has not changed for
/// this long: a node flapping or several nodes starting together cost one
/// move, not a storm of them.
pub const STABLE: Duration = Duration::from_secs(2);

/// One node on the ring: its name and the base URL it advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub node: String,
    pub url: String,
}

impl Home {
    /// The node's WebSocket endpoint: `wss://…/ws` (or `ws://` for `http`).
    pub fn ws_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let base = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => base.to_owned(),
        };
        format!("{base}/ws")
    }
}

/// The ring: sorted points, each naming an index into `homes`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ring {
    homes: Vec<Home>,
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring over `homes` (the order does not matter; a name given twice
    /// counts once).
    pub fn new(homes: impl IntoIterator<Item = Home>) -> Self {
        let by_name: BTreeMap<String, Home> =
            homes.into_iter().map(|h| (h.node.clone(), h)).collect();
        let homes: Vec<Home> = by_name.into_values().collect();
        let mut points = Vec::with_capacity(homes.len() * VNODES as usize);
        for (i, h) in homes.iter().enumerate() {
            for v in 0..VNODES {
                points.push((hash(format!("{}#{v}", h.node).as_bytes()), i));
            }
        }
        // Ties (two equal 64-bit hashes) are broken by the node's index,
        // itself ordered by name: the same on every node.
        points.sort_unstable();
        Self { homes, points }
    }

    /// The ring over a member list: its serving members (live, ready, our
    /// protocol; a draining node is not ready), but `exclude`.
    pub fn of_view(view: &View, exclude: Option<&str>) -> Self {
        Self::new(
            view.members
                .values()
                .filter(|m| m.serving() && Some(m.node.as_str()) != exclude)
                .map(|m| Home {
                    node: m.node.clone(),
                    url: m.url.clone(),
                }),
        )
    }

    /// `user`'s home: the first point at or after the user's hash, wrapping
    /// around. `None` on an empty ring.
    pub fn home(&self, user: &str) -> Option<&Home> {
        let h = hash(user.as_bytes());
        let i = self.points.partition_point(|(p, _)| *p < h);
        let (_, node) = self.points.get(i).or_else(|| self.points.first())?;
        self.homes.get(*node)
    }

    /// The nodes on the ring, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.homes.iter().map(|h| h.node.as_str())
    }

    /// True when both rings have the same nodes at the same URLs.
    pub fn same_as(&self, other: &Ring) -> bool {
        self.homes == other.homes
    }
}

/// The first 8 bytes of SHA-256, big-endian: spread evenly, and the same on
/// every platform (unlike `std`'s hasher, which is seeded per process).
fn hash(bytes: &[u8]) -> u64 {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// Keeps `tx` at the ring of the latest member list; sends only when the
/// ring's nodes change (heartbeats and `joining` members do not).
/// `exclude`: `--ring-exclude` (tests).
pub async fn follow(
    mut view: watch::Receiver<Arc<View>>,
    tx: watch::Sender<Arc<Ring>>,
    exclude: Option<String>,
    stop: CancellationToken,
) {
    loop {
        let ring = Ring::of_view(&view.borrow_and_update(), exclude.as_deref());
        tx.send_if_modified(|cur| {
            let changed = !cur.same_as(&ring);
            if changed {
                tracing::info!(nodes = ?ring.nodes().collect::<Vec<_>>(), "the ring changed");
                *cur = Arc::new(ring);
            }
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn homes(names: &[&str]) -> Vec<Home> {
        names
            .iter()
            .map(|n| Home {
                node: (*n).to_owned(),
                url: format!("https://{n}.example:8443"),
            })
            .collect()
    }

    fn users() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("user{i}"))
    }

    #[test]
    fn the_same_members_in_any_order_give_the_same_homes() {
        let a = Ring::new(homes(&["n1", "n2", "n3"]));
        let b = Ring::new(homes(&["n3", "n1", "n2", "n1"]));
        assert_eq!(a, b);
        for u in users().take(500) {
            assert_eq!(a.home(&u), b.home(&u));
        }
    }

    #[test]
    fn users_spread_over_the_nodes() {
        let r = Ring::new(homes(&["n1", "n2", "n3"]));
        let mut n: HashMap<String, usize> = HashMap::new();
        for u in users() {
            *n.entry(r.home(&u).unwrap().node.clone()).or_default() += 1;
        }
        for (node, count) in &n {
            // A third is 3333; ±15 % of 10 000 / 3 is 2833..3833.
            assert!((2833..=3833).contains(count), "{node}: {count} of 10000");
        }
    }

    #[test]
    fn only_a_removed_nodes_users_move() {
        let three = Ring::new(homes(&["n1", "n2", "n3"]));
        let two = Ring::new(homes(&["n1", "n2"]));
        let mut moved = 0;
        for u in users() {
            let (before, after) = (three.home(&u).unwrap(), two.home(&u).unwrap());
            if before.node != "n3" {
                assert_eq!(before, after, "{u} moved though its home stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn an_empty_ring_homes_nobody() {
        assert_eq!(Ring::new(Vec::new()).home("alice"), None);
    }

    #[test]
    fn the_socket_url_of_a_base_url() {
        let h = |url: &str| Home {
            node: "n".into(),
            url: url.into(),
        };
        assert_eq!(
            h("https://a.example:8443/").ws_url(),
            "wss://a.example:8443/ws"
        );
        assert_eq!(h("http://127.0.0.1:1").ws_url(), "ws://127.0.0.1:1/ws");
    }
}
