"""The photos every part of the benchmark uses: real ones when present, generated otherwise.

The 12-megapixel photos are always made here, in memory, by upscaling a photo of the pool
and adding a little sensor-like grain so the JPEG carries about as much detail (and costs
about as much to entropy-decode) as a phone photo. Nothing made here is written to disk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Folders of ../shared/data whose photos make the pool (validation splits: a fixed, mixed set).
_SHARED_FOLDERS = ("penguins/val", "not_penguin/val")
_SUFFIXES = (".jpg", ".jpeg")
#: A phone camera's 12 MP frame (4:3).
LARGE_SIZE = (4000, 3000)
#: Sizes of the generated stand-ins, spread like the shared set (median ~0.4 MP, max 2.6 MP).
_GENERATED_SIZES = (
    (640, 640), (800, 600), (640, 480), (1024, 768), (500, 375), (1600, 1200),
    (1200, 1600), (960, 640), (320, 240), (1280, 960), (600, 800), (1600, 1067),
)  # fmt: skip
#: +/- levels of uniform grain on the upscaled photos: ~2.3 MB JPEGs, the low end of what
#: phone cameras write at 12 MP (2-5 MB), so entropy decoding costs what it does for them.
_GRAIN = 8


@dataclass(frozen=True)
class Photo:
    """One upload: its JPEG bytes, pixel size and where it came from."""

    name: str
    data: bytes
    size: tuple[int, int]


@dataclass(frozen=True)
class PhotoSet:
    """The pools: `small` (ordinary photos), `large` (12 MP), `tiny` (one JPEG exactly the
    model's input size)."""

    source: str
    small: tuple[Photo, ...]
    large: tuple[Photo, ...]
    tiny: Photo

    def describe(self) -> dict:
        """What the JSON report says about the photos."""

        def pool(photos: tuple[Photo, ...]) -> dict:
            pixels = sorted(p.size[0] * p.size[1] for p in photos)
            sizes = sorted(len(p.data) for p in photos)
            return {
                "count": len(photos),
                "median_megapixels": round(pixels[len(pixels) // 2] / 1e6, 2),
                "max_megapixels": round(pixels[-1] / 1e6, 2),
                "median_kb": round(sizes[len(sizes) // 2] / 1024, 1),
            }

        return {
            "source": self.source,
            "small": pool(self.small),
            "large": pool(self.large),
            "tiny": {"size": list(self.tiny.size), "kb": round(len(self.tiny.data) / 1024, 1)},
        }


def load_photos(
    shared_data: Path, *, input_size: int, limit: int = 96, large_count: int = 3
) -> PhotoSet:
    """Real photos from `shared_data` if it exists, else generated JPEGs of the same sizes.

    `input_size` is the side of the model's input (its card's `input.size`): `tiny` is cut
    to it.
    """
    files = _shared_files(shared_data)
    if files:
        step = max(1, len(files) // limit)
        chosen = files[::step][:limit]
        small = tuple(p for p in (_read_photo(path, shared_data) for path in chosen) if p)
        source = f"{shared_data} ({', '.join(_SHARED_FOLDERS)}), {len(small)} JPEGs"
    else:
        small = tuple(_generated(i, size) for i, size in enumerate(_GENERATED_SIZES))
        source = f"generated: {len(small)} JPEGs ({shared_data} not found)"
    # The largest photos upscale with the least blur; take them as the 12 MP bases.
    bases = sorted(small, key=lambda p: p.size[0] * p.size[1], reverse=True)[:large_count]
    large = tuple(_upscaled(p, i) for i, p in enumerate(bases))
    return PhotoSet(source=source, small=small, large=large, tiny=_tiny(bases[0], input_size))


def _shared_files(shared_data: Path) -> list[Path]:
    files: list[Path] = []
    for folder in _SHARED_FOLDERS:
        root = shared_data / folder
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES]
    return sorted(files)


def _read_photo(path: Path, root: Path) -> Photo | None:
    """The photo, or None when it is not really a JPEG (an AVIF named .jpg, say)."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        size, fmt = img.size, img.format
    if fmt != "JPEG":
        return None
    return Photo(name=str(path.relative_to(root)), data=data, size=size)


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _generated(seed: int, size: tuple[int, int]) -> Photo:
    """A JPEG with smooth shapes and grain, so it compresses like a photo, not a flat fill."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(0, 6.28)
        wave = np.sin(xx / width * fx + phase) * np.cos(yy / height * fy)
        channels.append(128 + 90 * wave + rng.normal(0, 12, (height, width)))
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    return Photo(name=f"generated-{seed}", data=_jpeg(Image.fromarray(pixels)), size=size)


def _upscaled(photo: Photo, seed: int) -> Photo:
    """`photo` centre-cropped to 4:3 (landscape), upscaled to 12 MP, with grain."""
    with Image.open(io.BytesIO(photo.data)) as src:
        img = src.convert("RGB")
    width, height = img.size
    target_ratio = LARGE_SIZE[0] / LARGE_SIZE[1]
    if width / height > target_ratio:
        crop_w, crop_h = round(height * target_ratio), height
    else:
        crop_w, crop_h = width, round(width / target_ratio)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    big = img.resize(
        LARGE_SIZE, Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h)
    )
    rng = np.random.default_rng(seed)
    grain = rng.integers(-_GRAIN, _GRAIN + 1, size=(*LARGE_SIZE[::-1], 3), dtype=np.int16)
    pixels = np.clip(np.asarray(big, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    data = _jpeg(Image.fromarray(pixels))
    return Photo(name=f"12mp-from-{photo.name}", data=data, size=LARGE_SIZE)


def _tiny(photo: Photo, side: int) -> Photo:
    """A `side` x `side` JPEG cut from `photo`: the smallest upload the model takes whole."""
    with Image.open(io.BytesIO(photo.data)) as src:
        img = src.convert("RGB")
    crop = min(img.size)
    left, top = (img.size[0] - crop) // 2, (img.size[1] - crop) // 2
    small = img.resize(
        (side, side), Image.Resampling.BICUBIC, box=(left, top, left + crop, top + crop)
    )
    return Photo(name=f"{side}px-from-{photo.name}", data=_jpeg(small), size=(side, side))
