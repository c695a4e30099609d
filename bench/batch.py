"""The batch tool's throughput: `penguin-api predict FOLDER --out FILE`, run as a user runs it.

Its photos are the floor's own pool, written once to a scratch folder (and removed after);
the folder is named several times on the command line so one run lasts about a measuring
window. The figure is the tool's own: photos classified over the time from its workers
being ready to its last row written (its start-up, a second or two whatever the size of
the collection, is reported apart).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.server import REPO_ROOT

from .photos import Photo

_RATE = re.compile(r"classified ([\d,]+) photos in ([\d.]+) s")


@dataclass
class BatchResult:
    """Photos and seconds over every run, and each run's start-up (launch to ready)."""

    photos: int = 0
    seconds: float = 0.0
    startup_s: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.photos / self.seconds if self.seconds else 0.0


class BatchTool:
    """A scratch folder of photos and the command that classifies them."""

    def __init__(self, photos: tuple[Photo, ...], model_dir: Path, workers: int) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="penguin-bench-batch-")
        self.folder = Path(self._scratch.name) / "photos"
        self.folder.mkdir()
        for i, photo in enumerate(photos):
            (self.folder / f"{i:04d}.jpg").write_bytes(photo.data)
        self.count = len(photos)
        self.model_dir = model_dir
        self.workers = workers
        self.result = BatchResult()

    def measure(self, seconds: float, expected_rate: float) -> float:
        """One run sized to last about `seconds` at `expected_rate`; returns its photos/s."""
        repeats = max(1, math.ceil(seconds * expected_rate / self.count))
        out = Path(self._scratch.name) / "results.jsonl"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "penguin_api.cli", "predict", *[str(self.folder)] * repeats,
               "--out", str(out), "--workers", str(self.workers),
               "--model-dir", str(self.model_dir)]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - started
        match = _RATE.search(proc.stderr)
        if proc.returncode != 0 or match is None:
            raise RuntimeError(f"batch tool failed ({proc.returncode}): {proc.stderr[-2000:]}")
        photos, busy = int(match[1].replace(",", "")), float(match[2])
        self.result.photos += photos
        self.result.seconds += busy
        self.result.startup_s.append(round(wall - busy, 2))
        return photos / busy if busy else 0.0

    def close(self) -> None:
        self._scratch.cleanup()
