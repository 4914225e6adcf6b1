//! The background purge of spent refresh-token rows: at start, then every
//! `--refresh-purge-secs` (an hour), until the server's stop token fires.
//! Without it every log-in and rotation left a row forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Auth;
use crate::metrics::{Metrics, RefreshTable};

/// A revoked family's marker outlives its longest-lived token by this much:
/// the JWT check's 5 s leeway, and a rotation that passed the family check
/// just before the revocation and stored its new token just after.
pub const FAMILY_MARKER_GRACE: Duration = Duration::from_secs(10);

/// Starts the purge loop; the handle ends soon after `stop` is cancelled
/// (a running purge looks at `stop` every thousand rows).
pub fn spawn(
    auth: Auth,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // The first tick is immediate: a purge at start.
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match auth.purge_refresh(stop.clone()).await {
                Ok(st) => {
                    metrics
                        .refresh_purged(RefreshTable::Tokens)
                        .inc_by(st.tokens_purged);
                    metrics
                        .refresh_purged(RefreshTable::Families)
                        .inc_by(st.families_purged);
                    metrics
                        .refresh_rows(RefreshTable::Tokens)
                        .set(gauge(st.tokens_left));
                    metrics
                        .refresh_rows(RefreshTable::Families)
                        .set(gauge(st.families_left));
                    tracing::info!(
                        tokens_purged = st.tokens_purged,
                        families_purged = st.families_purged,
                        tokens_left = st.tokens_left,
                        families_left = st.families_left,
                        "refresh-token purge"
                    );
                }
                // Nothing is lost by skipping a run: the next one catches up.
                Err(e) => tracing::warn!(error = %e, "refresh-token purge failed"),
            }
        }
    })
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
