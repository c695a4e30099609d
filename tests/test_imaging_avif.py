"""AVIF uploads (web downloads, recent Android phones) decode like every other format.

What is particular to AVIF: orientation lives in the container (irot/imir boxes), phones
write 10-bit pixels, the "mif1" brand is shared with HEIC, and the image size in the
container is what libavif scales the decoded frame to, so it is what the pixel limit
must check.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image, features

from penguin_api import imaging
from penguin_api.imaging import ImageError, ImageTooLarge, UnsupportedImage
from tests.image_samples import AVIF_10BIT, AVIF_12BIT_ALPHA, avif_bomb
from tests.server import Server
from tests.test_imaging import BLUE, MAX, RED, WHITE, close, encode, halves

pytestmark = pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")

#: Colours of tests.image_samples._scene at points away from its edges.
SCENE_SKY, SCENE_MOON, SCENE_GROUND = (20, 70, 120), (240, 240, 235), (200, 190, 60)


def test_avif_is_an_accepted_format():
    assert "AVIF" in imaging.ACCEPTED_FORMATS
    assert "AVIF" in imaging.ACCEPTED_FORMATS_TEXT


def test_transparent_avif_is_composited_over_white():
    img = Image.new("RGBA", (64, 48), (*RED, 255))
    img.paste((0, 0, 0, 0), (0, 0, 32, 48))
    out = imaging.decode_image(encode(img, "AVIF", quality=95), max_pixels=MAX)
    assert out.mode == "RGB"
    assert close(out.getpixel((8, 24)), WHITE, 6)
    assert close(out.getpixel((56, 24)), RED, 25)


@pytest.mark.parametrize(
    ("orientation", "size", "top_colour"), [(6, (200, 300), RED), (8, (200, 300), BLUE)]
)
def test_avif_orientation_is_applied(orientation, size, top_colour):
    # Pillow writes the EXIF orientation as the container's irot/imir boxes, as phones do.
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(halves(), "AVIF", quality=95, exif=exif.tobytes())
    out = imaging.decode_image(data, max_pixels=MAX)
    assert out.size == size
    assert close(out.getpixel((100, 20)), top_colour, 25)
    assert close(out.getpixel((100, 280)), BLUE if top_colour == RED else RED, 25)


def test_ten_bit_avif_becomes_eight_bit_rgb_with_its_colours():
    out = imaging.decode_image(AVIF_10BIT, max_pixels=MAX, min_side=16)
    assert out.mode == "RGB" and out.size == (48, 36)
    assert close(out.getpixel((30, 10)), SCENE_MOON, 8)
    assert close(out.getpixel((44, 4)), SCENE_SKY, 12)
    assert close(out.getpixel((40, 32)), SCENE_GROUND, 12)


def test_twelve_bit_avif_with_alpha_becomes_rgb_over_white():
    out = imaging.decode_image(AVIF_12BIT_ALPHA, max_pixels=MAX, min_side=16)
    assert out.mode == "RGB" and out.size == (48, 36)
    assert close(out.getpixel((4, 4)), WHITE, 4)  # the transparent left third
    assert close(out.getpixel((30, 10)), SCENE_MOON, 8)
    assert close(out.getpixel((40, 32)), SCENE_GROUND, 12)


def test_deep_avif_gives_a_model_input():
    side = imaging.MODEL_INPUT_SIZE  # the library's default
    arr = imaging.prepare(AVIF_10BIT, max_pixels=MAX)
    assert arr.shape == (side, side, 3) and arr.dtype.name == "uint8"


def _rebranded(data: bytes, brand: bytes) -> bytes:
    """The file with its ftyp major brand replaced (same length)."""
    at = data.index(b"ftyp") + 4
    return data[:at] + brand + data[at + 4 :]


def test_avif_and_heic_branded_mif1_both_decode():
    # Both decoders claim "mif1" files; each must still get its own.
    for fmt, brand in (("AVIF", b"avif"), ("HEIF", b"heic")):
        data = encode(halves(), fmt, quality=95)
        assert data[8:12] == brand
        out = imaging.decode_image(_rebranded(data, b"mif1"), max_pixels=MAX)
        assert close(out.getpixel((40, 100)), RED, 25), fmt


def test_avif_over_the_pixel_limit_is_refused_before_decoding():
    # A few hundred bytes whose container promises 100 MP.
    data = avif_bomb(10_000, 10_000)
    assert len(data) < 2_000
    with pytest.raises(ImageTooLarge, match="100,000,000"):
        imaging.decode_image(data, max_pixels=MAX)


def test_avif_beyond_libavif_own_limit_is_refused():
    # libavif stops at 16384 x 16384 while parsing: refused, though as undecodable.
    with pytest.raises(ImageError):
        imaging.decode_image(avif_bomb(20_000, 20_000), max_pixels=MAX)


def test_avif_container_size_is_what_the_limit_checks():
    # The frame is 16 x 16; libavif scales it to the container's size, so 300 x 200 it is.
    out = imaging.decode_image(avif_bomb(300, 200), max_pixels=MAX)
    assert out.size == (300, 200)
    with pytest.raises(ImageTooLarge):
        imaging.decode_image(avif_bomb(300, 200), max_pixels=300 * 200 - 1)


def test_avif_without_its_image_data_is_refused_as_unsupported():
    data = encode(halves(), "AVIF", quality=95)
    mdat = data.index(b"mdat")
    with pytest.raises(UnsupportedImage):
        imaging.decode_image(data[: mdat + 8], max_pixels=MAX)


def test_animated_avif_uses_its_first_frame():
    frames = [halves(), halves(left=BLUE, right=RED)]
    buf = io.BytesIO()
    frames[0].save(buf, "AVIF", save_all=True, append_images=frames[1:], duration=80, quality=95)
    out = imaging.decode_image(buf.getvalue(), max_pixels=MAX)
    assert close(out.getpixel((40, 100)), RED, 25)


def _avif_photos(shared_data: Path) -> list[Path]:
    """The labelled photos that are AVIF whatever their name says (saved from the web)."""
    photos = sorted((shared_data / "penguins").rglob("*.*"))
    found = [p for p in photos if p.is_file() and p.read_bytes()[4:12] == b"ftypavif"]
    if not found:
        pytest.skip("no AVIF photo in the shared photo set")
    return found


def test_avif_photos_from_the_web_give_model_inputs(shared_data: Path, input_size: int):
    for photo in _avif_photos(shared_data):
        arr = imaging.prepare(photo.read_bytes(), max_pixels=MAX, size=input_size)
        assert arr.shape == (input_size, input_size, 3), photo.name
        assert arr.std() > 10, photo.name  # a picture, not a blank


def test_avif_photo_gets_a_prediction_over_http(server: Server, shared_data: Path):
    photo = _avif_photos(shared_data)[0]
    response = requests.post(
        server.url("/predict"),
        files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},  # as the name claims
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["is_penguin"] is True and body["species"], body
