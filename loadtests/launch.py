"""Start the service the way production does (Gunicorn with gunicorn.conf.py) on loopback.

Used by run.py when no --host is given and by coldstart.py's local mode. The server binds
127.0.0.1 only: a load test on this machine must not be reachable from outside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
# Service settings a developer's shell may carry that would change what gets measured.
_SCRUBBED = ("PORT", "HOST", "GUNICORN_CMD_ARGS")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepting(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_gunicorn(port: int, log_path: Path, env: Mapping[str, str] | None = None):
    """Popen of `gunicorn -c gunicorn.conf.py penguin_api.wsgi:app` on 127.0.0.1:`port`."""
    full = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    full.update(PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1", **(env or {}))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "penguin_api.wsgi:app"],
            cwd=REPO_ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so workers go down with it
        )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM the master (graceful), SIGKILL what is left; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def wait_until(
    check: Callable[[], bool],
    proc: subprocess.Popen | None,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> float:
    """Poll `check` until true; return the seconds it took. Raise if `proc` dies or on timeout."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was {what}")
        if check():
            return time.perf_counter() - start
        time.sleep(interval)
    raise TimeoutError(f"server not {what} after {timeout:.0f} s")


def is_ready(base_url: str) -> bool:
    """GET /ready answers 200 (model loaded, verified, warmed up)."""
    try:
        return requests.get(base_url + "/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False
