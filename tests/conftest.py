"""Shared fixtures: a real server, the shared photo set, sample images made on the fly,
the Makefile run against a recording gcloud."""

from __future__ import annotations

import functools
import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fake_gcloud import run_make
from tests.server import (
    DEFAULT_MODEL_DIR,
    REPO_ROOT,
    Server,
    model_available,
    model_input_size,
    running_server,
)

SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start, however the suite itself was started.

    A non-interactive shell starts a background job (`make test &`, `nohup ... &`) with
    SIGINT ignored, and an ignored signal stays ignored across exec: every CLI, server and
    `make` a test started would then shrug off the Ctrl-C the test sends it. A handled
    signal is reset to its default in a new program, as in a terminal's foreground job.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model directory; tests that need a model skip when it is absent."""
    if not model_available(DEFAULT_MODEL_DIR):
        pytest.skip(f"no model in {DEFAULT_MODEL_DIR} (penguin-classifier.onnx + model-card.json)")
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def input_size(model_dir: Path) -> int:
    """The side of the shipped model's input (its card's `input.size`): the size the service
    prepares every upload to. Tests of the service path use this, never a number of their own."""
    return model_input_size(model_dir)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    """Real Gunicorn, 2 workers, the shipped model, ready; shared by a test module."""
    with running_server(workers=2, model_dir=model_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (labelled photos, read only); skip when it is not there."""
    if not (SHARED_DATA / "penguins").is_dir():
        pytest.skip(f"shared photo set not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def penguin_photo(shared_data: Path) -> Path:
    """One real labelled penguin photo from the validation split."""
    photos = sorted((shared_data / "penguins" / "val").glob("*/*.jp*g"))
    if not photos:
        pytest.skip("no JPEG penguin photos in the shared validation split")
    return photos[0]


@pytest.fixture(scope="session")
def small_jpeg() -> bytes:
    """A 320x240 JPEG drawn here (no photo needed): enough for the API's happy path."""
    img = Image.new("RGB", (320, 240), (30, 60, 90))
    img.paste((240, 240, 240), (100, 60, 220, 200))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def make(tmp_path: Path):
    """`make(target, NAME=value, ...)` with the recording gcloud; returns a MakeRun."""
    return functools.partial(run_make, tmp_path)
