"""The SLO and alert rules in monitoring/rules/, checked and unit-tested with Debian's promtool.

promtool comes with Debian's `prometheus` package (`make monitoring-deps`, which `make
test` runs); without it these tests skip and say so. The same promtool tests also run
against the two derived forms of the rules -- every recording written out in full, as
Cloud Monitoring gets them, and every window shortened, as the end-to-end test runs them
-- so both are shown to fire on exactly the series the rules fire on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import local
from monitoring import rules as rulefiles
from tests.server import REPO_ROOT

MONITORING = REPO_ROOT / "monitoring"
TEST_FILE = MONITORING / "tests" / "alerts.test.yml"
DOCS = REPO_ROOT / "docs" / "monitoring.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of promtool; skip when Debian's prometheus package is not installed."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed: `make monitoring-deps` (apt-get install prometheus)")
    return found


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[rulefiles.Rule]:
    return [r for r in rulefiles.rules(rulefiles.load()) if r.alert]


def test_rule_files_and_the_local_config_pass_promtool_check(promtool):
    rules = run_promtool(promtool, "check", "rules", *rulefiles.RULE_FILES)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run_promtool(promtool, "check", "config", MONITORING / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert_pass(promtool):
    result = run_promtool(promtool, "test", "rules", TEST_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not():
    cases = [
        case
        for test in yaml.safe_load(TEST_FILE.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule.alert]
        assert any(c["exp_alerts"] for c in mine), f"{rule.alert}: no case that fires it"
        assert any(not c["exp_alerts"] for c in mine), f"{rule.alert}: no case that must not"


def test_every_alert_says_what_happened_what_to_look_at_and_how_urgent():
    docs = DOCS.read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", docs, flags=re.M)
    }
    for rule in alert_rules():
        notes = rule.annotations
        assert rule.labels.get("severity") in ("page", "ticket"), rule.alert
        assert notes.get("summary") and "Look first" in notes.get("description", ""), rule.alert
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "docs/monitoring.md" and anchor in headings, rule.alert
        # Cloud Monitoring takes `for` in whole minutes only.
        assert rulefiles.seconds(rule.for_) % 60 == 0, rule.alert


GAUGES = ("penguin_workers", "penguin_model_info")
_STEPS = re.compile(r"^(-?[\d.]+)([+-])([\d.]+)x(\d+)$")


def _per_second_kept(values: str, factor: float) -> str:
    """A counter's promtool values for a clock `factor` times faster, its rates unchanged.

    Time running 60 times faster with the same counts per step would make every rate 60
    times higher; counts (and the seconds a duration counter adds) shrink with the steps.
    """
    out = []
    for token in values.split():
        if token.startswith("_"):
            out.append(token)
        elif match := _STEPS.match(token):
            start, sign, step, times = match.groups()
            out.append(f"{float(start) / factor:g}{sign}{float(step) / factor:g}x{times}")
        else:
            out.append(f"{float(token) / factor:g}")
    return " ".join(out)


def _rerun_tests(promtool: str, tmp_path: Path, groups: list[dict[str, Any]], factor: float = 1):
    """Run the promtool tests against `groups` instead of the rule files, time / `factor`."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rulefiles.write(groups, tmp_path / "rules" / "all.rules.yml")
    spec = yaml.safe_load(TEST_FILE.read_text())
    spec["rule_files"] = ["../rules/all.rules.yml"]
    shrink = lambda d: rulefiles.duration(rulefiles.seconds(d) / factor)  # noqa: E731
    spec["evaluation_interval"] = shrink(spec["evaluation_interval"])
    for test in spec["tests"]:
        test["interval"] = shrink(test["interval"])
        for series in test["input_series"]:
            if factor != 1 and not series["series"].startswith(GAUGES):
                series["values"] = _per_second_kept(series["values"], factor)
        for case in test.get("alert_rule_test", []) + test.get("promql_expr_test", []):
            case["eval_time"] = shrink(case["eval_time"])
    path = tmp_path / "tests" / "alerts.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return run_promtool(promtool, "test", "rules", path)


def test_alerts_with_every_recording_written_out_fire_on_the_same_series(promtool, tmp_path):
    # What Cloud Monitoring runs: the alert expressions with no recorded series left in them.
    groups = rulefiles.load()
    recorded = rulefiles.recorded(groups)
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = rulefiles.inline(rule["expr"], recorded)
                assert not any(name in rule["expr"] for name in recorded), rule["alert"]
    result = _rerun_tests(promtool, tmp_path, groups)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_with_every_window_60_times_shorter_fire_as_the_rules_do(promtool, tmp_path):
    # What the end-to-end test runs, checked against the same cases with time 60x faster.
    result = _rerun_tests(promtool, tmp_path, rulefiles.compress(rulefiles.load(), 60), 60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compressing_changes_only_durations():
    groups = rulefiles.load()
    short = rulefiles.compress(groups, 30)
    digits = re.compile(r"\d+(?:ms|[smhdwy])\b")
    for before, after in zip(rulefiles.rules(groups), rulefiles.rules(short), strict=True):
        assert digits.sub("T", before.expr) == digits.sub("T", after.expr), before.name
        assert (before.labels, before.annotations) == (after.labels, after.annotations)
    fast = next(r for r in rulefiles.rules(short) if r.alert == "PredictErrorBudgetBurnFast")
    assert fast.for_ == "4s" and fast.interval == "1s"
    assert "[10s]" in rulefiles.inline(
        "penguin:predict_errors:ratio_rate5m", rulefiles.recorded(short)
    )


def test_make_monitor_runs_the_config_shipped_in_monitoring():
    shipped = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert shipped == local.prometheus_config("127.0.0.1:8080", [local.RULES_GLOB])
