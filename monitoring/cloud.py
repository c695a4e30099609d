"""Cloud Monitoring alert policies and dashboard, generated from the rule files.

Each alerting rule becomes one policy with a PromQL condition: the rule's expression with
every recorded series written out (Cloud Run has no rule evaluator), scoped to one Cloud
Run service by the `namespace` label the Managed Service for Prometheus sidecar adds, and
its `for`, labels and annotations carried over. Every dashboard chart plots recorded
series the same way. The copies in monitoring/cloud/ are for reading and review;
tests/test_monitoring_cloud.py fails when they no longer match the rules.

    python -m monitoring.cloud write [--service penguin-api] [--out monitoring/cloud]
    python -m monitoring.cloud check          # exit 1 when monitoring/cloud/ is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from monitoring import rules as rulefiles

CLOUD_DIR = Path(__file__).resolve().parent / "cloud"
DEFAULT_SERVICE = "penguin-api"
SEVERITY = {"page": "CRITICAL", "ticket": "WARNING"}
_COLUMNS = 48
# (title, recorded series plotted, unit); each chart's queries come from the rule files.
CHARTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Requests per second, by endpoint and status",
     ("penguin:requests:rate5m_by_endpoint_status",), "1/s"),
    ("POST /predict latency in the service: p50, p95, p99 (objective: p95 under 0.5 s)",
     ("penguin:predict_latency_seconds:p50_rate5m", "penguin:predict_latency_seconds:p95_rate5m",
      "penguin:predict_latency_seconds:p99_rate5m"), "s"),
    ("Errors per second, by status", ("penguin:errors:rate5m_by_status",), "1/s"),
    ("5xx share of predictions, 5 min and 1 h (objective: under 0.5 % over 30 days)",
     ("penguin:predict_errors:ratio_rate5m", "penguin:predict_errors:ratio_rate1h"), "10^2.%"),
    ("Files refused before inference, per second, by problem",
     ("penguin:image_errors:rate5m_by_problem",), "1/s"),
    ("413/415 share of predictions, 5 min and the usual day",
     ("penguin:upload_refusals:ratio_rate5m", "penguin:upload_refusals:ratio_rate1d_offset1h"),
     "10^2.%"),
    ("Instances serving, by model version; workers", ("penguin:instances:count_by_version",
                                                      "penguin:workers:count"), "1"),
    ("Workers' busy share (requests queue near 1)", ("penguin:workers:busy_ratio_rate5m",),
     "10^2.%"),
    ("Worker starts and cold starts per second", ("penguin:worker_starts:rate15m",
                                                  "penguin:cold_starts:rate5m"), "1/s"),
    ("Species mix: answers per second over the last hour", (
        "penguin:predictions:rate1h_by_species",), "1/s"),
    ("No-penguin share: last hour and the usual day", (
        "penguin:no_penguin:ratio_rate1h", "penguin:no_penguin:ratio_rate1d_offset1h"), "10^2.%"),
)  # fmt: skip
_SELECTOR = r"(?P<x>penguin_\w+)(?P<matchers>\{(?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*\})?"
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_USER_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_USER_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def scope(expr: str, service: str) -> str:
    """`expr` with namespace="`service`" added to every metric selector of the service."""

    def one(match: re.Match[str]) -> str:
        matchers = (match.group("matchers") or "{}")[1:-1]
        joined = f'namespace="{service}"' + (f",{matchers}" if matchers else "")
        return f"{match.group('x')}{{{joined}}}"

    return rulefiles._sub_outside_strings(rf"(?<![\w:]){_SELECTOR}", expr, one)


def query(expr: str, recorded: dict[str, str], service: str) -> str:
    """The PromQL Cloud Monitoring runs for `expr`: recordings inlined, scoped to `service`."""
    return scope(rulefiles.inline(expr, recorded), service)


def policy(rule: rulefiles.Rule, recorded: dict[str, str], service: str) -> dict[str, Any]:
    """The alert policy for one alerting rule."""
    severity = rule.labels["severity"]
    where = f"{rule.group}/{rule.alert}"
    notes = rule.annotations
    content = (
        f"**{notes['summary']}**\n\n{notes['description']}\n\n"
        f"Severity: {severity}. Rule `{where}` in monitoring/rules/alerts.rules.yml; "
        f"what it means and what to do: {notes['runbook']}."
    )
    condition: dict[str, Any] = {
        "query": query(rule.expr, recorded, service),
        "evaluationInterval": f"{rulefiles.seconds(rule.interval):g}s",
        "labels": {**rule.labels, "service": service},
        "ruleGroup": rule.group,
        "alertRule": rule.alert,
        # The metrics exist only once the sidecar has sent them: allow policies first.
        "disableMetricValidation": True,
    }
    if rule.for_:
        condition["duration"] = f"{rulefiles.seconds(rule.for_):g}s"
    return {
        "displayName": f"{where} ({service})",
        "documentation": {
            "content": content,
            "mimeType": "text/markdown",
            "subject": f"[{severity}] {service}: {notes['summary']}"[:255],
        },
        "userLabels": {"service": service, "severity": severity},
        "severity": SEVERITY[severity],
        "combiner": "OR",
        "conditions": [
            {"displayName": notes["summary"], "conditionPrometheusQueryLanguage": condition}
        ],
        "alertStrategy": {"autoClose": "1800s"},
        "enabled": True,
    }


def policies(groups: list[dict[str, Any]], service: str) -> dict[str, dict[str, Any]]:
    """Every alert's policy, by alert name."""
    recorded = rulefiles.recorded(groups)
    return {r.alert: policy(r, recorded, service) for r in rulefiles.rules(groups) if r.alert}


