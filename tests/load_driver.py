"""Steady client traffic for the fault, concurrency and memory tests, with every outcome kept.

Client threads post photos to /predict in a loop until told to stop (or until a request
budget is spent) and record, per request: when it started and ended, the HTTP status or
the connection error, and the X-Instance-Id of the worker that answered.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image, ImageOps

#: Formats the mixed photo set cycles through (all accepted by the service).
_FORMATS = (("JPEG", "image/jpeg", {"quality": 85}), ("PNG", "image/png", {}),
            ("WEBP", "image/webp", {"quality": 80}))  # fmt: skip


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    mime: str


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    error: str = ""
    instance: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.ended - self.started


def mixed_photos(shared_data: Path, count: int = 24, side: int = 320) -> list[Photo]:
    """`count` real penguin photos, shrunk to `side` px and re-encoded as JPEG, PNG or WebP.

    Kept in memory only; small so thousands of requests stay cheap.
    """
    paths = sorted((shared_data / "penguins" / "val").glob("*/*"))
    paths = [p for p in paths if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    photos = []
    for path, (fmt, mime, params) in zip(paths[:count], itertools.cycle(_FORMATS), strict=False):
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, fmt, **params)
        photos.append(Photo(f"{path.stem}.{fmt.lower()}", buf.getvalue(), mime))
    return photos


def post_photo(base_url: str, photo: Photo, timeout: float = 60.0) -> Outcome:
    """One POST /predict, never raising: the outcome says what happened."""
    started = time.monotonic()
    try:
        response = requests.post(
            base_url + "/predict",
            files={"file": (photo.name, photo.data, photo.mime)},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        return Outcome(started, time.monotonic(), None, type(exc).__name__)
    return Outcome(
        started, time.monotonic(), response.status_code,
        "" if response.ok else response.text[:200],
        response.headers.get("X-Instance-Id", ""),
    )  # fmt: skip


class Load:
    """`threads` clients posting `photos` round-robin until `stop()` or `total` requests."""

    def __init__(
        self, base_url: str, photos: list[Photo], threads: int = 4, total: int | None = None
    ) -> None:
        self.base_url = base_url
        self.photos = photos
        self.total = total
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._issued = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.total is not None and self._issued >= self.total):
                return None
            self._issued += 1
            return self._issued - 1

    def _client(self) -> None:
        while (n := self._next()) is not None:
            outcome = post_photo(self.base_url, self.photos[n % len(self.photos)])
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.status is None:
                time.sleep(0.05)  # a refused connection returns at once; do not spin

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def done(self) -> int:
        """Requests finished so far."""
        with self._lock:
            return len(self.outcomes)

    def wait_done(self, count: int, timeout: float = 120.0) -> None:
        """Block until at least `count` requests finished."""
        deadline = time.monotonic() + timeout
        while self.done() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.done()} of {count} requests done")
            time.sleep(0.02)

    def stop(self, timeout: float = 90.0) -> list[Outcome]:
        """Stop issuing, wait for requests in flight, return all outcomes in finishing order."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            return list(self.outcomes)

    def join(self, timeout: float = 600.0) -> list[Outcome]:
        """Wait until the `total` budget is spent."""
        for thread in self._threads:
            thread.join(timeout)
        return self.stop()


def summary(outcomes: list[Outcome]) -> Counter:
    """Outcome counts: HTTP statuses by number, failures by error class."""
    return Counter(o.status if o.status is not None else o.error for o in outcomes)


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """p50/p90/p99 and max, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {}
    out = {f"p{p}": 1000 * ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in points}
    out["max"] = 1000 * ordered[-1]
    return {k: round(v, 1) for k, v in out.items()}
