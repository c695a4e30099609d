"""Decoding and preprocessing: upload bytes -> upright RGB image -> model input array.

This module knows nothing of HTTP or of the model runtime. Anything a client can send
either comes back as an RGB image or raises one of the ImageError types below; no other
exception is meant to escape (the fuzz tests hold it to that).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, features

try:  # HEIC/HEIF from phones; optional so the training tools work without it.
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = ("HEIF",)
except ImportError:  # pragma: no cover - pillow-heif is a runtime dependency
    _HEIF = ()

# AVIF (web downloads, recent Android phones) is Pillow's own codec, present in its wheels;
# a Pillow built without libavif simply does not accept it.
_AVIF = ("AVIF",) if features.check("avif") else ()
if _AVIF:
    from PIL import AvifImagePlugin

    # One decoder thread: each worker already owns one core, and libavif's default
    # (a thread per CPU) would make a worker's decode compete with its siblings' inference.
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1

#: Pillow format names we decode; anything else Pillow could open is refused. AVIF is
#: tried before HEIF: both claim files branded "mif1", and only Pillow's AVIF plugin
#: passes a HEIC on (pillow-heif fails on an AVIF instead of declining it).
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", *_AVIF, *_HEIF)
#: The same, as a user reads them in an error message.
ACCEPTED_FORMATS_TEXT = (
    "JPEG, PNG, WebP, GIF, BMP, TIFF"
    + (", AVIF" if _AVIF else "")
    + (", HEIC/HEIF" if _HEIF else "")
)

MODEL_INPUT_SIZE = 224


class ImageError(Exception):
    """An upload that cannot be turned into a model input; the message is safe to show."""


class UnsupportedImage(ImageError):  # noqa: N818 - the agreed public name
    """Not an image, damaged, or in a format we do not accept."""


class ImageTooLarge(ImageError):  # noqa: N818 - the agreed public name
    """More pixels than the configured limit (decompression-bomb guard)."""


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int = MODEL_INPUT_SIZE,
    max_decode_bytes: int | None = None,
) -> Image.Image:
    """Decode upload bytes into an upright 8-bit RGB image.

    JPEGs are decoded at a reduced scale (``Image.draft``) that still leaves the
    shorter side at least ``min_side`` pixels, so a 12 MP phone photo costs little
    more than a thumbnail. The pixel limit, and the memory the decode would take
    (``decode_cost``) against ``max_decode_bytes``, are checked on the header, before
    any pixel is decoded. Other formats decode at full size, and images that need a
    costly conversion (16/32-bit, alpha) are box-reduced before it, never below
    ``_REDUCING_GAP * min_side``: a 100 kB 16-bit PNG of 49 MP would otherwise cost
    seconds of CPU and over a gigabyte of memory.
    """
    if not data:
        raise UnsupportedImage("The file is empty.")
    try:
        with warnings.catch_warnings():
            # Our own limit below is the guard; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise UnsupportedImage("The image has no pixels.")
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image is {width}x{height} = {width * height:,} pixels; "
                    f"the limit is {max_pixels:,} pixels."
                )
            if max_decode_bytes is not None:
                _check_decode_cost(img, max_decode_bytes)
            if img.format == "JPEG":
                img.draft("RGB", _draft_size(width, height, min_side))
            img.load()
            # In place: the default returns a full-size copy even when nothing turns.
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img, min_side)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"The image has too many pixels ({exc}).") from None
    except Image.UnidentifiedImageError:
        raise UnsupportedImage(
            f"The file is not an image in an accepted format ({ACCEPTED_FORMATS_TEXT})."
        ) from None
    except MemoryError:
        raise ImageTooLarge("The image is too large to decode.") from None
    except Exception as exc:  # any decoder failure is the upload's fault
        raise UnsupportedImage(
            "The image could not be decoded; it may be truncated or damaged "
            f"({type(exc).__name__})."
        ) from None


def to_model_input(img: Image.Image, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Centre-crop to a square and resize to ``size``: uint8 array ``[size, size, 3]``.

    The square crop keeps the aspect ratio (penguins are not stretched); its side is
    the image's shorter side, so nothing but the long side's margins is lost.
    """
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    square = img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(square, dtype=np.uint8)


def prepare(
    data: bytes,
    *,
    max_pixels: int,
    size: int = MODEL_INPUT_SIZE,
    max_decode_bytes: int | None = None,
) -> np.ndarray:
    """Upload bytes straight to a model input array (decode, orient, crop, resize)."""
    img = decode_image(
        data, max_pixels=max_pixels, min_side=size, max_decode_bytes=max_decode_bytes
    )
    return to_model_input(img, size)


def warm_up() -> None:
    """Decode a small JPEG and PNG once, so the first upload does not pay for plugin loading."""
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (90, 120, 150)).save(buf, fmt)
        prepare(buf.getvalue(), max_pixels=320 * 240)


