"""Decode cost: a JPEG of the model's input size vs a 12 MP JPEG, with and without draft.

Four ways per photo, on one core in this process, in CPU milliseconds (the wall clock
of a shared machine would add whatever time others held the core); ``size`` is the side
of the model's input, from its card:
- ``full_decode``: Pillow decodes every pixel (no ``draft``);
- ``draft_decode``: ``Image.draft`` asks libjpeg for a 1/2, 1/4 or 1/8 scale decode that
  keeps the short side >= ``size``;
- ``alternative_to_input``: what the FastAPI baseline does, full decode + resize to ``size``;
- ``service_to_input``: ``penguin_api.imaging.prepare``, the service's whole preprocessing.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from PIL import Image

from penguin_api.imaging import prepare

from .floor import MAX_PIXELS
from .photos import Photo


def _full_decode(data: bytes, size: int) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB")


def _draft_decode(data: bytes, size: int) -> None:
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        scale = size / min(width, height)
        img.draft("RGB", (round(width * scale), round(height * scale)))
        img.convert("RGB")


def _alternative(data: bytes, size: int) -> None:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size))
    np.asarray(image, dtype=np.uint8)


def _service(data: bytes, size: int) -> None:
    prepare(data, max_pixels=MAX_PIXELS, size=size)


WAYS: dict[str, Callable[[bytes, int], None]] = {
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


def measure_decode(photos: dict[str, Photo], seconds_each: float, size: int) -> dict:
    """Median milliseconds of every way on every photo, for a model taking `size` px inputs."""
    out: dict[str, dict] = {}
    for name, photo in photos.items():
        row = {
            way: _median_ms(partial(fn, size=size), photo.data, seconds_each)
            for way, fn in WAYS.items()
        }
        row["draft_speedup"] = round(row["full_decode"] / row["draft_decode"], 2)
        row["kb"] = round(len(photo.data) / 1024, 1)
        row["pixels"] = list(photo.size)
        out[name] = row
    return out
