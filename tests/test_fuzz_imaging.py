"""Fuzz the decode path: whatever bytes arrive, `imaging` answers with an array or an ImageError.

Inputs are real images in every accepted format (built in tests/image_samples.py), mutated
the way damaged uploads and hand-made attacks look: flipped bits, overwritten header fields,
"interesting" integers where sizes live, truncation, inserted, deleted and repeated runs.
Each input runs in a sandboxed child (tests/decode_sandbox.py) so that a segfault or a hang
fails the test instead of killing it.

CI runs a bounded number of examples; ``make fuzz`` runs many more
(``FUZZ_EXAMPLES=<n>`` sets the count per test).
"""

from __future__ import annotations

import io
import os
import zlib
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from penguin_api.config import Settings
from tests.decode_sandbox import DecodeSandbox
from tests.image_samples import avif_bomb, gif_bomb, good_images, jpeg_bomb, png_bomb

#: The decode limit the service ships with.
MAX_PIXELS = Settings().max_image_pixels
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))

SEEDS = good_images()
SEED_NAMES = sorted(SEEDS)
#: Bytes at the start of a file that name its format (RIFF....WEBPVP8X is the longest).
SIGNATURE = 16
#: Integers that break size and offset arithmetic when written over a header field.
INTERESTING = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
]

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the sandbox's own timeout is the hang detector
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[DecodeSandbox]:
    """One decoder child for the whole module, replaced if an input kills it."""
    with DecodeSandbox(max_pixels=MAX_PIXELS) as box:
        yield box


@pytest.fixture(scope="module")
def tally(sandbox: DecodeSandbox, request: pytest.FixtureRequest) -> Iterator[Counter]:
    """Count outcomes across the module and print the figures at the end."""
    counts: Counter = Counter()
    yield counts
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(
            f"\nfuzz imaging: {sandbox.inputs} inputs, outcomes {dict(counts)}, "
            f"decoder restarts {sandbox.restarts}"
        )


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A seed image with one to six mutations, half of them in the header.

    Positions start after the format signature (Hypothesis favours small integers, and a
    broken signature only tests format sniffing, which the magic-bytes test covers), so
    most inputs reach a decoder.
    """
    seed = draw(st.sampled_from(SEED_NAMES))
    data = bytearray(SEEDS[seed])
    for _ in range(draw(st.integers(1, 6))):
        size = len(data)
        if size <= SIGNATURE:
            break
        in_header = draw(st.booleans())
        pos = draw(st.integers(SIGNATURE, min(size, 128) - 1 if in_header else size - 1))
        op = draw(
            st.sampled_from(
                ["flip", "overwrite", "interesting", "truncate", "insert", "delete", "repeat"]
            )
        )
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(chunk)] = chunk
        elif op == "interesting":
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            order = draw(st.sampled_from(["big", "little"]))
            data[pos : pos + width] = value.to_bytes(width, order)
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            length = draw(st.integers(1, 256))
            data[pos:pos] = data[pos : pos + length] * draw(st.integers(1, 16))
    if seed.startswith("png") and draw(st.booleans()):
        _fix_png_crcs(data)  # else Pillow stops at the first checksum, before zlib and filters
    return bytes(data)


def _fix_png_crcs(data: bytearray) -> None:
    """Recompute the CRC of every PNG chunk that still fits in `data`, in place."""
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        data[end : end + 4] = (zlib.crc32(data[pos + 4 : end]) & 0xFFFFFFFF).to_bytes(4, "big")
        pos = end + 4


#: Magic numbers of each accepted format: random bytes behind them reach each decoder.
MAGICS = [
    b"\xff\xd8\xff\xe0",
    b"\xff\xd8\xff\xdb",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"GIF87a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"\x00\x00\x00\x18ftypheic",
    b"\x00\x00\x00\x20ftypavif",
    b"\x00\x00\x00\x1cftypmif1",  # claimed by both the AVIF and the HEIF decoder
]


def _check(sandbox: DecodeSandbox, tally: Counter, data: bytes) -> None:
    outcome = sandbox.run(data)
    tally[outcome.kind] += 1
    assert outcome.allowed, (
        f"{outcome.kind} on a {len(data)}-byte input starting {data[:32]!r}:\n{outcome.detail}"
    )


def test_every_seed_image_decodes_to_a_model_input(sandbox: DecodeSandbox, tally: Counter) -> None:
    for name, data in SEEDS.items():
        outcome = sandbox.run(data)
        tally[outcome.kind] += 1
        assert outcome.kind == "ok", f"{name}: {outcome.detail}"


@pytest.mark.parametrize(
    "bomb", [png_bomb, gif_bomb, jpeg_bomb, avif_bomb], ids=lambda f: f.__name__
)
def test_pixel_bombs_are_refused_as_too_large(sandbox: DecodeSandbox, tally: Counter, bomb) -> None:
    outcome = sandbox.run(bomb())
    tally[outcome.kind] += 1
    assert outcome.kind == "image_error" and outcome.detail.startswith("ImageTooLarge"), outcome


def _dense(mode: str, fmt: str, colour: float | int | tuple, **params) -> bytes:
    """A 7,000 x 7,000 image (49 MP, just under the limit) that compresses to ~100-300 kB."""
    buf = io.BytesIO()
    Image.new(mode, (7_000, 7_000), colour).save(buf, fmt, **params)
    return buf.getvalue()


def _peak_growth(data: bytes) -> int:
    """Bytes the decoder process's peak memory grows by to prepare `data` (fresh process)."""
    with DecodeSandbox(max_pixels=MAX_PIXELS) as box:
        warm = box.run(SEEDS["png_rgb"])
        outcome = box.run(data)
    assert outcome.kind == "ok", outcome.detail
    return outcome.peak_rss - warm.peak_rss


@pytest.mark.parametrize(
    ("mode", "fmt", "colour"),
    [("I;16", "PNG", 30_000), ("I", "TIFF", 30_000), ("F", "TIFF", 0.5)],
    ids=["png-16bit", "tiff-int32", "tiff-float"],
)
def test_deep_images_at_the_pixel_limit_cost_no_more_memory_than_plain_rgb(
    mode: str, fmt: str, colour: float, request: pytest.FixtureRequest
) -> None:
    # Converting 16/32-bit pixels at full size once took ~1.3 GB for a 100 kB file.
    params = {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}
    rgb = _peak_growth(_dense("RGB", "PNG", (10, 120, 200)))
    deep = _peak_growth(_dense(mode, fmt, colour, **params))
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n49 MP {mode} {fmt}: +{deep / 2**20:.0f} MiB (RGB PNG +{rgb / 2**20:.0f} MiB)")
    assert deep <= 1.25 * rgb


@FUZZ_SETTINGS
@given(data=mutated_image())
def test_mutated_images_give_an_array_or_an_image_error(
    sandbox: DecodeSandbox, tally: Counter, data: bytes
) -> None:
    _check(sandbox, tally, data)


@FUZZ_SETTINGS
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=2048))
def test_random_bytes_behind_a_format_signature_give_an_image_error(
    sandbox: DecodeSandbox, tally: Counter, magic: bytes, body: bytes
) -> None:
    _check(sandbox, tally, magic + body)
