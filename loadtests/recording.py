"""Record every request a load test makes as one JSON line (the rows report.py reads).

Hooked to Locust's `request` event, so it sees exactly what Locust's own statistics see,
plus what only the response headers tell: which instance answered, whether it was that
worker's first request (a cold start), and how the server spent its time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import IO, Any


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`decode;dur=3.1, infer;dur=5.2, total;dur=9.0` -> {"decode": 3.1, ...} (ms).

    Metrics without a numeric `dur` are skipped rather than guessed.
    """
    stages: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    stages[name] = float(value.strip().strip('"'))
    return stages


def make_row(
    *,
    start_time: float | None,
    response_time: float,
    response_length: int | None,
    response: Any,
    exception: BaseException | None,
    users: int | None,
    upload_bytes: int | None = None,
) -> dict:
    """One row from what Locust's request event passes (see report.py for the fields)."""
    status = getattr(response, "status_code", None) or 0
    headers = getattr(response, "headers", None) or {}
    return {
        "t": start_time if start_time is not None else time.time() - response_time / 1000.0,
        "latency_ms": round(float(response_time), 3),
        "status": int(status),
        "ok": exception is None,
        "bytes": int(response_length or 0),
        "upload_bytes": upload_bytes,
        "instance": headers.get("X-Instance-Id"),
        "cold": headers.get("X-Cold-Start", "").strip() == "1",
        "timing": parse_server_timing(headers.get("Server-Timing")),
        "users": users,
        "error": None if exception is None else f"{type(exception).__name__}: {exception}"[:300],
    }


class Recorder:
    """Appends rows to a JSONL file as they happen, so a crashed run still leaves its data."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("w", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.count = 0

    def write(self, row: dict) -> None:
        """Append one row."""
        line = json.dumps(row, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is not None:
                self._fh.write(line)
                self.count += 1

    def close(self) -> None:
        """Flush and close; later rows are dropped."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
