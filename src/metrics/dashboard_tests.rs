//! deploy/grafana/hubbub.json against a fresh registry (cluster families
//! included): a panel that names a metric hubbub does not export, or a
//! Cluster row that lost a family or its per-node lines, fails `cargo test`
//! before CI's real Prometheus (ci/prometheus.sh) would.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Metrics;

/// (row title, panel title, expression, legend) of every query, in order.
fn queries() -> Vec<(String, String, String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/hubbub.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut row = String::new();
    // A row's panels follow it at the top level (or sit inside it when collapsed).
    let mut stack: Vec<Value> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .cloned()
        .collect();
    while let Some(p) = stack.pop() {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        if p["type"] == "row" {
            row = title.clone();
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let field = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            out.push((
                row.clone(),
                title.clone(),
                field("expr"),
                field("legendFormat"),
            ));
        }
        stack.extend(p["panels"].as_array().into_iter().flatten().rev().cloned());
    }
    out
}

/// Every `hubbub_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("hubbub_")
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect()
}

/// The families a cluster node exports (a single node's are a subset).
fn families() -> BTreeSet<String> {
    let metrics = Metrics::new();
    let _cluster = metrics.register_cluster();
    // The one family that appears with its first request, not at start.
    metrics
        .http_request(super::Route::Metrics, super::StatusClass::Success)
        .inc();
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_exists() {
    let families = families();
    let mut missing = Vec::new();
    for (_, panel, expr, _) in queries() {
        for name in metric_names(&expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if !families.contains(&name) && !families.contains(base) {
                missing.push(format!("{name} ({panel})"));
            }
        }
    }
    assert!(missing.is_empty(), "not exported: {missing:?}");
}

/// Issue 11's list: members by state, gossip bytes and rejects, links,
/// term, leader, elections, leader changes, lag, commit latency, failures;
/// each query keeps one line per node, filtered by the Node selector.
#[test]
fn the_cluster_row_shows_each_cluster_family_per_node() {
    let row: Vec<_> = queries().into_iter().filter(|q| q.0 == "Cluster").collect();
    assert!(!row.is_empty(), "no Cluster row");
    for family in [
        "hubbub_cluster_members",
        "hubbub_gossip_sent_bytes_total",
        "hubbub_gossip_received_bytes_total",
        "hubbub_gossip_rejected_total",
        "hubbub_links_up",
        "hubbub_link_dropped_total",
        "hubbub_log_term",
        "hubbub_log_is_leader",
        "hubbub_log_elections_total",
        "hubbub_log_leader_changes_total",
        "hubbub_log_replication_lag_entries",
        "hubbub_log_commit_seconds_bucket",
        "hubbub_log_failed_entries_total",
    ] {
        assert!(
            row.iter()
                .any(|q| metric_names(&q.2).iter().any(|n| n == family)),
            "the Cluster row does not query {family}"
        );
    }
    for (_, panel, expr, legend) in &row {
        assert!(
            expr.contains("instance=~\"$instance\"") && expr.contains("by (instance"),
            "{panel}: {expr} is not per node or ignores the Node selector"
        );
        assert!(
            legend.contains("{{instance}}"),
            "{panel}: legend {legend:?} does not name the node"
        );
    }
}