def dashboard(groups: list[dict[str, Any]], service: str) -> dict[str, Any]:
    """The dashboard: two charts a row, each plotting recorded series from the rules."""
    recorded = rulefiles.recorded(groups)
    tiles = []
    for i, (title, series, unit) in enumerate(CHARTS):
        for name in series:
            if name not in recorded:
                raise KeyError(f"chart {title!r} plots {name}, which no rule records")
        data_sets = [
            {
                "timeSeriesQuery": {
                    "prometheusQuery": query(name, recorded, service),
                    "unitOverride": unit,
                },
                "plotType": "LINE",
                "targetAxis": "Y1",
            }
            for name in series
        ]
        tiles.append(
            {
                "xPos": (i % 2) * (_COLUMNS // 2),
                "yPos": (i // 2) * 16,
                "width": _COLUMNS // 2,
                "height": 16,
                "widget": {"title": title, "xyChart": {"dataSets": data_sets}},
            }
        )
    return {
        "displayName": f"Penguin API ({service})",
        "mosaicLayout": {"columns": _COLUMNS, "tiles": tiles},
        "labels": {"service": service},
    }


def policy_problems(doc: dict[str, Any]) -> list[str]:
    """What Cloud Monitoring would refuse in an alert policy (empty when none)."""
    problems = []
    if not 0 < len(doc.get("displayName", "")) <= 512:
        problems.append("displayName must be 1 to 512 characters")
    if doc.get("combiner") not in ("OR", "AND", "AND_WITH_MATCHING_RESOURCE"):
        problems.append("combiner missing or unknown")
    if doc.get("severity") not in ("CRITICAL", "ERROR", "WARNING"):
        problems.append("severity must be CRITICAL, ERROR or WARNING")
    documentation = doc.get("documentation", {})
    if documentation.get("mimeType") != "text/markdown" or not documentation.get("content"):
        problems.append("documentation needs content and mimeType text/markdown")
    if len(documentation.get("content", "").encode()) > 10240:
        problems.append("documentation content over 10240 bytes")
    if len(documentation.get("subject", "")) > 255:
        problems.append("documentation subject over 255 characters")
    for key, value in doc.get("userLabels", {}).items():
        if not (_USER_LABEL_KEY.match(key) and _USER_LABEL_VALUE.match(value)):
            problems.append(f"user label {key}={value} is not lowercase letters, digits, _ or -")
    conditions = doc.get("conditions", [])
    if len(conditions) != 1:  # a PromQL condition must be a policy's only one
        return [*problems, "a PromQL policy has exactly one condition"]
    if not conditions[0].get("displayName"):
        problems.append("the condition needs a displayName")
    promql = conditions[0].get("conditionPrometheusQueryLanguage", {})
    if not promql.get("query"):
        problems.append("conditionPrometheusQueryLanguage.query is required")
    interval = _secs(promql.get("evaluationInterval", "30s"))
    if interval is None or interval <= 0 or interval % 30:
        problems.append("evaluationInterval must be a positive multiple of 30 s")
    wait = _secs(promql.get("duration", "0s"))
    if wait is None or wait % 60 or wait > 86400:
        problems.append("duration must be whole minutes, at most 24 h")
    for key in ("alertRule", "ruleGroup", *promql.get("labels", {})):
        name = promql.get(key, "") if key in ("alertRule", "ruleGroup") else key
        if not _LABEL_NAME.match(name):
            problems.append(f"{name!r} is not a valid Prometheus label name")
    return problems


def dashboard_problems(doc: dict[str, Any]) -> list[str]:
    """What Cloud Monitoring would refuse in the dashboard (empty when none)."""
    problems = [] if doc.get("displayName") else ["displayName is required"]
    layout = doc.get("mosaicLayout", {})
    columns = layout.get("columns", 0)
    if not 1 <= columns <= 48:
        problems.append("mosaicLayout.columns must be 1 to 48")
    for tile in layout.get("tiles", []):
        title = tile.get("widget", {}).get("title", "")
        if tile.get("width", 0) <= 0 or tile.get("height", 0) <= 0:
            problems.append(f"tile {title!r}: width and height must be positive")
        if tile.get("xPos", 0) + tile.get("width", 0) > columns:
            problems.append(f"tile {title!r} is wider than the layout")
        data_sets = tile.get("widget", {}).get("xyChart", {}).get("dataSets", [])
        if not title or not data_sets:
            problems.append(f"tile {title!r}: a title and at least one data set are required")
        for data in data_sets:
            if not data.get("timeSeriesQuery", {}).get("prometheusQuery"):
                problems.append(f"tile {title!r}: a data set without a PromQL query")
    if not layout.get("tiles"):
        problems.append("the dashboard has no tiles")
    return problems


def _secs(text: str) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", text)
    return float(match.group(1)) if match else None


def render(service: str = DEFAULT_SERVICE) -> dict[str, str]:
    """Every generated file's path (relative to its folder) and JSON text, checked."""
    groups = rulefiles.load()
    files = {}
    for name, doc in policies(groups, service).items():
        if problems := policy_problems(doc):
            raise ValueError(f"policy {name}: {'; '.join(problems)}")
        files[f"policies/{name}.json"] = json.dumps(doc, indent=2) + "\n"
    board = dashboard(groups, service)
    if problems := dashboard_problems(board):
        raise ValueError(f"dashboard: {'; '.join(problems)}")
    files["dashboard.json"] = json.dumps(board, indent=2) + "\n"
    return files


def write(out: Path, service: str = DEFAULT_SERVICE) -> list[Path]:
    """Write the policies and dashboard under `out`, removing policies no rule makes now."""
    files = render(service)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    for stale in (out / "policies").glob("*.json"):
        if f"policies/{stale.name}" not in files:
            stale.unlink()
    paths = []
    for relative, text in files.items():
        path = out / relative
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def stale(out: Path = CLOUD_DIR, service: str = DEFAULT_SERVICE) -> list[str]:
    """Files under `out` that differ from what the rules generate now (missing, extra, old)."""
    files = render(service)
    present = {f"policies/{p.name}" for p in (out / "policies").glob("*.json")}
    present |= {"dashboard.json"} if (out / "dashboard.json").exists() else set()
    changed = [
        r for r in files if r not in present or (out / r).read_text(encoding="utf-8") != files[r]
    ]
    return sorted(changed + sorted(present - files.keys()))


def main(argv: list[str] | None = None) -> int:
    """`write` the files, or `check` that monitoring/cloud/ is up to date."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.cloud", description=__doc__)
    parser.add_argument("command", choices=("write", "check"))
    parser.add_argument("--service", default=DEFAULT_SERVICE)
    parser.add_argument("--out", type=Path, default=CLOUD_DIR)
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write(args.out, args.service):
            print(path)
        return 0
    if changed := stale(args.out, args.service):
        print(f"{args.out} is stale ({', '.join(changed)}): run make monitoring-files",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
