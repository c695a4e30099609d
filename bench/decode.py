"""Decode cost: a 224 px JPEG vs a 12 MP JPEG, with and without reduced-size decoding.

Four ways per photo, on one core in this process, in CPU milliseconds (the wall clock
of a shared machine would add whatever time others held the core):
- ``full_decode``: Pillow decodes every pixel (no ``draft``);
- ``draft_decode``: ``Image.draft`` asks libjpeg for a 1/2, 1/4 or 1/8 scale decode that
  keeps the short side >= 224;
- ``alternative_to_input``: what the FastAPI baseline does, full decode + resize to 224;
- ``service_to_input``: ``penguin_api.imaging.prepare``, the service's whole preprocessing.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from penguin_api.imaging import prepare

from .floor import MAX_PIXELS


def _full_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB")


def _draft_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        scale = 224 / min(width, height)
        img.draft("RGB", (round(width * scale), round(height * scale)))
        img.convert("RGB")


def _alternative(data: bytes) -> None:
    np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224)), dtype=np.uint8)


def _service(data: bytes) -> None:
    prepare(data, max_pixels=MAX_PIXELS)


WAYS: dict[str, Callable[[bytes], None]] = {
    "full_decode": _full_decode,
    "draft_decode": _draft_decode,
    "alternative_to_input": _alternative,
    "service_to_input": _service,
}


def _median_ms(fn: Callable[[bytes], None], data: bytes, seconds: float) -> float:
    """Median CPU milliseconds of `fn(data)` (Pillow decodes in the calling thread)."""
    fn(data)  # warm-up
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(times) < 3:
        t0 = time.thread_time()
        fn(data)
        times.append((time.thread_time() - t0) * 1000)
    return round(float(np.median(times)), 2)


def measure_decode(photos: dict[str, bytes], seconds_each: float) -> dict:
    """Median milliseconds of every way on every photo, and the saving draft gives."""
    out: dict[str, dict] = {}
    for name, data in photos.items():
        row = {way: _median_ms(fn, data, seconds_each) for way, fn in WAYS.items()}
        row["draft_speedup"] = round(row["full_decode"] / row["draft_decode"], 2)
        row["kb"] = round(len(data) / 1024, 1)
        out[name] = row
    return out
