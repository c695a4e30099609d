"""`make monitor`: the service and a real Prometheus scraping it, on loopback, for a person.

Starts Gunicorn as `make run` does, waits until its workers are ready, then starts
Debian's Prometheus with the rules in monitoring/rules/ and a config that scrapes the
service (the same config as monitoring/prometheus.yml, with the port filled in), prints
where to look, and stops both on Ctrl-C. The end-to-end test (tests/test_monitoring_e2e.py)
uses `running_prometheus` and `Prometheus` from here too.

Needs only the runtime install and the `prometheus` binary (`make monitoring-deps`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_GLOB = "rules/*.rules.yml"
PROMETHEUS_BINARY = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
JOB = "penguin-api"


def prometheus_config(
    target: str,
    rule_files: list[str],
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
) -> dict[str, Any]:
    """Prometheus's config: scrape the service at `target` (host:port), load `rule_files`.

    monitoring/prometheus.yml is this with target 127.0.0.1:8080 and the rules beside it
    (tests/test_monitoring_rules.py keeps the two equal).
    """
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        """Its web address."""
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        """The `data` of GET /api/v1/`path`."""
        return _get_json(f"{self.url}/api/v1/{path}")["data"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, each with its `health` ("up", "down", "unknown")."""
        return self.api("targets")["activeTargets"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now (resolved ones are not listed)."""
        return self.api("alerts")["alerts"]

    def rule_names(self) -> set[str]:
        """The names of every loaded recording and alerting rule."""
        return {rule["name"] for group in self.api("rules")["groups"] for rule in group["rules"]}

    def logs(self) -> str:
        """What Prometheus wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, predicate, timeout: float, what: str, every: float = 0.5) -> Any:
        """Poll `predicate` until it returns something true; raise with the logs on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited before {what}:\n{self.logs()}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                if found := predicate():
                    return found
            time.sleep(every)
        raise TimeoutError(f"prometheus: not {what} after {timeout:.0f} s:\n{self.logs()[-3000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until Prometheus answers and every target has been scraped successfully."""
        self.wait_for(
            lambda: (targets := self.targets()) and all(t["health"] == "up" for t in targets),
            timeout,
            "scraping its targets",
        )


@contextlib.contextmanager
def running_prometheus(
    config: dict[str, Any], workdir: Path, port: int | None = None
) -> Iterator[Prometheus]:
    """Run Prometheus with `config` (data and logs in `workdir`) on 127.0.0.1:`port`."""
    binary = shutil.which(PROMETHEUS_BINARY) or shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError(
            f"{PROMETHEUS_BINARY} not found: install Debian's prometheus (make monitoring-deps)"
        )
    port = port or free_port()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.page-title=Penguin API (local)",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Prometheus(port=port, proc=proc, log_path=log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C, or SIGTERM from a process manager or `kill`, stops both."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run both until Ctrl-C (or until either exits)."""
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8080, help="the service's port")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    args = parser.parse_args(argv)

    # Also when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    env = {**os.environ, "PORT": str(args.port), "HOST": "127.0.0.1"}
    service = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "gunicorn.conf.py"),
         "penguin_api.wsgi:app"],
        cwd=REPO_ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{args.port}/ready", service, timeout=120)
        rules = [str(REPO_ROOT / "monitoring" / RULES_GLOB)]
        config = prometheus_config(f"127.0.0.1:{args.port}", rules)
        with (
            tempfile.TemporaryDirectory(prefix="penguin-prometheus-") as tmp,
            running_prometheus(config, Path(tmp), args.prometheus_port) as prometheus,
        ):
            prometheus.wait_ready(timeout=60)
            print(
                f"\nservice     http://127.0.0.1:{args.port}/  (metrics at /metrics)\n"
                f"prometheus  {prometheus.url}/classic/targets   target up\n"
                f"            {prometheus.url}/classic/rules     recording rules and alerts\n"
                f"            {prometheus.url}/classic/alerts    what fires\n"
                "Ctrl-C stops both.\n",
                flush=True,
            )
            while service.poll() is None and prometheus.proc.poll() is None:
                time.sleep(0.5)
            print("the service or Prometheus exited; stopping the other", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopping the service and Prometheus", file=sys.stderr)
        return 0
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        _stop(service)


if __name__ == "__main__":
    sys.exit(main())
