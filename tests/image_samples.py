"""Image files made on the fly for the fuzz and hostile-input tests: good ones and bad ones.

Nothing here is a photo from ../shared/data; every file is drawn by Pillow (or written
byte by byte) so the tests can run anywhere and commit nothing but code.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable

from PIL import Image, ImageDraw

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - pillow-heif is a runtime dependency
    HEIF_AVAILABLE = False


def _scene(size: tuple[int, int] = (48, 36), mode: str = "RGB") -> Image.Image:
    """A small picture with edges and colour, so every codec has real work to do."""
    img = Image.new("RGB", size, (20, 70, 120))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 240, 235))
    draw.rectangle((0, 3 * h // 4, w, h), fill=(200, 190, 60))
    draw.line((0, 0, w, h), fill=(10, 10, 10), width=2)
    return img.convert(mode) if mode != "RGB" else img


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return exif.tobytes()


def _gif_animated() -> bytes:
    frames = [_scene().convert("P"), _scene((48, 36)).rotate(180).convert("P")]
    buf = io.BytesIO()
    frames[0].save(
        buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0, transparency=0
    )
    return buf.getvalue()


def _webp_animated() -> bytes:
    frames = [_scene(), _scene().rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=80)
    return buf.getvalue()


def _png_palette_transparent() -> bytes:
    img = _scene().convert("P")
    return _save(img, "PNG", transparency=0)


def _png_16bit() -> bytes:
    img = _scene().convert("L").point(lambda v: v * 257, "I").convert("I;16")
    return _save(img, "PNG")


def _tiff_float() -> bytes:
    return _save(_scene().convert("F"), "TIFF")


def _heic() -> bytes:
    return _save(_scene(), "HEIF", quality=60)


def _avif_rotated() -> bytes:
    # Pillow stores an EXIF orientation in AVIF as the container's irot/imir boxes.
    return _save(_scene(), "AVIF", quality=60, exif=_exif_rotated())


# Pillow writes only 8-bit AVIF; phones write 10-bit. These two are _scene() (the second
# with its left third transparent) encoded by libavif's avifenc 0.11 at 10 bits 4:2:0 and
# at 12 bits 4:4:4 with alpha, then base64-encoded: 475 and 611 bytes.
AVIF_10BIT = base64.b64decode(
    "AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUEAAADybWV0YQAAAAAAAAAoaGRscgAAAAAAAAAAcGljdAAA"
    "AAAAAAAAAAAAAGxpYmF2aWYAAAAADnBpdG0AAAAAAAEAAAAeaWxvYwAAAABEAAABAAEAAAABAAABGgAAAMEAAAAo"
    "aWluZgAAAAAAAQAAABppbmZlAgAAAAABAABhdjAxQ29sb3IAAAAAamlwcnAAAABLaXBjbwAAABRpc3BlAAAAAAAA"
    "ADAAAAAkAAAAEHBpeGkAAAAAAwoKCgAAAAxhdjFDgSBAAAAAABNjb2xybmNseAABAA0ABoAAAAAXaXBtYQAAAAAA"
    "AAABAAEEAQKDBAAAAMltZGF0EgAKCTgVb42MBDQaQDKxAUWQAkkkkUDbzF7ZQZKBR7oprPw2RnN4xNTvsqZbGs8N"
    "mNJ41Jyr65Wym/3rROm6mCa3Ss7CIU55VGtGohSKSJjLvNoPRY5Bo9ovv9oS4QEr4vVuBP/67DLBXvyqkBRyS68y"
    "XGcC9jNmR6fVbi5LFH1FnpkHrznpNdK3lnIN1Oyw8oxtBO9ctZyolS8djXRfJ4/yTzAxsieOMTK9wYAfEpXPndBN"
    "HxiTEJan+IOUrZ3S5g=="
)
AVIF_12BIT_ALPHA = base64.b64decode(
    "AAAAHGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZgAAAY1tZXRhAAAAAAAAAChoZGxyAAAAAAAAAABwaWN0AAAAAAAA"
    "AAAAAAAAbGliYXZpZgAAAAAOcGl0bQAAAAAAAQAAACxpbG9jAAAAAEQAAAIAAQAAAAEAAAHQAAAAkwACAAAAAQAA"
    "AbEAAAAfAAAAQmlpbmYAAAAAAAIAAAAaaW5mZQIAAAAAAQAAYXYwMUNvbG9yAAAAABppbmZlAgAAAAACAABhdjAx"
    "QWxwaGEAAAAAGmlyZWYAAAAAAAAADmF1eGwAAgABAAEAAADDaXBycAAAAJ1pcGNvAAAAFGlzcGUAAAAAAAAAMAAA"
    "ACQAAAAQcGl4aQAAAAADDAwMAAAADGF2MUOBQGAAAAAAE2NvbHJuY2x4AAEADQAGgAAAAA5waXhpAAAAAAEMAAAA"
    "DGF2MUOBQHwAAAAAOGF1eEMAAAAAdXJuOm1wZWc6bXBlZ0I6Y2ljcDpzeXN0ZW1zOmF1eGlsaWFyeTphbHBoYQAA"
    "AAAeaXBtYQAAAAAAAAACAAEEAQKDBAACBAEFhgcAAAC6bWRhdBIACgZYFW+NjqAyExAAzfaLMbX+MBxlE83vRuKP"
    "x4ASAAoJWBVvjY0BDQaIMoMBRZACSSSRQNf+rO9y8bGW5iGeo0lwiAhg7oEZ9pemIdU197ag26h/XoYN/eiz3szi"
    "F8oYsGLWdZFTkjqvnVJq8YPV2FaasFIQc/M1bG/w+4j0orIsp3wOOqagBQ/vKg6hShkV6zRoIqxoBSkAve9XTvVc"
    "iYmQqQPKim46wBtRAlCEKB0="
)


#: Valid images in every accepted format and most colour modes: name -> builder.
GOOD_BUILDERS: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: _save(_scene(), "JPEG", quality=85),
    "jpeg_progressive_exif": lambda: _save(
        _scene(), "JPEG", quality=80, progressive=True, exif=_exif_rotated()
    ),
    "jpeg_gray": lambda: _save(_scene(mode="L"), "JPEG"),
    "jpeg_cmyk": lambda: _save(_scene(mode="CMYK"), "JPEG"),
    "png_rgb": lambda: _save(_scene(), "PNG"),
    "png_rgba_interlaced": lambda: _save(_scene(mode="RGBA"), "PNG", interlace=1),
    "png_palette_transparent": _png_palette_transparent,
    "png_16bit_gray": _png_16bit,
    "gif_animated": _gif_animated,
    "webp_lossy": lambda: _save(_scene(), "WEBP", quality=60),
    "webp_lossless_alpha": lambda: _save(_scene(mode="RGBA"), "WEBP", lossless=True),
    "webp_animated": _webp_animated,
    "tiff_raw": lambda: _save(_scene(), "TIFF"),
    "tiff_lzw": lambda: _save(_scene(), "TIFF", compression="tiff_lzw"),
    "tiff_deflate_cmyk": lambda: _save(
        _scene(mode="CMYK"), "TIFF", compression="tiff_adobe_deflate"
    ),
    "tiff_jpeg": lambda: _save(_scene(), "TIFF", compression="jpeg"),
    "tiff_float": _tiff_float,
    "bmp_rgb": lambda: _save(_scene(), "BMP"),
    "bmp_palette": lambda: _save(_scene().convert("P"), "BMP"),
    "avif": lambda: _save(_scene(), "AVIF", quality=60),
    "avif_alpha_gray": lambda: _save(_scene(mode="LA").convert("RGBA"), "AVIF", quality=60),
    "avif_rotated": _avif_rotated,
    "avif_10bit": lambda: AVIF_10BIT,
    "avif_12bit_alpha": lambda: AVIF_12BIT_ALPHA,
    **({"heic": _heic} if HEIF_AVAILABLE else {}),
}


def good_images() -> dict[str, bytes]:
    """Every good sample, built now."""
    return {name: build() for name, build in GOOD_BUILDERS.items()}


# --- decompression bombs: small files whose headers promise a huge image -----------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header (correct CRCs) for a width x height grey image, with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # One deflate stream of zero rows, far shorter than the header promises.
    body = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def png_zlib_bomb(side: int = 8_000) -> bytes:
    """A real, complete side x side PNG that compresses to a few kB (a zip bomb in pixels)."""
    return _save(Image.new("L", (side, side), 0), "PNG", optimize=False, compress_level=9)


def gif_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF whose logical screen is width x height, with one 1x1 frame."""
    img = _save(Image.new("P", (1, 1), 0), "GIF")
    return img[:6] + struct.pack("<HH", width, height) + img[10:]


