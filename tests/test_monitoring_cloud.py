"""Cloud Monitoring's policies and dashboard: made from the rules, applied by `make monitoring`.

The files are checked for the fields Cloud Monitoring requires and against the rules
they come from; `make monitoring` runs with the recording fake gcloud on PATH
(tests/fake_gcloud.py) and the exact calls are compared.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from monitoring import cloud
from monitoring import rules as rulefiles
from tests.fake_gcloud import PROJECT, REPO_ROOT, needs_make

ALERTS = [r for r in rulefiles.rules(rulefiles.load()) if r.alert]
OUT = REPO_ROOT / "out" / "monitoring"
WHERE = f"--project={PROJECT}"


def policy_file(name: str) -> Path:
    return OUT / "policies" / f"{name}.json"


# --- the generated files ------------------------------------------------------------------


def test_the_files_in_monitoring_cloud_are_what_the_rules_make_now():
    assert cloud.stale() == [], "run `make monitoring-files` and commit monitoring/cloud/"


def test_a_changed_or_leftover_file_is_reported_stale(tmp_path):
    cloud.write(tmp_path)
    assert cloud.stale(tmp_path) == []
    (tmp_path / "policies" / "WorkersSaturated.json").write_text("{}")
    (tmp_path / "policies" / "OldAlert.json").write_text("{}")
    assert cloud.stale(tmp_path) == ["policies/OldAlert.json", "policies/WorkersSaturated.json"]
    assert cloud.main(["check", "--out", str(tmp_path)]) == 1


def test_each_alert_becomes_one_policy_with_its_query_wait_severity_and_notes():
    policies = cloud.policies(rulefiles.load(), "penguins-eu")
    assert sorted(policies) == sorted(r.alert for r in ALERTS)
    for rule in ALERTS:
        policy = policies[rule.alert]
        (condition,) = policy["conditions"]
        promql = condition["conditionPrometheusQueryLanguage"]
        assert promql["alertRule"] == rule.alert and promql["ruleGroup"] == rule.group
        assert promql["duration"] == f"{rulefiles.seconds(rule.for_):g}s"
        assert promql["evaluationInterval"] == "30s"
        assert promql["labels"] == {"severity": rule.labels["severity"], "service": "penguins-eu"}
        assert "penguin:" not in promql["query"]  # no recorded series: Cloud Run has none
        assert (
            policy["severity"] == {"page": "CRITICAL", "ticket": "WARNING"}[rule.labels["severity"]]
        )
        content = policy["documentation"]["content"]
        assert rule.annotations["description"] in content and rule.annotations["runbook"] in content
        assert policy["displayName"].endswith("(penguins-eu)")


def test_every_query_reads_only_the_service_it_is_made_for():
    files = cloud.render("penguins-eu")
    queries = [
        c["conditionPrometheusQueryLanguage"]["query"]
        for text in files.values()
        for c in json.loads(text).get("conditions", [])
    ]
    queries += [
        d["timeSeriesQuery"]["prometheusQuery"]
        for t in json.loads(files["dashboard.json"])["mosaicLayout"]["tiles"]
        for d in t["widget"]["xyChart"]["dataSets"]
    ]
    assert queries
    for query in queries:
        selectors = re.findall(r"penguin_\w+(\{[^}]*\})?", query)
        assert selectors and all(s.startswith('{namespace="penguins-eu"') for s in selectors), query


def test_scoping_adds_the_namespace_to_every_selector_and_leaves_strings_alone():
    expr = (
        'sum(rate(penguin_a_total{status=~"[45].."}[5m])) / sum(penguin_b)'
        ' or label_replace(vector(1), "x", "penguin_c", "", "")'
    )
    assert cloud.scope(expr, "svc") == (
        'sum(rate(penguin_a_total{namespace="svc",status=~"[45].."}[5m])) / '
        'sum(penguin_b{namespace="svc"}) or label_replace(vector(1), "x", "penguin_c", "", "")'
    )


def test_the_dashboard_shows_what_an_operator_asks_first():
    board = json.loads(cloud.render()["dashboard.json"])
    recorded = rulefiles.recorded(rulefiles.load())
    plotted = "\n".join(
        d["timeSeriesQuery"]["prometheusQuery"]
        for t in board["mosaicLayout"]["tiles"]
        for d in t["widget"]["xyChart"]["dataSets"]
    )
    wanted = [
        "penguin:requests:rate5m_by_endpoint_status",  # requests
        "penguin:predict_latency_seconds:p50_rate5m",
        "penguin:predict_latency_seconds:p95_rate5m",
        "penguin:predict_latency_seconds:p99_rate5m",
        "penguin:errors:rate5m_by_status",  # errors by type
        "penguin:image_errors:rate5m_by_problem",
        "penguin:instances:count_by_version",  # instances
        "penguin:cold_starts:rate5m",  # cold starts
        "penguin:predictions:rate1h_by_species",  # species mix
    ]
    for name in wanted:
        assert cloud.query(name, recorded, "penguin-api") in plotted, name


def test_generated_policies_and_dashboard_have_every_field_cloud_monitoring_requires():
    for relative, text in cloud.render().items():
        doc = json.loads(text)
        if relative == "dashboard.json":
            assert cloud.dashboard_problems(doc) == []
            assert doc["displayName"] and doc["mosaicLayout"]["tiles"]
            continue
        assert cloud.policy_problems(doc) == [], relative
        assert {"displayName", "documentation", "conditions", "combiner"} <= doc.keys()
        promql = doc["conditions"][0]["conditionPrometheusQueryLanguage"]
        assert promql["query"] and promql["duration"].endswith("s")


def test_the_field_checks_catch_what_cloud_monitoring_would_refuse():
    good = json.loads(cloud.render()["policies/PredictLatencyHigh.json"])
    promql = good["conditions"][0]["conditionPrometheusQueryLanguage"]
    broken = [
        {**good, "displayName": ""},
        {**good, "conditions": good["conditions"] * 2},
        {**good, "severity": "PAGE"},
        {**good, "userLabels": {"Severity": "Page"}},
    ]
    changes = [
        {"duration": "90s"},
        {"evaluationInterval": "45s"},
        {"ruleGroup": "penguin-api"},
        {"query": ""},
    ]
    for change in changes:
        condition = {
            **good["conditions"][0],
            "conditionPrometheusQueryLanguage": {**promql, **change},
        }
        broken.append({**good, "conditions": [condition]})
    assert cloud.policy_problems(good) == []
    for doc in broken:
        assert cloud.policy_problems(doc), doc
    board = json.loads(cloud.render()["dashboard.json"])
    tile = board["mosaicLayout"]["tiles"][1]
    wide = {**board, "mosaicLayout": {"columns": 48, "tiles": [{**tile, "width": 40}]}}
    empty = {**board, "mosaicLayout": {"columns": 48, "tiles": []}}
    assert cloud.dashboard_problems(wide) and cloud.dashboard_problems(empty)


# --- make monitoring -----------------------------------------------------------------------


def monitoring(make, script=None, **variables):
    """`make monitoring` with this interpreter and the recording gcloud."""
    return make("monitoring", script=script, PYTHON=sys.executable, PROJECT_ID=PROJECT, **variables)


def creates() -> list[list[str]]:
    return [
        ["alpha", "monitoring", "policies", "create", WHERE, f"--policy-from-file={policy_file(n)}"]
        for n in sorted(r.alert for r in ALERTS)
    ]


def relative(call: list[str]) -> list[str]:
    """A call with the output folder written as in creates() (make runs in the repository)."""
    return [a.replace("=out/monitoring/", f"={OUT}/") for a in call]


@needs_make
def test_make_monitoring_creates_every_policy_and_the_dashboard_in_a_new_project(make):
    run = monitoring(make)
    assert run.returncode == 0, run.stderr
    board = OUT / "dashboard.json"
    assert [relative(c) for c in run.calls] == [
        ["monitoring", "policies", "list", WHERE, "--format=json"],
        *creates(),
        ["monitoring", "dashboards", "list", WHERE, "--format=json"],
        ["monitoring", "dashboards", "create", WHERE, f"--config-from-file={board}"],
    ]
    assert "notificationChannels" not in json.loads(policy_file("PredictLatencyHigh").read_text())


@needs_make
def test_a_second_run_updates_the_same_policies_and_dashboard_and_notifies_by_email(make):
    policies = cloud.policies(rulefiles.load(), "penguin-api")
    existing = [
        {"name": f"projects/{PROJECT}/alertPolicies/{i}", "displayName": p["displayName"]}
        for i, p in enumerate(policies.values())
    ]
    channel = f"projects/{PROJECT}/notificationChannels/42"
    board = {
        "name": f"projects/{PROJECT}/dashboards/7",
        "displayName": "Penguin API (penguin-api)",
        "etag": "e1",
    }
    script = [
        {"match": ["monitoring", "policies", "list"], "stdout": json.dumps(existing)},
        {
            "match": ["beta", "monitoring", "channels", "list"],
            "stdout": json.dumps(
                [
                    {
                        "name": channel,
                        "type": "email",
                        "labels": {"email_address": "oncall@example.org"},
                    }
                ]
            ),
        },
        {"match": ["monitoring", "dashboards", "list"], "stdout": json.dumps([board])},
    ]
    run = monitoring(make, script=script, NOTIFY_EMAIL="oncall@example.org")
    assert run.returncode == 0, run.stderr
    names = {p["displayName"]: p["name"] for p in existing}
    updates = [
        ["alpha", "monitoring", "policies", "update", names[policies[n]["displayName"]], WHERE,
         f"--policy-from-file={policy_file(n)}"]
        for n in sorted(policies)
    ]  # fmt: skip
    assert [relative(c) for c in run.calls] == [
        ["beta", "monitoring", "channels", "list", WHERE, "--format=json"],
        ["monitoring", "policies", "list", WHERE, "--format=json"],
        *updates,
        ["monitoring", "dashboards", "list", WHERE, "--format=json"],
        ["monitoring", "dashboards", "update", board["name"], WHERE,
         f"--config-from-file={OUT / 'dashboard.json'}"],
    ]  # fmt: skip
    for name in policies:
        assert json.loads(policy_file(name).read_text())["notificationChannels"] == [channel]
    assert json.loads((OUT / "dashboard.json").read_text())["etag"] == "e1"


@needs_make
def test_a_new_email_gets_a_notification_channel_first(make):
    channel = f"projects/{PROJECT}/notificationChannels/43"
    script = [
        {
            "match": ["beta", "monitoring", "channels", "create"],
            "stdout": json.dumps({"name": channel}),
        }
    ]
    run = monitoring(make, script=script, NOTIFY_EMAIL="new@example.org")
    assert run.returncode == 0, run.stderr
    assert run.calls[1] == [
        "beta", "monitoring", "channels", "create", WHERE, "--type=email",
        "--display-name=penguin-api on-call (new@example.org)",
        "--channel-labels=email_address=new@example.org", "--format=json",
    ]  # fmt: skip
    assert json.loads(policy_file("WorkersSaturated").read_text())["notificationChannels"] == [
        channel
    ]


@needs_make
def test_make_monitoring_stops_at_the_first_gcloud_failure_and_says_why(make):
    script = [
        {
            "match": ["alpha", "monitoring", "policies", "create"],
            "stderr": "PERMISSION_DENIED\n",
            "exit": 1,
        }
    ]
    run = monitoring(make, script=script)
    assert run.returncode != 0
    assert "PERMISSION_DENIED" in run.stderr
    assert [c[:4] for c in run.calls] == [
        ["monitoring", "policies", "list", WHERE],
        ["alpha", "monitoring", "policies", "create"],
    ]


@needs_make
def test_make_monitoring_without_project_id_calls_no_gcloud(make):
    run = make("monitoring", PYTHON=sys.executable)
    assert run.returncode != 0
    assert "PROJECT_ID is not set" in run.stderr
    assert run.calls == []


@needs_make
def test_make_monitoring_for_another_service_names_and_scopes_its_policies(make):
    service = "penguins-eu"
    run = monitoring(make, SERVICE=service)
    assert run.returncode == 0, run.stderr
    policy = json.loads(policy_file("PredictLatencyHigh").read_text())
    assert policy["displayName"] == f"penguin_api_alerts/PredictLatencyHigh ({service})"
    assert (
        f'namespace="{service}"'
        in policy["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
    )
