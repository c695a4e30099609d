"""Run `penguin_api.imaging.prepare` on untrusted bytes in a child process.

A fuzzer must survive what it is looking for: a segfault, a hang or a runaway allocation
in a decoder would take the test runner down with it. The parent (`DecodeSandbox`) sends
each input to a long-lived child over a pipe and waits with a timeout; the child answers
with one JSON line saying what `prepare` did. A crash or hang costs one child, which is
replaced, and is reported as its own outcome.

Inputs are prepared to the shipped model's input size (its card's ``input.size``), as the
service prepares them, unless a size is given.

Run as a child: ``python -m tests.decode_sandbox MAX_PIXELS MEMORY_LIMIT_BYTES SIZE``.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Generous: a sample this size decodes in milliseconds; only a real hang reaches it.
DEFAULT_TIMEOUT_S = 20.0
#: Address-space cap for the child so an allocation bomb fails there, not on the machine.
DEFAULT_MEMORY_LIMIT = 3 * 1024**3


@dataclass(frozen=True)
class Outcome:
    """What happened to one input."""

    kind: str  # "ok" | "image_error" | "escaped" | "crash" | "hang"
    detail: str = ""
    peak_rss: int = 0  # the decoder process's peak resident memory so far, bytes

    @property
    def allowed(self) -> bool:
        """Only a model input or one of imaging's own errors is acceptable."""
        return self.kind in ("ok", "image_error")


class DecodeSandbox:
    """A child process running `prepare`; restarted after a crash or a hang."""

    def __init__(
        self,
        max_pixels: int,
        timeout: float = DEFAULT_TIMEOUT_S,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        size: int | None = None,
    ) -> None:
        from tests.server import model_input_size

        self.max_pixels = max_pixels
        self.size = size if size is not None else model_input_size()
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.inputs = 0
        self.restarts = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> DecodeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                self.restarts += 1
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.decode_sandbox",
                    str(self.max_pixels),
                    str(self.memory_limit),
                    str(self.size),
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                # One decoder thread: the fuzz run shares the CPUs with everything else.
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        return self._proc

    def run(self, data: bytes) -> Outcome:
        """Feed `data` to `prepare` in the child and report what happened."""
        proc = self._start()
        self.inputs += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(struct.pack(">I", len(data)) + data)
            proc.stdin.flush()
        except BrokenPipeError:
            return self._crashed(proc)
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if not ready:
            proc.kill()
            proc.wait()
            return Outcome("hang", f"no answer within {self.timeout:.0f} s")
        line = proc.stdout.readline()
        if not line:
            return self._crashed(proc)
        answer = json.loads(line)
        return Outcome(answer["kind"], answer.get("detail", ""), answer.get("peak_rss", 0))

    def _crashed(self, proc: subprocess.Popen) -> Outcome:
        code = proc.wait()
        return Outcome("crash", f"decoder process died with exit status {code}")

    def close(self) -> None:
        """Stop the child (closing its stdin ends its loop)."""
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM; ru_maxrss would include the
    parent's peak, which Linux carries across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(max_pixels: int, memory_limit: int, size: int) -> None:
    """Read length-prefixed inputs from stdin, answer each with one JSON line."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    import numpy as np

    from penguin_api.imaging import ImageError, prepare

    stdin, stdout = sys.stdin.buffer, sys.stdout
    while header := stdin.read(4):
        (length,) = struct.unpack(">I", header)
        data = stdin.read(length)
        try:
            arr = prepare(data, max_pixels=max_pixels, size=size)
        except ImageError as exc:
            answer = {"kind": "image_error", "detail": f"{type(exc).__name__}: {exc}"}
        except BaseException as exc:  # reporting exactly this is the point
            detail = "".join(traceback.format_exception(exc))
            answer = {"kind": "escaped", "detail": detail}
        else:
            if arr.shape == (size, size, 3) and arr.dtype == np.uint8:
                answer = {"kind": "ok"}
            else:
                answer = {"kind": "escaped", "detail": f"bad array {arr.shape} {arr.dtype}"}
        answer["peak_rss"] = _peak_rss()
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
