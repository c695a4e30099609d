"""Augmented views of one photo, all ending in the service's own crop-and-resize.

View 0 is exactly what the service sees (``imaging.prepare``); view 1 is its mirror
image; later views are seeded random crops, flips and colour changes of the decoded
photo. A view depends only on (photo bytes, view index, seed), so cached embeddings
stay valid across runs.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
from PIL import Image, ImageEnhance

from penguin_api.imaging import MODEL_INPUT_SIZE, decode_image, to_model_input

#: Training photos are trusted; this only guards against a corrupt giant file.
MAX_PIXELS = 200_000_000
#: Bumped whenever the views or the embedding change, which invalidates cached embeddings.
RECIPE = "v3"


def decode(data: bytes, size: int = MODEL_INPUT_SIZE) -> Image.Image:
    """Decode a photo exactly as the service does for a ``size`` px model input."""
    return decode_image(data, max_pixels=MAX_PIXELS, min_side=size)


def view_key(index: int, seed: int, backbone: str = "lite0", size: int = MODEL_INPUT_SIZE) -> str:
    """Cache key of one view through one backbone; views 0 and 1 do not depend on the seed."""
    base = f"{RECIPE}-{backbone}-{size}-{index}"
    return base if index < 2 else f"{base}-s{seed}"


def make_view(
    img: Image.Image, index: int, seed: int, photo_id: str, size: int = MODEL_INPUT_SIZE
) -> np.ndarray:
    """The ``index``-th view of ``img`` as a uint8 [size, size, 3] array.

    A random view's crop, flip and colour change depend on (photo, index, seed) only,
    so the same view at two sizes shows the same part of the photo.
    """
    if index == 0:
        return to_model_input(img, size)
    if index == 1:
        return to_model_input(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), size)
    digest = hashlib.sha256(f"{photo_id}|{index}|{seed}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return _random_view(img, rng, size)


def _random_view(img: Image.Image, rng: random.Random, size: int) -> np.ndarray:
    """Random square-ish crop (40-100% of the area), flip, brightness/contrast/colour."""
    width, height = img.size
    side = min(width, height)
    for _ in range(10):
        area = rng.uniform(0.4, 1.0) * side * side
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = round(np.sqrt(area * ratio))
        h = round(np.sqrt(area / ratio))
        if w <= width and h <= height:
            break
    else:
        w = h = side
    left = rng.uniform(0, width - w)
    top = rng.uniform(0, height - h)
    crop = img.resize(
        (size, size),
        Image.Resampling.BILINEAR,
        box=(left, top, left + w, top + h),
        reducing_gap=3.0,
    )
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.75, 1.25))
    crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.75, 1.25))
    crop = ImageEnhance.Color(crop).enhance(rng.uniform(0.7, 1.3))
    return np.asarray(crop, dtype=np.uint8)
