"""Start the real service for tests: Gunicorn with gunicorn.conf.py on a free loopback port.

Every integration, fault and load test goes through `running_server` so that they all
exercise the same process tree a user gets from `penguin-api serve`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from penguin_api.classifier import ModelCard
from penguin_api.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shipped model; PENGUIN_TEST_MODEL_DIR points the tests at another one (e.g. a candidate).
DEFAULT_MODEL_DIR = Path(os.environ.get("PENGUIN_TEST_MODEL_DIR", REPO_ROOT / "model"))
CARD_FILE = "model-card.json"


def _named_by_card(model_dir: Path, default: str = "penguin-classifier.onnx") -> str:
    """The ONNX file name the card gives (`file`), so a renamed model needs no test edits."""
    try:
        return str(json.loads((model_dir / CARD_FILE).read_text())["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


MODEL_FILE = _named_by_card(DEFAULT_MODEL_DIR)

# Settings a developer's shell may carry that would change what the test server does:
# every variable penguin_api.config.Settings reads, and Gunicorn's own.
_SCRUBBED_ENV = frozenset(
    {f.name.upper() for f in dataclasses.fields(Settings)} | {"GUNICORN_CMD_ARGS"}
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_available(model_dir: Path = DEFAULT_MODEL_DIR) -> bool:
    """True when `model_dir` holds both the ONNX file and its card."""
    return (model_dir / CARD_FILE).is_file() and (model_dir / _named_by_card(model_dir)).is_file()


def model_input_size(model_dir: Path = DEFAULT_MODEL_DIR) -> int:
    """The side of the model's input, from its card: the size the service prepares uploads to."""
    return ModelCard.from_file(model_dir / CARD_FILE).input_size


def copy_model(dest: Path, model_dir: Path = DEFAULT_MODEL_DIR) -> Path:
    """Copy the model directory to `dest` (for tests that damage it); returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
    return dest


def copy_model_with_thresholds(
    dest: Path, model_dir: Path = DEFAULT_MODEL_DIR, **thresholds: object
) -> Path:
    """A copy of the model whose card has `thresholds` set (e.g. confident=0.9); returns it.

    The card's sha256 covers the ONNX file, not the card, so the copy loads like the original.
    """
    copy_model(dest, model_dir)
    card = json.loads((dest / CARD_FILE).read_text(encoding="utf-8"))
    card["thresholds"].update(thresholds)
    (dest / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    return dest


@dataclass
class Server:
    """A running Gunicorn master and what a test needs to talk to it."""

    port: int
    proc: subprocess.Popen
    log_path: Path
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this server."""
        return self.base_url + path

    def logs(self) -> str:
        """Everything master and workers wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict]:
        """The log lines that are JSON objects, parsed (non-JSON lines are skipped)."""
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    records.append(obj)
        return records

    def workers_booted(self) -> int:
        """How many times a worker has booted so far (a restarted worker counts again)."""
        return self.logs().count("Booting worker with pid")

    def worker_pids(self) -> list[int]:
        """PIDs of the master's live child processes (the Gunicorn workers)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until GET /ready answers 200; raise with the logs if the master dies."""
        self.wait_for(lambda: _status(self.url("/ready")) == 200, timeout, "ready")

    def ready_workers(self) -> set[int]:
        """Live workers that have logged their model ready (they take connections from then)."""
        loaded = {
            r.get("pid")
            for r in self.log_records()
            if r.get("message", "").startswith("model ready")
        }
        return loaded & set(self.worker_pids())

    def wait_all_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Block until `workers` workers run and each has its model ready.

        /ready answers 200 as soon as one worker is ready; workers load one at a time, so on
        a busy machine the others may not even be forked yet.
        """
        self.wait_for(
            lambda: len(self.worker_pids()) == workers and len(self.ready_workers()) == workers,
            timeout,
            f"all {workers} workers ready",
        )

    def wait_accepted(self, timeout: float = 60.0) -> None:
        """Block until every connection opened so far has been accepted by a worker."""
        self.wait_for(
            lambda: tcp_port_state(Path("/proc/net/tcp").read_text(), self.port)[0] == 0,
            timeout,
            "accepting every connection",
        )

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Block until a log line contains `text` (e.g. the master handling a signal)."""
        self.wait_for(lambda: text in self.logs(), timeout, f"logging {text!r}")

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        """Poll `predicate` until true; raise with the logs on timeout or master exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.proc.returncode} before {what}:\n{self.logs()}"
                )
            if predicate():
                return
            time.sleep(0.1)
        raise TimeoutError(f"server not {what} after {timeout:.0f} s:\n{self.logs()}")

    def answers_until_exit(self, photo: bytes, timeout: float) -> tuple[int, list[int]]:
        """POST `photo` to /predict until the master exits; (exit code, statuses answered).

        For a server that must refuse to start: any 200 here is a bad model serving.
        """
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                r = requests.post(self.url("/predict"), files={"file": photo}, timeout=5)
                statuses.append(r.status_code)
            except requests.RequestException:  # not listening yet, or shut while waiting
                time.sleep(0.02)
        return self.proc.wait(max(1.0, deadline - time.monotonic())), statuses

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the master (a graceful shutdown) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def tcp_port_state(proc_net_tcp: str, port: int) -> tuple[int | None, int]:
    """From the text of /proc/net/tcp (Linux): connections waiting in `port`'s accept queue
    (None if nothing listens there), and connections established to `port`.

    A listening socket's rx_queue is its accept queue: connections the kernel completed
    that no worker has accepted yet.
    """
    backlog, established, suffix = None, 0, f":{port:04X}"
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if not fields[1].endswith(suffix):
            continue
        if fields[3] == "0A":  # LISTEN
            backlog = int(fields[4].split(":")[1], 16)
        elif fields[3] == "01":  # ESTABLISHED
            established += 1
    return backlog, established


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def clean_env() -> dict[str, str]:
    """This process's environment without any service setting (every test starts from defaults)."""
    return {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}


