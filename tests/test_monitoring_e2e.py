"""End to end: the real service, a real Prometheus with the same rules, alerts that fire and clear.

Gunicorn serves the shipped model on a free loopback port; Debian's Prometheus scrapes it
every second with the rules of monitoring/rules/ compressed 30 times (monitoring/rules.py:
every window, offset, `for` and interval divided by 30; expressions and thresholds
unchanged -- tests/test_monitoring_rules.py shows the compressed rules fire on the same
cases). The tests drive the service into the states two alerts are written for and read
Prometheus's own /api/v1/alerts until each alert fires, then until it clears. Every wait
polls with a deadline.

With Debian's Chromium, the refusals test also opens Prometheus's alerts page while the
alert fires; MONITORING_SCREENSHOT=path keeps that picture (`make monitoring-screenshot`).
The last test runs what `make monitor` runs, with the rules as shipped, until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from monitoring import local
from monitoring import rules as rulefiles
from tests.server import REPO_ROOT, Server, clean_env, free_port, running_server
from tests.webpage import CHROMIUM, CHROMIUM_ARGS

FACTOR = 30  # 5 min -> 10 s, 1 h -> 2 min, `for: 10m` -> 20 s
FIRE_WITHIN = 150.0  # seconds; a busy machine slows the service, not Prometheus's clock
CLEAR_WITHIN = 150.0
NOT_AN_IMAGE = b"%PDF-1.4 this is a document, not a photo\n" * 20


class Stack:
    """The service and the Prometheus that watches it."""

    def __init__(self, server: Server, prometheus: local.Prometheus) -> None:
        self.server = server
        self.prometheus = prometheus

    def states(self, alertname: str) -> set[str]:
        """The states (pending, firing) of `alertname`'s active alerts; empty when clear."""
        alerts = self.prometheus.alerts()
        return {a["state"] for a in alerts if a["labels"]["alertname"] == alertname}

    def drive_until(
        self, action: Callable[[], Any], done: Callable[[], bool], timeout: float, what: str
    ) -> float:
        """Repeat `action` until `done()` (checked about once a second); seconds it took."""
        started = time.monotonic()
        checked = 0.0
        while time.monotonic() - started < timeout:
            action()
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                if done():
                    return checked - started
        raise AssertionError(
            f"not {what} after {timeout:.0f} s; alerts: {self.prometheus.alerts()}\n"
            f"{self.prometheus.logs()[-2000:]}"
        )


