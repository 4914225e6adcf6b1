//! The cluster's metrics: registered only in cluster mode
//! (`Metrics::register_cluster`), so a single node's `/metrics` is unchanged.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{LATENCY, counter, counter_vec, float_gauge, gauge, gauge_vec, histogram};

label_enum! {
    /// Why a gossip datagram was dropped, `hubbub_gossip_rejected_total{reason}`.
    pub enum GossipReject {
        /// Shorter than the header and the tag, or longer than a datagram may be.
        Length => "length",
        /// The tag does not match: another secret, or a forgery.
        Mac => "mac",
        /// Stamped more than the allowed skew before (or after) now.
        Stale => "stale",
        /// The same datagram seen before within the allowed skew.
        Replay => "replay",
        /// Authentic, but not a chitchat message (a version we do not speak).
        Decode => "decode",
    }
}

label_enum! {
    /// Member states as gossiped, `hubbub_cluster_members{state}`.
    pub enum MemberState {
        Joining => "joining",
        Ready => "ready",
        Draining => "draining",
        /// Known to gossip but not live (failure detector).
        Dead => "dead",
    }
}

label_enum! {
    /// Why a node link failed before it carried anything,
    /// `hubbub_link_handshake_failed_total{reason}`.
    pub enum LinkFail {
        /// TCP connect or the TLS handshake failed.
        Tls => "tls",
        /// The peer could not prove the cluster secret.
        Proof => "proof",
        /// The handshake took too long.
        Timeout => "timeout",
        /// The peer speaks another link version.
        Version => "version",
        /// Not a link hello (garbage inside TLS), or the peer went away in it.
        Hello => "hello",
        /// A proven node this one does not link with: not in its peer list,
        /// itself, another id than the one dialed, or dialing against the
        /// one-dialer rule (the node whose id sorts first dials).
        Peer => "peer",
        /// Too many handshakes at once: the connection was closed unanswered.
        Busy => "busy",
    }
}

label_enum! {
    /// Why an established link was dropped, `hubbub_link_dropped_total{reason}`.
    pub enum LinkDrop {
        /// The send queue to the peer was full (the peer resynchronises).
        QueueFull => "queue_full",
        /// A frame over the size limit, or one that does not decode.
        BadFrame => "bad_frame",
        /// The connection closed or failed.
        Closed => "closed",
        /// Nothing arrived for too long.
        Idle => "idle",
        /// The peer left the peer list (or moved to another address).
        Removed => "removed",
        /// A newer link from the same peer took its place (the peer redialed).
        Replaced => "replaced",
    }
}

pub struct ClusterMetrics {
    members: IntGaugeVec,
    gossip_rejected: IntCounterVec,
    pub gossip_bytes_sent: IntCounter,
    pub gossip_bytes_received: IntCounter,
    pub gossip_datagrams_sent: IntCounter,
    pub gossip_datagrams_received: IntCounter,
    pub gossip_state_bytes: IntGauge,
    pub links_up: IntGauge,
    link_handshake_failed: IntCounterVec,
    link_dropped: IntCounterVec,
    pub link_bytes_sent: IntCounter,
    pub link_bytes_received: IntCounter,
    pub log_term: IntGauge,
    pub log_elections: IntCounter,
    pub log_leader_changes: IntCounter,
    pub log_is_leader: IntGauge,
    pub log_last_applied: IntGauge,
    pub log_replication_lag: IntGauge,
    pub log_commit_seconds: Histogram,
    pub log_failed_entries: IntCounter,
    pub snapshots_built: IntCounter,
    pub snapshots_installed: IntCounter,
    pub snapshot_bytes: IntGauge,
    pub snapshot_pause_seconds: prometheus::Gauge,
    pub kicks_sent: IntCounter,
    pub kicks_received: IntCounter,
    pub typing_sent: IntCounter,
    pub typing_received: IntCounter,
}

