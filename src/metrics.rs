//! Prometheus metrics: one registry per server (so servers in one process,
//! as in the tests, never mix their numbers). Names carry the `hubbub_`
//! prefix and their unit; no label takes user-controlled values.

use std::sync::Arc;

use crate::protocol::{CloseCode, ErrorCode};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[macro_use]
mod labels;
mod cluster;
#[cfg(test)]
mod dashboard_tests;

pub use cluster::{ClusterMetrics, GossipReject, LinkDrop, LinkFail, MemberState};

pub use labels::{
    AcceptError, AuthResult, CapHit, Eviction, HistoryKind, In, Out, RefreshTable, Route,
    SessionState, StatusClass, TimeoutPhase, Upgrade,
};

/// The `code` label of `hubbub_closes_total`: the close code's number, or
/// `none` when the peer went away without a close handshake. Logs use it too.
pub fn close_label(code: Option<CloseCode>) -> String {
    code.map_or_else(|| "none".to_owned(), |c| c.code().to_string())
}

pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    /// By `SessionState`: see [`Metrics::session_state`].
    sessions: IntGaugeVec,
    pub rooms_active: IntGauge,
    /// By `Upgrade`: see [`Metrics::upgrade`].
    upgrades: IntCounterVec,
    /// By `In`: see [`Metrics::frame_in`].
    frames_in: IntCounterVec,
    frames_out: Vec<IntCounter>,
    pub deliveries: IntCounter,
    /// By `ErrorCode`: see [`Metrics::error_sent`].
    errors_sent: IntCounterVec,
    /// By close code: see [`Metrics::closed`].
    closes: IntCounterVec,
    /// By `Eviction`: see [`Metrics::eviction`].
    evictions: IntCounterVec,
    pub rate_limited: IntCounter,
    /// `batch=1` connections: text frames carrying several messages, and those messages.
    pub batched_frames: IntCounter,
    pub batched_messages: IntCounter,
    pub storage_queue_depth: IntGauge,
    pub storage_batch_size: Histogram,
    pub storage_flush_seconds: Histogram,
    pub durable_latency_seconds: Histogram,
    pub messages_stored: IntCounter,
    pub stored_bytes: IntCounter,
    pub storage_errors: IntCounter,
    pub storage_state: IntGauge,
    pub storage_free_bytes: IntGauge,
    pub hub_queue_depth: IntGauge,
    pub hub_turn_seconds: Histogram,
    /// By `AuthResult`: see [`Metrics::login`].
    logins: IntCounterVec,
    pub signups: IntCounter,
    /// By `AuthResult`: see [`Metrics::refresh`].
    refreshes: IntCounterVec,
    pub refresh_reuse: IntCounter,
    /// By `RefreshTable`: see [`Metrics::refresh_purged`].
    refresh_purged: IntCounterVec,
    refresh_rows: IntGaugeVec,
    /// By `Route` and `StatusClass`: see [`Metrics::http_request`].
    http_requests: IntCounterVec,
    pub http_connections: IntGauge,
    /// By `CapHit`: see [`Metrics::http_refused`].
    http_refused: IntCounterVec,
    /// By `TimeoutPhase`: see [`Metrics::http_timeout`].
    http_timeouts: IntCounterVec,
    /// By `AcceptError`: see [`Metrics::accept_error`].
    accept_errors: IntCounterVec,
    /// By `HistoryKind`: see [`Metrics::history`].
    history_seconds: HistogramVec,
    /// Log records a history page read (join, frame, HTTP): about `limit + 1`
    /// with the view index, however many hidden messages the range holds.
    pub history_examined: Histogram,
    process_rss: IntGauge,
    process_fds: IntGauge,
    /// A counter: `sample_process` adds what the kernel's figure grew by.
    process_cpu: prometheus::Counter,
}

/// Latency buckets from 100 µs to 10 s.
pub(crate) const LATENCY: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];
const EXAMINED: &[f64] = &[
    1.0,
    10.0,
    51.0,
    101.0,
    1001.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];
const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // Registration fails only for a duplicate name, which the names below rule out.
    let _ = r.register(Box::new(m.clone()));
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(
        r,
        IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric()),
    )
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric()),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(
        r,
        IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric()),
    )
}

fn float_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    reg(
        r,
        prometheus::Gauge::new(name, help).unwrap_or_else(|_| unreachable_metric()),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric()),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    reg(
        r,
        Histogram::with_opts(opts).unwrap_or_else(|_| unreachable_metric()),
    )
}