def avif_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A small AVIF whose image size (its ispe box) is rewritten to width x height.

    libavif scales the decoded frame to that size, so up to its own limit (268 MP) the
    file really decodes to width x height pixels: only a pixel limit bounds its cost.
    """
    data = bytearray(_save(_scene((16, 16)), "AVIF"))
    ispe = data.find(b"ispe")
    struct.pack_into(">II", data, ispe + 8, width, height)  # after the version/flags word
    return bytes(data)


def jpeg_bomb(width: int = 65_500, height: int = 65_500) -> bytes:
    """A small JPEG with its SOF0 dimensions rewritten to width x height."""
    data = bytearray(_save(_scene((16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# --- wrong or unsupported media --------------------------------------------------------

PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300">'
    b'<circle cx="150" cy="150" r="100" fill="black"/></svg>\n'
)


def ico() -> bytes:
    """A Windows icon: Pillow reads it, the service must not accept it."""
    return _save(_scene((32, 32)), "ICO")


def psd() -> bytes:
    """A minimal Photoshop file header (8BPS, 3 channels, 64x64, 8-bit RGB, raw image data)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 64, 64, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode, resources, layers: all empty
    return header + sections + struct.pack(">H", 0) + b"\x80" * (64 * 64 * 3)


def ppm() -> bytes:
    """A Netpbm image: a real image format, but not one we accept."""
    return _save(_scene(), "PPM")


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of `data`."""
    return data[: max(1, int(len(data) * keep))]