def _metric(server: Server, name: str) -> float:
    text = requests.get(server.url("/metrics"), timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def stack(model_dir: Path) -> Iterator[Stack]:
    """The service (2 workers) and Prometheus with the compressed rules, both ready."""
    if not (shutil.which(local.PROMETHEUS_BINARY) or shutil.which("prometheus")):
        pytest.skip("prometheus not installed: `make monitoring-deps` (apt-get install prometheus)")
    with (
        # Prometheus's pages show the rule file's path: a plain one says what it is.
        tempfile.TemporaryDirectory(prefix="penguin-monitoring-") as tmp,
        running_server(workers=2, model_dir=model_dir) as server,
    ):
        workdir = Path(tmp)
        rule_file = rulefiles.write(
            rulefiles.compress(rulefiles.load(), FACTOR), workdir / f"rules-{FACTOR}x-shorter.yml"
        )
        # Both workers loaded before the first scrape: a start-up is not a restart.
        server.wait_for(lambda: _metric(server, "penguin_workers") == 2, 60, "both workers up")
        config = local.prometheus_config(f"127.0.0.1:{server.port}", [str(rule_file)], "1s", "1s")
        with local.running_prometheus(config, workdir) as prometheus:
            prometheus.wait_ready(timeout=60)
            yield Stack(server, prometheus)


def test_prometheus_scrapes_the_service_and_loads_every_rule(stack):
    target = stack.prometheus.targets()[0]
    assert target["health"] == "up" and target["labels"]["job"] == "penguin-api"
    expected = {r.name for r in rulefiles.rules(rulefiles.load())}
    assert stack.prometheus.rule_names() == expected
    assert stack.prometheus.alerts() == []


def test_a_burst_of_undecodable_uploads_fires_the_refusals_alert_which_clears_after(
    stack, small_jpeg, tmp_path
):
    server = stack.server

    def upload(data: bytes, name: str) -> int:
        files = {"file": (name, data, "image/jpeg")}
        return requests.post(server.url("/predict"), files=files, timeout=30).status_code

    # A normal morning first: the share of refusals is the jump's baseline.
    assert all(upload(small_jpeg, "ok.jpg") == 200 for _ in range(40))
    assert "UploadRefusalsHigh" not in {a["labels"]["alertname"] for a in stack.prometheus.alerts()}

    # A client starts sending PDFs named .jpg: 415 for each.
    def junk() -> None:
        assert upload(NOT_AN_IMAGE, "scan.jpg") == 415
        time.sleep(0.2)  # pace: about 4 a second, far above the traffic floor

    fired_after = stack.drive_until(
        junk, lambda: "firing" in stack.states("UploadRefusalsHigh"), FIRE_WITHIN, "firing"
    )
    alerts = stack.prometheus.alerts()
    alert = next(a for a in alerts if a["labels"]["alertname"] == "UploadRefusalsHigh")
    assert alert["labels"]["severity"] == "ticket"
    assert float(alert["value"]) > 0.1  # the 413/415 share the rule saw
    _look_at_the_alerts_page(stack, tmp_path)

    # The client is fixed: photos again, and the alert clears on its own.
    def photo() -> None:
        assert upload(small_jpeg, "ok.jpg") == 200
        time.sleep(0.2)

    cleared_after = stack.drive_until(
        photo, lambda: not stack.states("UploadRefusalsHigh"), CLEAR_WITHIN, "cleared"
    )
    firing = {a["labels"]["alertname"] for a in stack.prometheus.alerts()}
    assert not firing & {"PredictErrorBudgetBurnFast", "PredictLatencyHigh"}
    print(
        f"UploadRefusalsHigh fired after {fired_after:.0f} s, cleared {cleared_after:.0f} s later"
    )


def test_workers_killed_again_and_again_fire_the_restarts_alert_which_clears_after(stack):
    server = stack.server
    kills: list[float] = []

    def kill_a_worker() -> None:
        # One kill every 4 s, each only once the previous replacement has loaded its model.
        if kills and time.monotonic() - kills[-1] < 4:
            time.sleep(0.2)
            return
        if _metric(server, "penguin_workers") < 2:
            return
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        kills.append(time.monotonic())

    stack.drive_until(
        kill_a_worker,
        lambda: "firing" in stack.states("WorkerRestartsFrequent"),
        FIRE_WITHIN,
        "firing",
    )
    server.wait_for(lambda: _metric(server, "penguin_workers") == 2, 60, "workers replaced")
    stack.drive_until(
        lambda: time.sleep(0.5),
        lambda: not stack.states("WorkerRestartsFrequent"),
        CLEAR_WITHIN,
        "cleared",
    )
    # The service answered throughout: Gunicorn replaced every killed worker.
    assert requests.get(server.url("/ready"), timeout=10).status_code == 200


def _look_at_the_alerts_page(stack: Stack, tmp_path: Path) -> None:
    """Open Prometheus's alerts page in Chromium: it must show the alert firing."""
    if not CHROMIUM.exists():
        return
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    keep = os.environ.get("MONITORING_SCREENSHOT")
    path = Path(keep) if keep else tmp_path / "prometheus-alerts.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{stack.prometheus.url}/classic/alerts", wait_until="networkidle")
            row = page.get_by_text("UploadRefusalsHigh", exact=False).first
            row.wait_for(timeout=15_000)
            row.click()  # unfolds the rule: its expression, labels, state and annotations
            page.get_by_text("firing", exact=False).first.wait_for(timeout=15_000)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()


def test_make_monitor_serves_both_with_the_target_up_and_the_rules_loaded_until_ctrl_c(
    model_dir, tmp_path
):
    if not (shutil.which(local.PROMETHEUS_BINARY) or shutil.which("prometheus")):
        pytest.skip("prometheus not installed: `make monitoring-deps` (apt-get install prometheus)")
    port, prometheus_port = free_port(), free_port()
    log = tmp_path / "monitor.log"
    env = {**clean_env(), "MODEL_DIR": str(model_dir), "WEB_CONCURRENCY": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitoring.local", "--port", str(port),
             "--prometheus-port", str(prometheus_port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops both" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"
        targets = requests.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
        assert [(t["scrapeUrl"], t["health"]) for t in targets] == [
            (f"http://127.0.0.1:{port}/metrics", "up")
        ]
        groups = requests.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert loaded == {r.name for r in rulefiles.rules(rulefiles.load())}
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(30) == 0
        for url in (f"http://127.0.0.1:{port}/health", f"{api}/targets"):
            with pytest.raises(requests.ConnectionError):
                requests.get(url, timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