# --- what a decode costs in memory -----------------------------------------------------
# Peak memory a decoder process gains to prepare one image, per pixel of the image, in
# bytes: the file itself, the decoder's buffers and Pillow's copies (the turn for EXIF
# orientation, the alpha conversion). Measured on 3 and 12 MP images of every accepted
# format and mode, with a margin of 15-40 % on the worst case of each row; the table in
# the README lists the measurements and tests/test_decode_memory.py holds every row to them.
_BYTES_PER_PIXEL = {"PNG": 12, "GIF": 8, "BMP": 8, "TIFF": 14, "WEBP": 24, "AVIF": 17, "HEIF": 16}
#: ...for images with transparency (alpha, or a transparent palette colour).
_BYTES_PER_PIXEL_ALPHA = {"PNG": 15, "GIF": 15, "BMP": 15, "TIFF": 17}
#: JPEGs decode at reduced size; a progressive one still holds its DCT coefficients at
#: full size, two bytes per pixel and component.
_JPEG_BYTES_PER_PIXEL = 1
_JPEG_PROGRESSIVE_BYTES_PER_COMPONENT = 2
#: What any decode takes beside the pixels (codec state, row buffers).
_FIXED_COST = 16 * 1024 * 1024
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def decode_cost(img: Image.Image) -> int:
    """The memory, in bytes, that decoding and preparing `img` takes at most (from its header)."""
    pixels = img.size[0] * img.size[1]
    fmt = img.format or ""
    if fmt == "JPEG":
        per_pixel = _JPEG_BYTES_PER_PIXEL
        if img.info.get("progressive") or img.info.get("progression"):
            per_pixel += _JPEG_PROGRESSIVE_BYTES_PER_COMPONENT * len(img.getbands())
    elif img.mode in _ALPHA_MODES or "transparency" in img.info:
        per_pixel = _BYTES_PER_PIXEL_ALPHA.get(fmt, _BYTES_PER_PIXEL.get(fmt, 24))
    else:
        per_pixel = _BYTES_PER_PIXEL.get(fmt, 24)
    return _FIXED_COST + pixels * per_pixel


def max_pixels_within(max_decode_bytes: int, fmt: str, alpha: bool = False) -> int:
    """The most pixels an image of `fmt` may have to decode within `max_decode_bytes`."""
    if fmt == "JPEG":
        per_pixel = _JPEG_BYTES_PER_PIXEL
    elif alpha:
        per_pixel = _BYTES_PER_PIXEL_ALPHA.get(fmt, _BYTES_PER_PIXEL.get(fmt, 24))
    else:
        per_pixel = _BYTES_PER_PIXEL.get(fmt, 24)
    return max(0, (max_decode_bytes - _FIXED_COST) // per_pixel)


def _check_decode_cost(img: Image.Image, max_decode_bytes: int) -> None:
    cost = decode_cost(img)
    if cost <= max_decode_bytes:
        return
    width, height = img.size
    # The same kind of image fits up to this many pixels (the cost grows with the pixels).
    fits = (max_decode_bytes - _FIXED_COST) / (cost - _FIXED_COST) * width * height
    mib = 1024 * 1024
    raise ImageTooLarge(
        f"Decoding this {width}x{height} {img.format} image would take about "
        f"{cost / mib:,.0f} MiB of memory; this server decodes up to "
        f"{max_decode_bytes / mib:,.0f} MiB at a time, about {max(fits, 0) / 1e6:.1f} MP "
        "for an image like this one. Send a smaller image."
    )


def _draft_size(width: int, height: int, min_side: int) -> tuple[int, int]:
    """The size to ask ``draft`` for so that the shorter side stays >= ``min_side``."""
    scale = min_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


#: Reductions before conversion keep the shorter side >= this many times ``min_side``:
#: ``to_model_input`` resizes with the same gap, so its result barely changes.
_REDUCING_GAP = 3
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _shrink(img: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by an integer factor, keeping the shorter side >= ``_REDUCING_GAP * min_side``.

    Resizing premultiplies alpha (LA, RGBA), so compositing over white afterwards gives
    the same colours as compositing first.
    """
    factor = min(img.size) // (_REDUCING_GAP * min_side)
    if factor < 2:
        return img
    width, height = img.size
    return img.resize((-(-width // factor), -(-height // factor)), Image.Resampling.BOX)


def _high_bit_to_rgb(img: Image.Image, min_side: int) -> Image.Image:
    """16/32-bit integer or float greyscale to 8-bit RGB, scaled to its range, not clipped.

    The range comes from the full image; the pixels are scaled after the reduction, in
    float32 and in place, so the cost follows the model's input size, not the file's.
    """
    _, high = img.getextrema()
    top = 255.0  # floats in 0..1, or integers wider than 8 bit, set their own white
    if img.mode == "F" and high <= 1.0:
        top = 1.0
    elif img.mode != "F" and high > 255:
        top = 65535.0
    arr = np.array(_shrink(img, min_side), dtype=np.float32)  # a writable copy
    arr *= 255.0 / top
    arr += 0.5
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")


def _to_rgb(img: Image.Image, min_side: int = MODEL_INPUT_SIZE) -> Image.Image:
    """Any mode to 8-bit RGB: transparency over white, 16/32-bit scaled, not clipped."""
    if img.mode in _HIGH_BIT_MODES:
        return _high_bit_to_rgb(img, min_side)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "RGBA"):
        img = _shrink(img, min_side)
    if img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img
