#!/usr/bin/env python3
"""The Grafana dashboard against a running Prometheus (called by ci/prometheus.sh).

    check_dashboard.py DASHBOARD.json PROM_URL CLUSTER_INSTANCES METRICS.txt...

Every metric a query names exists in one of the METRICS.txt (/metrics of the
scraped nodes), there is a Cluster row, and every query returns data from
Prometheus: at least one series with a number (not NaN), and on the Cluster
row one series per instance of CLUSTER_INSTANCES (comma-separated). Grafana's
variables become: $instance -> all nodes, $__rate_interval -> 5m (the whole
run: the traffic was a single burst, which a real 4 s rate window may already
have left). Exits non-zero, naming panel and query, on the first kind of
failure found.
"""
import json, math, re, sys, time, urllib.error, urllib.parse, urllib.request

dash_path, prom, cluster = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
with open(dash_path) as f:
    dash = json.load(f)  # fails on invalid JSON
assert any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" for i in dash.get("__inputs", [])), \
    "no DS_PROMETHEUS datasource input"
assert dash.get("schemaVersion", 0) >= 36, "schemaVersion < 36"
families = set()
for path in sys.argv[4:]:
    for line in open(path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families.add(m.group(1))
# (row, panel title, expression); a row's panels follow it (or sit inside it when collapsed).
exprs, rows = [], []
def walk(panels, row):
    for p in panels:
        if p.get("type") == "row":
            row = p.get("title", "?")
            rows.append(row)
        exprs.extend((row, p.get("title", "?"), t["expr"]) for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []), row)
walk(dash["panels"], "")
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else str(q or "")
    # label_values(METRIC, LABEL) is Grafana's, not PromQL: its metric must have series.
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
    exprs.append(("templating", v["name"], m.group(1) if m else q))
assert exprs, "no queries in the dashboard"
assert "Cluster" in rows, f"no Cluster row (rows: {rows})"
missing, used = [], set()
for row, title, e in exprs:
    for name in re.findall(r"hubbub_[a-z_]+", e):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in families:
            used.add(name)
        elif base != name and base in families:
            used.add(base)
        else:
            missing.append(f"{name} (panel {title!r})")
if missing:
    sys.exit("dashboard uses metrics /metrics does not have: " + ", ".join(sorted(set(missing))))

def promql(e):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "5m").replace("$__range", "5m")
    e = e.replace("${instance}", ".*").replace("$instance", ".*")
    assert "$" not in e, f"a Grafana variable this check does not know in {e!r}"
    return e

def run(e):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": e})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            d = json.load(r)
    except urllib.error.HTTPError as err:  # 400: not PromQL
        sys.exit(f"Prometheus refused {e!r}: {err.read().decode()}")
    assert d["status"] == "success", d
    return d["data"]["result"]

def verdict(row, e):
    res = run(e)
    if not res:
        return "no series"
    if all(math.isnan(float(r["value"][1])) for r in res):
        return "only NaN"
    if row == "Cluster":
        lacking = cluster - {r["metric"].get("instance") for r in res}
        if lacking:
            return "no series for " + ", ".join(sorted(lacking))
    return None

# Scrapes land at their own moments: what lacks data now is asked again, for 20 s.
pending = [(row, title, promql(e)) for row, title, e in exprs]
deadline = time.monotonic() + 20
while True:
    failed = [(row, title, e, why) for row, title, e in pending if (why := verdict(row, e))]
    if not failed or time.monotonic() > deadline:
        break
    pending = [(row, title, e) for row, title, e, _ in failed]
    time.sleep(0.5)
if failed:
    sys.exit("dashboard queries without data in Prometheus:\n" +
             "\n".join(f"  [{row}] {title!r}: {why}: {e}" for row, title, e, why in failed))
per_row = {}
for row, _, _ in exprs:
    per_row[row] = per_row.get(row, 0) + 1
print(f"{len(exprs)} queries over {len(used)} metric families, each with data in Prometheus; "
      "queries per row: " + ", ".join(f"{r or 'top'} {n}" for r, n in per_row.items()))
