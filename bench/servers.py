"""Start the two servers under test and read their memory.

The service is started exactly as the tests start it (tests.server.running_server: real
Gunicorn with the project's gunicorn.conf.py); the FastAPI alternative with plain uvicorn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.server import REPO_ROOT, free_port


@dataclass
class AltServer:
    """The running uvicorn process of the FastAPI alternative."""

    port: int
    proc: subprocess.Popen
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_alternative(model_path: Path, timeout: float = 60.0) -> Iterator[AltServer]:
    """`uvicorn bench.alt_fastapi:app` (one process, its defaults) on a free loopback port."""
    port = free_port()
    env = {**os.environ, "BENCH_ALT_MODEL": str(model_path), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "bench.alt_fastapi:app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryDirectory(prefix="penguin-bench-alt-") as tmp:
        log_path = Path(tmp) / "uvicorn.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        server = AltServer(port=port, proc=proc, log_path=log_path)
        try:
            _wait_healthy(server, timeout)
            yield server
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_healthy(server: AltServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.proc.returncode}:\n{server.logs()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{server.port}/health", timeout=2).ok:
                return
        time.sleep(0.1)
    raise TimeoutError(f"FastAPI alternative not up after {timeout:.0f} s:\n{server.logs()}")


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS of `pid` in MB (PSS splits pages shared with siblings fairly)."""
    out = {"rss_mb": 0.0, "pss_mb": 0.0}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[f"{key.lower()}_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def sched_ns(pids: list[int]) -> tuple[int, int]:
    """(on-CPU ns, ns spent runnable but waiting for a CPU) summed over `pids`' threads.

    From /proc/<pid>/task/*/schedstat; the wait is time a process wanted a core that
    something else had, which no profile of the process itself can show.
    """
    run = wait = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
                fields = stat.read_text().split()
                run += int(fields[0])
                wait += int(fields[1])
    return run, wait
