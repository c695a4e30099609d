"""imaging: every accepted format and pixel mode becomes the right upright RGB array."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from penguin_api import imaging
from penguin_api.imaging import ImageError, ImageTooLarge, UnsupportedImage

MAX = 50_000_000
RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def close(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


def halves(size=(300, 200), left=RED, right=BLUE) -> Image.Image:
    """An image whose left half is one colour and right half another (shows rotation)."""
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("HEIF", {"quality": 95}),
        ("AVIF", {"quality": 95}),
    ],
)
def test_every_accepted_format_decodes_to_rgb_with_its_colours(fmt, params):
    data = encode(halves(), fmt, **params)
    img = imaging.decode_image(data, max_pixels=MAX)
    assert img.mode == "RGB"
    assert img.size == (300, 200)
    assert close(img.getpixel((40, 100)), RED, 25)
    assert close(img.getpixel((260, 100)), BLUE, 25)


def test_accepted_formats_text_names_every_format_a_user_knows():
    for name in ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF", "HEIC", "AVIF"):
        assert name in imaging.ACCEPTED_FORMATS_TEXT


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in (GREEN, RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = imaging.decode_image(data, max_pixels=MAX)
    assert close(img.getpixel((32, 32)), GREEN, 30)


def test_transparent_rgba_is_composited_over_white():
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    img.paste((200, 0, 0, 255), (0, 0, 50, 100))
    out = imaging.decode_image(encode(img, "PNG"), max_pixels=MAX)
    assert out.mode == "RGB"
    assert out.getpixel((10, 50)) == (200, 0, 0)
    assert out.getpixel((90, 50)) == WHITE


def test_half_transparent_rgba_blends_with_white():
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 128))
    out = imaging.decode_image(encode(img, "PNG"), max_pixels=MAX)
    assert close(out.getpixel((5, 5)), (127, 127, 127), 2)


def test_greyscale_with_alpha_becomes_rgb_over_white():
    img = Image.new("LA", (20, 20), (0, 0))
    img.paste((60, 255), (0, 0, 10, 20))
    out = imaging.decode_image(encode(img, "PNG"), max_pixels=MAX)
    assert out.getpixel((5, 5)) == (60, 60, 60)
    assert out.getpixel((15, 5)) == WHITE


def test_palette_with_transparent_index_becomes_white_there():
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 10, 150, 10] + [0] * 762)
    img.paste(1, (0, 0, 10, 20))
    data = encode(img, "PNG", transparency=0)
    out = imaging.decode_image(data, max_pixels=MAX)
    assert out.getpixel((5, 5)) == (10, 150, 10)
    assert out.getpixel((15, 5)) == WHITE


def test_palette_gif_with_transparency_becomes_rgb():
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    img.paste(1, (0, 0, 10, 20))
    out = imaging.decode_image(encode(img, "GIF", transparency=0), max_pixels=MAX)
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (200, 30, 30)
    assert out.getpixel((15, 5)) == WHITE


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour():
    img = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure red in CMYK
    out = imaging.decode_image(encode(img, "JPEG", quality=95), max_pixels=MAX)
    assert out.mode == "RGB"
    assert close(out.getpixel((32, 32)), (255, 0, 0), 20)


def test_greyscale_jpeg_becomes_three_equal_channels():
    out = imaging.decode_image(encode(Image.new("L", (64, 64), 90), "JPEG"), max_pixels=MAX)
    r, g, b = out.getpixel((32, 32))
    assert r == g == b and abs(r - 90) <= 2


def test_one_bit_image_becomes_black_and_white_rgb():
    img = Image.new("1", (32, 32), 0)
    img.paste(1, (0, 0, 16, 32))
    out = imaging.decode_image(encode(img, "PNG"), max_pixels=MAX)
    assert out.getpixel((4, 4)) == WHITE and out.getpixel((28, 4)) == (0, 0, 0)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(fmt):
    values = np.full((32, 32), 32768, dtype=np.uint16)
    values[:, :16] = 65535
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = imaging.decode_image(encode(img, fmt), max_pixels=MAX)
    assert out.getpixel((4, 4)) == WHITE
    assert close(out.getpixel((28, 4)), (128, 128, 128), 1)


def test_sixteen_bit_rgb_png_keeps_its_colours():
    # Pillow has no 48-bit mode to save from, so write the PNG chunks directly.
    width, height = 8, 4
    row = b"\x00" + struct.pack(">HHH", 65535, 0, 32768) * width
    data = _png(width, height, bit_depth=16, colour_type=2, raw=row * height)
    out = imaging.decode_image(data, max_pixels=MAX)
    assert out.mode == "RGB"
    assert close(out.getpixel((2, 2)), (255, 0, 128), 1)


def test_heic_is_read_by_a_libheif_with_the_2026_security_fixes():
    # Uploads are untrusted: libheif up to 1.23.4 has out-of-bounds reads and writes that
    # crafted HEIF files reach (one with a working exploit). The version that reads them
    # is the one bundled in the pillow-heif wheel, which no advisory scanner sees.
    import pillow_heif

    version = tuple(int(part) for part in pillow_heif.libheif_version().split(".")[:3])
    assert version >= (1, 23, 5), pillow_heif.libheif_version()


def test_heic_with_alpha_becomes_rgb():
    data = encode(Image.new("RGBA", (64, 48), (200, 10, 10, 255)), "HEIF")
    out = imaging.decode_image(data, max_pixels=MAX)
    assert out.mode == "RGB" and close(out.getpixel((30, 20)), (200, 10, 10), 25)


@pytest.mark.parametrize(
    ("orientation", "size", "top_colour"),
    [(1, (300, 200), None), (3, (300, 200), None), (6, (200, 300), RED), (8, (200, 300), BLUE)],
)
def test_exif_orientation_is_applied(orientation, size, top_colour):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(halves(), "JPEG", quality=95, exif=exif.tobytes())
    out = imaging.decode_image(data, max_pixels=MAX)
    assert out.size == size
    if orientation == 3:  # upside down: red ends on the right
        assert close(out.getpixel((260, 100)), RED, 25)
    elif top_colour is not None:
        assert close(out.getpixel((100, 20)), top_colour, 25)
        other = BLUE if top_colour == RED else RED
        assert close(out.getpixel((100, 280)), other, 25)
    else:
        assert close(out.getpixel((40, 100)), RED, 25)


def test_large_jpeg_is_decoded_at_reduced_size_but_not_below_min_side(input_size):
    big = halves(size=(4000, 3000))
    data = encode(big, "JPEG", quality=85)
    out = imaging.decode_image(data, max_pixels=MAX, min_side=input_size)
    assert out.size[0] < 4000 and min(out.size) >= input_size
    assert out.size[0] / out.size[1] == pytest.approx(4 / 3, rel=0.02)


def test_image_over_the_pixel_limit_is_refused_as_too_large():
    data = encode(Image.new("RGB", (1000, 1000)), "PNG")
    with pytest.raises(ImageTooLarge, match="1,000,000"):
        imaging.decode_image(data, max_pixels=999_999)


def test_decompression_bomb_header_is_refused_before_decoding():
    # 100,000 x 100,000 pixels claimed by a few hundred bytes of PNG.
    data = _png(100_000, 100_000, bit_depth=8, colour_type=0, raw=zlib.compress(b"\x00" * 1000))
    with pytest.raises(ImageTooLarge):
        imaging.decode_image(data, max_pixels=MAX)


def test_gif_bomb_header_is_refused():
    size = struct.pack("<HH", 65535, 65535)
    header = (
        b"GIF89a" + size + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"  # 2-colour table
        + b"," + struct.pack("<HH", 0, 0) + size + b"\x00"  # one frame, the full screen
        + b"\x02\x02\x4c\x01\x00;"  # a few bytes of LZW data
    )  # fmt: skip
    with pytest.raises(ImageTooLarge):
        imaging.decode_image(header, max_pixels=MAX)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "HEIF", "AVIF"])
def test_truncated_image_is_refused_as_unsupported(fmt):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))
    data = encode(noise, fmt)
    with pytest.raises(UnsupportedImage):
        imaging.decode_image(data[: len(data) // 2], max_pixels=MAX)


@pytest.mark.parametrize(
    "data", [b"", b"hello, not an image", b"%PDF-1.4\n%\xe2\xe3\n", b"\x89PNG\r\n\x1a\n"]
)
def test_non_images_are_refused_as_unsupported(data):
    with pytest.raises(UnsupportedImage):
        imaging.decode_image(data, max_pixels=MAX)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA"])
def test_formats_pillow_reads_but_we_do_not_accept_are_refused(fmt):
    data = encode(Image.new("RGB", (32, 32), RED), fmt)
    with pytest.raises(UnsupportedImage, match="accepted format"):
        imaging.decode_image(data, max_pixels=MAX)


def test_every_refusal_is_an_image_error():
    assert issubclass(UnsupportedImage, ImageError) and issubclass(ImageTooLarge, ImageError)


def test_model_input_is_a_centre_square_of_the_right_size():
    img = Image.new("RGB", (600, 300), RED)
    img.paste(GREEN, (150, 0, 450, 300))  # the middle square
    img.paste(BLUE, (450, 0, 600, 300))
    side = imaging.MODEL_INPUT_SIZE  # the library's default
    arr = imaging.to_model_input(img)
    assert arr.shape == (side, side, 3) and arr.dtype == np.uint8
    assert close(arr[side // 2, 5], GREEN, 10) and close(arr[side // 2, side - 6], GREEN, 10)


def test_tiny_images_are_scaled_up_to_the_model_size(input_size):
    data = encode(Image.new("RGB", (3, 2), RED), "PNG")
    arr = imaging.prepare(data, max_pixels=MAX, size=input_size)
    assert arr.shape == (input_size, input_size, 3) and close(arr[100, 100], RED, 1)


def test_prepare_is_decode_then_to_model_input():
    data = encode(halves(size=(640, 480)), "JPEG")
    expected = imaging.to_model_input(imaging.decode_image(data, max_pixels=MAX))
    np.testing.assert_array_equal(imaging.prepare(data, max_pixels=MAX), expected)


def test_prepare_honours_another_size():
    arr = imaging.prepare(encode(halves(), "PNG"), max_pixels=MAX, size=96)
    assert arr.shape == (96, 96, 3)


def test_twelve_megapixel_jpeg_gives_nearly_the_same_input_as_its_small_version(input_size):
    big = halves(size=(4032, 3024))
    small = big.resize((round(input_size * 4 / 3), input_size))  # 4:3 at the model's size
    a = imaging.prepare(encode(big, "JPEG", quality=90), max_pixels=MAX, size=input_size)
    b = imaging.prepare(encode(small, "JPEG", quality=90), max_pixels=MAX, size=input_size)
    a, b = a.astype(int), b.astype(int)
    assert np.mean(np.abs(a - b)) < 4


def _png(width: int, height: int, *, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG built chunk by chunk (for modes and headers Pillow will not write)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = raw if raw[:1] == b"\x78" else zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
