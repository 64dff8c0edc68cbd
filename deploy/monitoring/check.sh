#!/usr/bin/env bash
# Checks the monitoring assets in this directory:
#   1. promtool check rules alerts.yaml      (syntax, templates)
#   2. promtool test rules alerts_test.yaml  (alert unit tests)
#   3. grafana-dashboard.json: valid JSON, schemaVersion 39, datasource, job
#      and instance variables, every panel has a title and a sane gridPos,
#      every panel expression is filtered by $job, and every PromQL
#      expression (panel targets, variable queries, and alert
#      rules when PyYAML is present) uses only known metric names/functions.
# Exits non-zero if any step fails. Needs promtool (Debian: apt-get install
# prometheus) and python3. Run from anywhere.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v promtool >/dev/null 2>&1; then
    echo "check.sh: promtool not found (Debian/Ubuntu: apt-get install prometheus)" >&2
    exit 2
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "check.sh: python3 not found" >&2
    exit 2
fi

echo "== promtool check rules alerts.yaml"
promtool check rules alerts.yaml

echo "== promtool test rules alerts_test.yaml"
promtool test rules alerts_test.yaml

echo "== dashboard and expression lint"
python3 - grafana-dashboard.json alerts.yaml <<'PY'
import json
import re
import sys

dash_path, rules_path = sys.argv[1], sys.argv[2]

# Metrics the gateway exposes. Histograms also yield _bucket/_sum/_count.
COUNTERS_GAUGES = {
    "up",
    "bucketftp_sessions_active",
    "bucketftp_sessions_rejected_total",
    "bucketftp_logins_total",
    "bucketftp_login_failures_counted_total",
    "bucketftp_received_bytes_total",
    "bucketftp_sent_bytes_total",
    "bucketftp_transfers_in_flight",
    "bucketftp_transfers_total",
    "bucketftp_multipart_uploads_total",
    "bucketftp_multipart_parts_total",
    "bucketftp_storage_errors_total",
    "bucketftp_commands_total",
    "bucketftp_ready",
    "bucketftp_memory_budget_bytes",
    "bucketftp_memory_budget_in_use_bytes",
    "bucketftp_memory_budget_waits_total",
    "bucketftp_memory_budget_refusals_total",
    # libunftp 0.24's, as /metrics serves them (src/metrics.rs
    # LIBUNFTP_NAMES renames or leaves out the rest)
    "ftp_sessions_started_total",
    "ftp_command_total",
    "ftp_reply_total",
    "ftp_error_total",
    "ftp_sent_bytes_total",
    "ftp_received_bytes_total",
    "ftp_transferred_total",
}
HISTOGRAMS = {
    "bucketftp_transfer_duration_seconds",
    "bucketftp_transfer_size_bytes",
    "bucketftp_storage_operation_duration_seconds",
}
KNOWN = set(COUNTERS_GAUGES)
for h in HISTOGRAMS:
    KNOWN |= {h + "_bucket", h + "_sum", h + "_count"}

FUNCTIONS = {
    # aggregation operators
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group",
    # functions
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "histogram_count", "histogram_sum",
    "histogram_fraction", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10",
    "log2", "max_over_time", "min_over_time", "minute", "month",
    "predict_linear", "present_over_time", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "stddev_over_time", "stdvar_over_time", "sum_over_time", "time",
    "timestamp", "vector", "year",
}
KEYWORDS = {"and", "or", "unless", "bool", "group_left", "group_right",
            "Inf", "NaN", "inf", "nan"}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
TOKEN = re.compile(
    r'(?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)'
    r'|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)')


def lint(expr):
    """Problems with one PromQL expression (empty list = fine)."""
    problems = []
    s = STRING.sub('""', expr)
    s = re.sub(r'\$\{[^}]*\}|\$\w+|\[\[\w+\]\]', ' ', s)   # Grafana variables
    s = re.sub(r'\[[^\]]*\]', ' ', s)                      # range / subquery
    s = re.sub(r'\{[^}]*\}', ' ', s)                       # label matchers
    s = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)',
               ' ', s)                                    # label lists
    s = re.sub(r'\boffset\s+-?[0-9a-z]+', ' ', s)
    s = re.sub(r'@\s*(start\(\)|end\(\)|[0-9.]+)', ' ', s)
    metrics = []
    for m in TOKEN.finditer(s):
        name = m.group("id")
        if name is None:
            continue
        is_call = re.match(r'\s*\(', s[m.end():]) is not None
        if is_call:
            if name not in FUNCTIONS:
                problems.append(f"unknown function {name!r}")
        elif name in KEYWORDS:
            continue
        elif name in KNOWN:
            metrics.append(name)
        else:
            problems.append(f"unknown metric {name!r}")
    if not metrics and not problems:
        problems.append("references no known metric")
    return problems


errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


try:
    with open(dash_path) as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    print(f"{dash_path}: not valid JSON: {e}", file=sys.stderr)
    sys.exit(1)

if dash.get("schemaVersion") != 39:
    err(dash_path, f"schemaVersion is {dash.get('schemaVersion')!r}, want 39")
if not dash.get("uid") or not dash.get("title"):
    err(dash_path, "dashboard needs a uid and a title")

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    err(dash_path, "needs a `datasource` variable of type datasource, query prometheus")
inst = variables.get("instance")
if not inst:
    err(dash_path, "needs an `instance` variable")
if not variables.get("job"):
    err(dash_path, "needs a `job` variable")
for name, v in variables.items():
    if v.get("type") != "query":
        continue
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r'\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*', q)
    inner = m.group(1) if m else q
    for p in lint(inner):
        err(f"variable {name}", f"{p} in {q!r}")

panels = []
for p in dash.get("panels", []):
    panels.append(p)
    panels.extend(p.get("panels", []))      # panels inside collapsed rows
if not panels:
    err(dash_path, "no panels")

ids = set()
cells = {}
for p in panels:
    title = p.get("title")
    where = f"panel {p.get('id')} {title!r}"
    if not isinstance(title, str) or not title.strip():
        err(where, "has no title")
    if p.get("id") in ids:
        err(where, "duplicate panel id")
    ids.add(p.get("id"))
    gp = p.get("gridPos")
    if not isinstance(gp, dict) or not all(isinstance(gp.get(k), int) for k in "xywh"):
        err(where, f"gridPos must have integer x, y, w, h (got {gp!r})")
    elif gp["x"] < 0 or gp["y"] < 0 or gp["w"] < 1 or gp["h"] < 1 or gp["x"] + gp["w"] > 24:
        err(where, f"gridPos out of the 24-column grid: {gp}")
    else:
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                if (x, y) in cells:
                    err(where, f"gridPos overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = where
            else:
                continue
            break
    if p.get("type") == "row":
        continue
    targets = p.get("targets") or []
    if not targets:
        err(where, "has no targets")
    for t in targets:
        expr = t.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            err(where, f"target {t.get('refId')} has no expr")
            continue
        for problem in lint(expr):
            err(where, f"{problem} in {expr!r}")
        # The job is a variable (filled from bucketftp_ready), never a fixed
        # name: the dashboard then works with any scrape job name.
        if 'job=~"$job"' not in expr:
            err(where, f"expression does not select job=~\"$job\": {expr!r}")

try:
    import yaml
except ImportError:
    yaml = None
    print(f"(PyYAML not installed: skipped the metric-name lint of {rules_path})")
if yaml is not None:
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    n = 0
    for g in rules.get("groups", []):
        for r in g.get("rules", []):
            n += 1
            name = r.get("alert") or r.get("record")
            for problem in lint(r.get("expr", "")):
                err(f"{rules_path} rule {name}", problem)
            if r.get("alert"):
                if not r.get("labels", {}).get("severity"):
                    err(f"{rules_path} rule {name}", "no severity label")
                ann = r.get("annotations", {})
                if not ann.get("summary") or not ann.get("description"):
                    err(f"{rules_path} rule {name}", "needs summary and description annotations")
    print(f"{rules_path}: {n} rules use only known metric names")

if errors:
    for e in errors:
        print(e, file=sys.stderr)
    print(f"FAILED: {len(errors)} problem(s)", file=sys.stderr)
    sys.exit(1)
n_targets = sum(len(p.get("targets") or []) for p in panels)
print(f"{dash_path}: {len(panels)} panels, {n_targets} queries, all OK")
PY

echo "all monitoring checks passed"