def server_env(
    port: int, workers: int, model_dir: Path, env: Mapping[str, str] | None
) -> dict[str, str]:
    """The environment the server runs with: the caller's, minus stray settings, plus ours."""
    full = clean_env()
    full.update(
        PORT=str(port),
        HOST="127.0.0.1",
        WEB_CONCURRENCY=str(workers),
        MODEL_DIR=str(model_dir),
        PYTHONUNBUFFERED="1",
    )
    full.update(env or {})
    return full


def predict_photo(server: Server, photo: bytes) -> dict:
    """The service's answer to one JPEG sent the ordinary way; it must be a 200."""
    response = requests.post(
        server.url("/predict"), files={"file": ("penguin.jpg", photo, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def serving_state(server: Server, photo: bytes) -> dict:
    """What a request must not change: the answer to `photo`, the workers, their boots."""
    return {
        "answer": predict_photo(server, photo),
        "workers": sorted(server.worker_pids()),
        "booted": server.workers_booted(),
    }


def assert_serving_unchanged(server: Server, photo: bytes, before: dict) -> None:
    """Both workers (four tries reach both) answer as before, and are the same processes."""
    for _ in range(4):
        assert predict_photo(server, photo) == before["answer"]
    assert sorted(server.worker_pids()) == before["workers"], "a worker was replaced"
    assert server.workers_booted() == before["booted"], "a worker was restarted"


@contextlib.contextmanager
def running_server(
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    model_dir: Path | str | None = None,
    wait_ready: bool = True,
    timeout: float = 60.0,
) -> Iterator[Server]:
    """Run `gunicorn -c gunicorn.conf.py penguin_api.wsgi:app` on a free loopback port.

    `env` overrides settings (e.g. {"MAX_UPLOAD_MB": "1"}); `model_dir` defaults to the
    shipped model. With `wait_ready` the server is yielded once every worker has its model
    ready (so each takes connections).
    The master is stopped with SIGTERM (then SIGKILL) on exit.
    """
    port = free_port()
    model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    with tempfile.TemporaryDirectory(prefix="penguin-test-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    str(REPO_ROOT / "gunicorn.conf.py"),
                    "penguin_api.wsgi:app",
                ],
                cwd=REPO_ROOT,
                env=server_env(port, workers, model_dir, env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(port=port, proc=proc, log_path=log_path)
        try:
            if wait_ready:
                server.wait_all_ready(workers, timeout)
            yield server
        finally:
            server.stop()
            # Workers orphaned by a killed master must not outlive the test.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def sample(text: str, name: str, /, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if base == name and got == want:
            return float(value)
    return 0.0


def metric_value(server: Server, name: str, /, **labels: str) -> float:
    """One sample of the server's /metrics page (summed over its workers), 0 if absent."""
    response = requests.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200
    return sample(response.text, name, **labels)
