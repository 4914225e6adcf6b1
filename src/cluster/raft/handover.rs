//! Handing leadership over when the leader shuts down, so that the
//! cluster's writes pause for a round trip instead of an election timeout.
//!
//! openraft 0.9 has no leadership transfer. What it has is
//! `trigger().elect()`: a node starts an election at once. A follower that
//! heard from the leader within its lease refuses such a candidate, but the
//! leader itself does not: its own lease stamp dates from its election, and
//! a candidate whose log is as long as its own gets its vote — once that
//! stamp is a lease old (a leader elected a moment ago refuses too: the
//! hand-over waits that out, see `track`). With three
//! voters that is a majority (the candidate and the old leader), so the most
//! up-to-date follower leads before this node closes anything. With five,
//! the other followers grant the vote once their lease (about a second)
//! has passed: no faster than a crash, no slower either.
//!
//! While it hands over, the leader holds writes (`Shared::gate`): it waits
//! for those in flight, and new ones wait for it. A write that lands after
//! the candidate was chosen would make the leader's log longer than the
//! candidate's, and the leader would refuse it its vote.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use openraft::{Raft, RaftMetrics, ServerState};

use super::network::{Shared, elect};
use super::node::{LEADER_LEASE, name_of};
use super::types::{NodeId, NodeInfo, TypeConfig};
use crate::cluster::link::Links;

/// How long a follower may take to have everything the leader has before it
/// is asked to stand anyway (writes keep arriving while sessions drain).
const CATCH_UP: Duration = Duration::from_millis(300);
/// Asked this many times at most.
const ATTEMPTS: usize = 3;
/// Beyond the lease, for the clocks of two tasks.
const LEASE_MARGIN: Duration = Duration::from_millis(50);
/// How long an asked candidate has to win before the next is asked.
const ELECTION: Duration = Duration::from_millis(600);

/// If this node leads, asks its most up-to-date voter to take over and
/// waits (at most `limit`) until someone else leads. Returns the new
/// leader's name, or `None` (not the leader, or no one took over in time).
pub async fn hand_over(
    raft: &Raft<TypeConfig>,
    shared: &Shared,
    links: &Links,
    limit: Duration,
) -> Option<String> {
    let me = raft.metrics().borrow().id;
    if raft.metrics().borrow().state != ServerState::Leader {
        return None;
    }
    let moved = tokio::time::timeout(limit, async {
        let _held = shared.gate.write().await;
        // This node refuses any candidate within a lease of its own election.
        let since = shared.led_since.lock().ok().and_then(|s| *s);
        if let Some((_, at)) = since {
            tokio::time::sleep_until((at + LEADER_LEASE + LEASE_MARGIN).into()).await;
        }
        for attempt in 1..=ATTEMPTS {
            let Some(name) = successor(raft).await else {
                tracing::warn!(
                    attempt,
                    "hand-over: no voter to hand over to (not the leader any more?)"
                );
                return None;
            };
            tracing::info!(to = %name, attempt, "handing leadership over");
            if !elect(links, &name, limit).await {
                tracing::warn!(to = %name, attempt, "hand-over: the candidate did not stand");
                continue;
            }
            let mut watch = raft.metrics();
            let led = tokio::time::timeout(
                ELECTION,
                watch.wait_for(|m| m.current_leader.is_some_and(|l| l != me)),
            )
            .await;
            if let Ok(Ok(m)) = led {
                return m.current_leader.and_then(|l| name_of(raft, l));
            }
            tracing::warn!(to = %name, attempt, "hand-over: the candidate was not elected in time");
        }
        None
    })
    .await;
    if moved.is_err() {
        tracing::warn!("hand-over: gave up after {limit:?}; the others will elect by timeout");
    }
    moved.ok().flatten()
}

/// The voter (not this node) with the most of the log, given a moment to
/// have all of it (the log does not grow meanwhile: writes are held).
async fn successor(raft: &Raft<TypeConfig>) -> Option<String> {
    let best = |m: &RaftMetrics<NodeId, NodeInfo>| {
        let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
        m.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| **id != m.id && voters.contains(id))
                .max_by_key(|(_, matched)| matched.map(|l| l.index))
                .map(|(id, matched)| (*id, matched.map(|l| l.index)))
        })
    };
    let mut watch = raft.metrics();
    let all = tokio::time::timeout(
        CATCH_UP,
        watch.wait_for(|m| best(m).is_some_and(|(_, matched)| matched >= m.last_log_index)),
    )
    .await;
    let (id, _) = match all {
        Ok(Ok(m)) => best(&m),
        _ => best(&raft.metrics().borrow()),
    }?;
    name_of(raft, id)
}

/// Records in `shared.led_since` the term this node leads and when it
/// started to (a little after openraft's own stamp: waiting from it is
/// safe). Until the node stops.
pub async fn track(raft: Raft<TypeConfig>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut watch = raft.metrics();
    loop {
        let led = {
            let m = watch.borrow_and_update();
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        if let Ok(mut s) = shared.led_since.lock() {
            *s = match (led, *s) {
                (Some(t), Some((term, at))) if t == term => Some((term, at)),
                (Some(t), _) => Some((t, Instant::now())),
                (None, _) => None,
            };
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = watch.changed() => if r.is_err() { return },
        }
    }
}
