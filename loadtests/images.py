"""The photos load-test users upload: a folder searched recursively, or generated JPEGs.

Generated photos cover the sizes people really upload, from a 0.3-megapixel thumbnail to a
12-megapixel phone photo, with texture so they compress like photos (a flat colour would
be a few kilobytes and test nothing).
"""

from __future__ import annotations

import io
import mimetypes
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

#: Extensions of the formats the service accepts; other files in the folder are ignored.
EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
)

#: Common camera and phone resolutions, 0.3 MP (VGA) to 12 MP (4032x3024).
GENERATED_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (1024, 768),
    (1280, 960),
    (1920, 1080),
    (2048, 1536),
    (3024, 3024),
    (3264, 2448),
    (4032, 3024),
)


@dataclass(frozen=True)
class Photo:
    """One upload: its file name, bytes and content type."""

    name: str
    data: bytes
    content_type: str


def find_images(folder: Path | str) -> list[Path]:
    """Every file under `folder` (recursively) with an accepted image extension, sorted."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def photo_like_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A JPEG of the given size that compresses like a photo: smooth shapes plus grain."""
    rng = np.random.default_rng(seed)
    # Low-frequency structure: a tiny random image scaled up gives soft shapes and gradients.
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    # Sensor-like grain (+-12 levels) from a tiled patch: realistic file sizes, little CPU.
    patch = Image.fromarray(rng.integers(116, 141, size=(256, 256, 3), dtype=np.uint8), "RGB")
    grain = Image.new("RGB", (width, height))
    for y in range(0, height, 256):
        for x in range(0, width, 256):
            grain.paste(patch, (x, y))
    img = ImageChops.add(img, grain, offset=-128)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def generated_photos(sizes: tuple[tuple[int, int], ...] = GENERATED_SIZES) -> list[Photo]:
    """One generated JPEG per size in `sizes`, named after its resolution."""
    return [
        Photo(f"generated-{w}x{h}.jpg", photo_like_jpeg(w, h, seed=i), "image/jpeg")
        for i, (w, h) in enumerate(sizes)
    ]


class PhotoPool:
    """Photos to upload, drawn at random; files are read when picked, so big folders are fine."""

    def __init__(
        self,
        paths: list[Path] | None = None,
        photos: list[Photo] | None = None,
        root: Path | str | None = None,
    ):
        self.root = root
        self._paths = list(paths or [])
        self._photos = list(photos or [])
        if not self._paths and not self._photos:
            raise ValueError("the photo pool is empty")

    @classmethod
    def from_folder(cls, folder: Path | str | None) -> PhotoPool:
        """The photos under `folder`, or generated JPEGs when no folder is given."""
        if not folder:
            return cls(photos=generated_photos())
        paths = find_images(folder)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {folder}")
        return cls(paths=paths, root=folder)

    def __len__(self) -> int:
        return len(self._paths) + len(self._photos)

    def describe(self) -> str:
        """One line for the log: where the photos come from and how many there are."""
        if self._paths:
            return f"{len(self._paths)} photos found under {self.root or self._paths[0].parent}"
        mp = [len(p.data) for p in self._photos]
        return f"{len(self._photos)} generated JPEGs ({min(mp)}-{max(mp)} bytes)"

    def pick(self, rng: random.Random) -> Photo:
        """A photo chosen uniformly at random."""
        i = rng.randrange(len(self))
        if i < len(self._photos):
            return self._photos[i]
        path = self._paths[i - len(self._photos)]
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Photo(path.name, path.read_bytes(), content_type)