/// Metric constructors fail only for invalid names or label names; ours are
/// constants checked by the `renders_and_lints` test.
#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let frames_out_vec = counter_vec(
            &r,
            "hubbub_frames_out_total",
            "Frames queued to sessions, by type.",
            &["type"],
        );
        let frames_out = Out::ALL
            .iter()
            .map(|k| frames_out_vec.with_label_values(&[k.label()]))
            .collect();
        let frames_in = counter_vec(
            &r,
            "hubbub_frames_in_total",
            "Frames received from clients, by type.",
            &["type"],
        );
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "hubbub_build_info",
                    "Always 1; the labels say which build runs.",
                ),
                &["version"],
            )
            .unwrap_or_else(|_| unreachable_metric()),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            connections: gauge(&r, "hubbub_connections", "Open WebSocket connections."),
            sessions: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("hubbub_sessions", "Sessions by state (joining, active)."),
                    &["state"],
                )
                .unwrap_or_else(|_| unreachable_metric()),
            ),
            rooms_active: gauge(
                &r,
                "hubbub_rooms_active",
                "Rooms with at least one member online.",
            ),
            upgrades: counter_vec(
                &r,
                "hubbub_upgrades_total",
                "WebSocket upgrades, accepted or refused by reason.",
                &["result"],
            ),
            frames_in,
            frames_out,
            deliveries: counter(
                &r,
                "hubbub_deliveries_total",
                "Chat and private messages queued to recipients.",
            ),
            errors_sent: counter_vec(
                &r,
                "hubbub_errors_sent_total",
                "Error frames sent, by code.",
                &["code"],
            ),
            closes: counter_vec(
                &r,
                "hubbub_closes_total",
                "WebSocket connections closed, by close code.",
                &["code"],
            ),
            evictions: counter_vec(
                &r,
                "hubbub_evictions_total",
                "Sessions closed by the server, by reason.",
                &["reason"],
            ),
            rate_limited: counter(
                &r,
                "hubbub_rate_limited_frames_total",
                "Frames dropped by the per-connection rate limit.",
            ),
            batched_frames: counter(
                &r,
                "hubbub_batched_frames_total",
                "Text frames that carried several newline-joined messages (batch=1).",
            ),
            batched_messages: counter(
                &r,
                "hubbub_batched_messages_total",
                "Messages sent inside batched text frames (batch=1).",
            ),
            storage_queue_depth: gauge(
                &r,
                "hubbub_storage_queue_depth",
                "Commands waiting in the write-ahead queue.",
            ),
            storage_batch_size: histogram(
                &r,
                "hubbub_storage_batch_size",
                "Commands per storage batch (group commit).",
                BATCH,
            ),
            storage_flush_seconds: histogram(
                &r,
                "hubbub_storage_flush_seconds",
                "Time to flush one batch to disk.",
                LATENCY,
            ),
            durable_latency_seconds: histogram(
                &r,
                "hubbub_send_to_durable_seconds",
                "Time from a message's acceptance to its flush.",
                LATENCY,
            ),
            messages_stored: counter(
                &r,
                "hubbub_messages_stored_total",
                "Messages written to the log and flushed to disk.",
            ),
            stored_bytes: counter(
                &r,
                "hubbub_stored_bytes_total",
                "Encoded bytes of messages written to the log and flushed to disk.",
            ),
            storage_errors: counter(
                &r,
                "hubbub_storage_errors_total",
                "Failed storage batches and flushes.",
            ),
            storage_state: gauge(
                &r,
                "hubbub_storage_state",
                "Storage state: 0 ok, 1 full (free space under --min-free-mb: messages refused), 2 failed (stopping).",
            ),
            storage_free_bytes: gauge(
                &r,
                "hubbub_storage_free_bytes",
                "Free bytes on the data directory's filesystem, as last checked (0 with the guard off).",
            ),
            hub_queue_depth: gauge(
                &r,
                "hubbub_hub_queue_depth",
                "Commands waiting for the hub.",
            ),
            hub_turn_seconds: histogram(
                &r,
                "hubbub_hub_turn_seconds",
                "Time the hub spends on one loop turn.",
                LATENCY,
            ),
            logins: counter_vec(
                &r,
                "hubbub_logins_total",
                "Log-in attempts by result.",
                &["result"],
            ),
            signups: counter(&r, "hubbub_signups_total", "Accounts created."),
            refreshes: counter_vec(
                &r,
                "hubbub_refreshes_total",
                "Refresh-token rotations by result.",
                &["result"],
            ),
            refresh_reuse: counter(
                &r,
                "hubbub_refresh_reuse_total",
                "Spent refresh tokens used again (family revoked).",
            ),
            refresh_purged: counter_vec(
                &r,
                "hubbub_refresh_tokens_purged_total",
                "Expired or revoked refresh-token rows deleted, by table (tokens, families).",
                &["table"],
            ),
            refresh_rows: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "hubbub_refresh_token_rows",
                        "Rows in the refresh-token tables after the last purge, by table (tokens, families).",
                    ),
                    &["table"],
                )
                .unwrap_or_else(|_| unreachable_metric()),
            ),
            http_requests: counter_vec(
                &r,
                "hubbub_http_requests_total",
                "HTTP requests by route and status class.",
                &["route", "class"],
            ),
            http_connections: gauge(
                &r,
                "hubbub_http_connections",
                "Open HTTP connections not (yet) upgraded to WebSockets.",
            ),
            http_refused: counter_vec(
                &r,
                "hubbub_http_connections_refused_total",
                "HTTP connections closed at accept by a cap (total, per_address).",
                &["reason"],
            ),
            http_timeouts: counter_vec(
                &r,
                "hubbub_http_timeouts_total",
                "HTTP connections cut by --request-timeout-secs, by phase (head, body).",
                &["phase"],
            ),
            accept_errors: counter_vec(
                &r,
                "hubbub_accept_errors_total",
                "Failed accepts: fd_limit (EMFILE, ENFILE, no memory) or other.",
                &["kind"],
            ),
            history_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "hubbub_history_seconds",
                        "Time to read a history page, by kind (join, page).",
                    )
                    .buckets(LATENCY.to_vec()),
                    &["kind"],
                )
                .unwrap_or_else(|_| unreachable_metric()),
            ),
            history_examined: histogram(
                &r,
                "hubbub_history_records_examined",
                "Stored records read for one history page.",
                EXAMINED,
            ),
            process_rss: gauge(
                &r,
                "hubbub_process_resident_memory_bytes",
                "Resident memory of the process.",
            ),
            process_fds: gauge(
                &r,
                "hubbub_process_open_fds",
                "Open file descriptors of the process.",
            ),
            process_cpu: reg(
                &r,
                prometheus::Counter::new(
                    "hubbub_process_cpu_seconds_total",
                    "CPU time used by the process (user + system).",
                )
                .unwrap_or_else(|_| unreachable_metric()),
            ),
            registry: r,
        };
        m.preregister();
        Arc::new(m)
    }

    /// Every known label value exists from the start, so dashboards show 0,
    /// not "no data". Not `hubbub_http_requests_total`: its route × class
    /// series appear with their first request (docs/ARCHITECTURE.md).
    fn preregister(&self) {
        for s in SessionState::ALL {
            self.session_state(s);
        }
        for k in In::ALL {
            self.frame_in(k);
        }
        for r in Upgrade::ALL {
            self.upgrade(r);
        }
        // Only the codes an error frame can carry; the rest are HTTP's.
        for c in ErrorCode::ALL.into_iter().filter(|c| c.in_frames()) {
            self.error_sent(c);
        }
        for c in CloseCode::ALL.map(Some).into_iter().chain([None]) {
            self.closed(c);
        }
        for e in Eviction::ALL {
            self.eviction(e);
        }
        for r in AuthResult::ALL {
            self.login(r);
            self.refresh(r);
        }
        for k in HistoryKind::ALL {
            self.history(k);
        }
        for t in RefreshTable::ALL {
            self.refresh_purged(t);
            self.refresh_rows(t);
        }
        for c in CapHit::ALL {
            self.http_refused(c);
        }
        for p in TimeoutPhase::ALL {
            self.http_timeout(p);
        }
        for k in AcceptError::ALL {
            self.accept_error(k);
        }
    }

    /// `hubbub_sessions{state}`.
    pub fn session_state(&self, state: SessionState) -> IntGauge {
        self.sessions.with_label_values(&[state.label()])
    }

    /// `hubbub_frames_in_total{type}`.
    pub fn frame_in(&self, kind: In) -> IntCounter {
        self.frames_in.with_label_values(&[kind.label()])
    }

    /// `hubbub_frames_out_total{type}`: pre-resolved, one per `Out`.
    pub fn out(&self, kind: Out) -> &IntCounter {
        &self.frames_out[kind as usize]
    }

    /// `hubbub_upgrades_total{result}`.
    pub fn upgrade(&self, result: Upgrade) -> IntCounter {
        self.upgrades.with_label_values(&[result.label()])
    }

    /// `hubbub_errors_sent_total{code}`: error frames sent.
    pub fn error_sent(&self, code: ErrorCode) -> IntCounter {
        self.errors_sent.with_label_values(&[code.as_str()])
    }

    /// `hubbub_closes_total{code}`; `None`: the peer went away without a close handshake.
    pub fn closed(&self, code: Option<CloseCode>) -> IntCounter {
        self.closes.with_label_values(&[&close_label(code)])
    }

    /// `hubbub_evictions_total{reason}`.
    pub fn eviction(&self, why: Eviction) -> IntCounter {
        self.evictions.with_label_values(&[why.label()])
    }

    /// `hubbub_logins_total{result}`.
    pub fn login(&self, result: AuthResult) -> IntCounter {
        self.logins.with_label_values(&[result.label()])
    }

    /// `hubbub_refreshes_total{result}`.
    pub fn refresh(&self, result: AuthResult) -> IntCounter {
        self.refreshes.with_label_values(&[result.label()])
    }

    /// `hubbub_refresh_tokens_purged_total{table}`.
    pub fn refresh_purged(&self, table: RefreshTable) -> IntCounter {
        self.refresh_purged.with_label_values(&[table.label()])
    }

    /// `hubbub_refresh_token_rows{table}`.
    pub fn refresh_rows(&self, table: RefreshTable) -> IntGauge {
        self.refresh_rows.with_label_values(&[table.label()])
    }

    /// `hubbub_http_requests_total{route, class}`.
    pub fn http_request(&self, route: Route, class: StatusClass) -> IntCounter {
        self.http_requests
            .with_label_values(&[route.label(), class.label()])
    }

    /// `hubbub_http_connections_refused_total{reason}`.
    pub fn http_refused(&self, cap: CapHit) -> IntCounter {
        self.http_refused.with_label_values(&[cap.label()])
    }

    /// `hubbub_http_timeouts_total{phase}`.
    pub fn http_timeout(&self, phase: TimeoutPhase) -> IntCounter {
        self.http_timeouts.with_label_values(&[phase.label()])
    }

    /// `hubbub_accept_errors_total{kind}`.
    pub fn accept_error(&self, kind: AcceptError) -> IntCounter {
        self.accept_errors.with_label_values(&[kind.label()])
    }

    /// `hubbub_history_seconds{kind}`.
    pub fn history(&self, kind: HistoryKind) -> Histogram {
        self.history_seconds.with_label_values(&[kind.label()])
    }

    /// Adds a counter that storage keeps itself (it counts while the database
    /// opens, before there is a server): `hubbub_storage_decode_errors_total`.
    pub fn register_storage(&self, decode_errors: IntCounterVec) {
        // Fails only if registered twice; one store per server registers once.
        let _ = self.registry.register(Box::new(decode_errors));
    }

    /// The cluster's metrics, registered in this server's registry. Call once
    /// (cluster mode only): a second call's families would not register.
    pub fn register_cluster(&self) -> Arc<ClusterMetrics> {
        Arc::new(ClusterMetrics::new(&self.registry))
    }

    /// The Prometheus text exposition of every metric, process figures included.
    pub fn render(&self) -> String {
        self.sample_process();
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    fn sample_process(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status")
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            self.process_rss.set(kb * 1024);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.process_fds.set(fds.count() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
            let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = after.split_whitespace().collect();
            if let (Some(u), Some(s)) = (
                f.get(11).and_then(|v| v.parse::<f64>().ok()),
                f.get(12).and_then(|v| v.parse::<f64>().ok()),
            ) {
                // Linux reports clock ticks; USER_HZ is 100 on every Linux ABI.
                let delta = (u + s) / 100.0 - self.process_cpu.get();
                if delta > 0.0 {
                    self.process_cpu.inc_by(delta);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_lints() {
        let m = Metrics::new();
        m.connections.inc();
        m.out(Out::Chat).inc_by(3);
        m.upgrade(Upgrade::Accepted).inc();
        m.closed(Some(CloseCode::Evicted)).inc();
        m.closed(None).inc();
        m.durable_latency_seconds.observe(0.002);
        let text = m.render();
        assert!(text.contains("hubbub_connections 1"), "{text}");
        assert!(text.contains("hubbub_frames_out_total{type=\"chat\"} 3"));
        assert!(text.contains("hubbub_upgrades_total{result=\"accepted\"} 1"));
        assert!(text.contains("hubbub_upgrades_total{result=\"bad_request\"} 0"));
        assert!(text.contains("hubbub_closes_total{code=\"4002\"} 1"));
        assert!(text.contains("hubbub_closes_total{code=\"none\"} 1"));
        assert!(text.contains("hubbub_closes_total{code=\"1008\"} 0"));
        assert!(text.contains("hubbub_send_to_durable_seconds_bucket"));
        assert!(text.contains("hubbub_build_info{version="));
        assert!(text.contains("hubbub_process_resident_memory_bytes"));
        assert!(
            !text.contains("hubbub_gossip"),
            "cluster metrics only in cluster mode"
        );
        let c = m.register_cluster();
        c.gossip_rejected(GossipReject::Mac).inc();
        let text = m.render();
        assert!(text.contains("hubbub_gossip_rejected_total{reason=\"mac\"} 1"));
        assert!(text.contains("hubbub_cluster_members{state=\"dead\"} 0"));
        // Two registries never share numbers.
        assert!(Metrics::new().render().contains("hubbub_connections 0"));
    }
}