impl ClusterMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let members = gauge_vec(
            r,
            "hubbub_cluster_members",
            "Cluster members this node knows, by gossiped state (dead: not live).",
            &["state"],
        );
        let gossip_rejected = counter_vec(
            r,
            "hubbub_gossip_rejected_total",
            "Gossip datagrams dropped before chitchat saw them, by reason.",
            &["reason"],
        );
        let link_handshake_failed = counter_vec(
            r,
            "hubbub_link_handshake_failed_total",
            "Node-link handshakes (either direction) that failed, by reason.",
            &["reason"],
        );
        let link_dropped = counter_vec(
            r,
            "hubbub_link_dropped_total",
            "Established node links dropped, by reason.",
            &["reason"],
        );
        for s in MemberState::ALL {
            members.with_label_values(&[s.label()]);
        }
        for g in GossipReject::ALL {
            gossip_rejected.with_label_values(&[g.label()]);
        }
        for f in LinkFail::ALL {
            link_handshake_failed.with_label_values(&[f.label()]);
        }
        for d in LinkDrop::ALL {
            link_dropped.with_label_values(&[d.label()]);
        }
        Self {
            members,
            gossip_rejected,
            gossip_bytes_sent: counter(
                r,
                "hubbub_gossip_sent_bytes_total",
                "Gossip bytes sent (MAC included).",
            ),
            gossip_bytes_received: counter(
                r,
                "hubbub_gossip_received_bytes_total",
                "Gossip bytes received (rejected datagrams included).",
            ),
            gossip_datagrams_sent: counter(
                r,
                "hubbub_gossip_sent_datagrams_total",
                "Gossip datagrams sent.",
            ),
            gossip_datagrams_received: counter(
                r,
                "hubbub_gossip_received_datagrams_total",
                "Gossip datagrams received (rejected ones included).",
            ),
            gossip_state_bytes: gauge(
                r,
                "hubbub_gossip_state_bytes",
                "Bytes of this node's own gossip state (keys and values, tombstones included).",
            ),
            links_up: gauge(r, "hubbub_links_up", "Node links established now."),
            link_handshake_failed,
            link_dropped,
            link_bytes_sent: counter(
                r,
                "hubbub_link_sent_bytes_total",
                "Bytes sent over node links (frame headers included).",
            ),
            link_bytes_received: counter(
                r,
                "hubbub_link_received_bytes_total",
                "Bytes received over node links (frame headers included).",
            ),
            log_term: gauge(r, "hubbub_log_term", "The replicated log's current term."),
            log_elections: counter(
                r,
                "hubbub_log_elections_total",
                "Terms this node has seen begin (each is an election).",
            ),
            log_leader_changes: counter(
                r,
                "hubbub_log_leader_changes_total",
                "Times the leader this node knows changed (to another node or to none).",
            ),
            log_is_leader: gauge(
                r,
                "hubbub_log_is_leader",
                "1 while this node leads the log.",
            ),
            log_last_applied: gauge(
                r,
                "hubbub_log_last_applied",
                "Index of the last log entry applied to this node's store.",
            ),
            log_replication_lag: gauge(
                r,
                "hubbub_log_replication_lag_entries",
                "On the leader: entries the furthest-behind member lacks (0 elsewhere).",
            ),
            log_commit_seconds: histogram(
                r,
                "hubbub_log_commit_seconds",
                "From proposing an entry to its commit (this node's proposals).",
                LATENCY,
            ),
            log_failed_entries: counter(
                r,
                "hubbub_log_failed_entries_total",
                "Entries this node proposed that were not committed in time (their senders got unavailable).",
            ),
            snapshots_built: counter(
                r,
                "hubbub_log_snapshots_built_total",
                "Snapshots of the state machine this node wrote (each lets the log be compacted).",
            ),
            snapshots_installed: counter(
                r,
                "hubbub_log_snapshots_installed_total",
                "Snapshots received from the leader and installed (this node was behind the compacted log).",
            ),
            snapshot_bytes: gauge(
                r,
                "hubbub_log_snapshot_bytes",
                "Size of this node's current snapshot file (last built or installed).",
            ),
            snapshot_pause_seconds: float_gauge(
                r,
                "hubbub_log_snapshot_pause_seconds",
                "How long applying paused while the last snapshot was written.",
            ),
            kicks_sent: counter(
                r,
                "hubbub_cluster_kicks_sent_total",
                "Session registrations sent to peers (each closes the same user and client id there), per peer.",
            ),
            kicks_received: counter(
                r,
                "hubbub_cluster_kicks_received_total",
                "Session registrations received from peers.",
            ),
            typing_sent: counter(
                r,
                "hubbub_cluster_typing_sent_total",
                "Typing states relayed to peers, per peer.",
            ),
            typing_received: counter(
                r,
                "hubbub_cluster_typing_received_total",
                "Typing states received from peers.",
            ),
        }
    }

    /// `hubbub_cluster_members{state}`.
    pub fn members(&self, state: MemberState) -> IntGauge {
        self.members.with_label_values(&[state.label()])
    }

    /// `hubbub_gossip_rejected_total{reason}`.
    pub fn gossip_rejected(&self, why: GossipReject) -> IntCounter {
        self.gossip_rejected.with_label_values(&[why.label()])
    }

    /// `hubbub_link_handshake_failed_total{reason}`.
    pub fn link_handshake_failed(&self, why: LinkFail) -> IntCounter {
        self.link_handshake_failed.with_label_values(&[why.label()])
    }

    /// `hubbub_link_dropped_total{reason}`.
    pub fn link_dropped(&self, why: LinkDrop) -> IntCounter {
        self.link_dropped.with_label_values(&[why.label()])
    }
}
