"""`uncertain` in answers follows the card's thresholds.confident: real Gunicorn, real photos.

Two servers run copies of the shipped model that differ only in that threshold: one at 1.0
(every answer short of certainty is uncertain), one below 1/number-of-species (no top
answer of a softmax can fall under it). The card's sha256 covers the ONNX file, not the
card, so the copies load like the original.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server import CARD_FILE, Server, copy_model_with_thresholds, running_server


@pytest.fixture(scope="module")
def low_threshold(model_dir: Path) -> float:
    """Below the smallest top-1 confidence any answer can have (1 / number of species)."""
    labels = json.loads((model_dir / CARD_FILE).read_text())["labels"]
    return round(0.5 / len(labels), 4)


@pytest.fixture(scope="module")
def strict(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The model with thresholds.confident = 1.0."""
    model = copy_model_with_thresholds(tmp_path_factory.mktemp("strict"), model_dir, confident=1.0)
    with running_server(workers=1, model_dir=model) as srv:
        yield srv


@pytest.fixture(scope="module")
def lenient(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, low_threshold: float
) -> Iterator[Server]:
    """The model with thresholds.confident below any possible top-1 confidence."""
    model = copy_model_with_thresholds(
        tmp_path_factory.mktemp("lenient"), model_dir, confident=low_threshold
    )
    with running_server(workers=1, model_dir=model) as srv:
        yield srv


def ask(server: Server, photo: Path) -> dict[str, Any]:
    response = requests.post(
        server.url("/predict"), files={"file": (photo.name, photo.read_bytes())}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def refused_photo(strict: Server, shared_data: Path) -> Path:
    """A real non-penguin photo the gate turns away."""
    for photo in sorted((shared_data / "not_penguin" / "val").glob("*.jp*g"))[:20]:
        if ask(strict, photo)["is_penguin"] is False:
            return photo
    pytest.fail("the gate let each of the first 20 validation non-penguins through")


def test_a_real_photo_is_uncertain_under_a_high_threshold_and_sure_under_a_low_one(
    strict, lenient, penguin_photo
):
    unsure, sure = ask(strict, penguin_photo), ask(lenient, penguin_photo)
    assert unsure["is_penguin"] and unsure["confidence"] < 1.0
    assert (unsure["uncertain"], sure["uncertain"]) == (True, False)
    # Nothing else changes: a client that ignores the flag gets the answer it always got.
    del unsure["uncertain"], sure["uncertain"]
    assert unsure == sure


def test_each_batch_entry_carries_its_own_flag(strict, lenient, penguin_photo, refused_photo):
    files = [
        ("file", ("penguin.jpg", penguin_photo.read_bytes())),
        ("file", ("no-penguin.jpg", refused_photo.read_bytes())),
        ("file", ("broken.jpg", b"not a photo")),
    ]
    flags = {}
    for name, server in (("strict", strict), ("lenient", lenient)):
        response = requests.post(server.url("/predict/batch"), files=files, timeout=30)
        assert response.status_code == 200
        penguin, no_penguin, broken = response.json()["results"]
        assert penguin == {"filename": "penguin.jpg", **ask(server, penguin_photo)}
        flags[name] = penguin["uncertain"]
        # No species answer, so nothing to be unsure of; a refused file has no answer at all.
        assert no_penguin["species"] is None and no_penguin["uncertain"] is None
        assert "error" in broken and "uncertain" not in broken
    assert flags == {"strict": True, "lenient": False}


def test_uncertain_means_confidence_below_the_threshold_the_model_endpoint_shows(
    strict, lenient, low_threshold, shared_data
):
    photos = sorted((shared_data / "penguins" / "val").glob("*/*.jp*g"))[::15][:8]
    for server, threshold in ((strict, 1.0), (lenient, low_threshold)):
        card = requests.get(server.url("/model"), timeout=10).json()
        assert card["thresholds"]["confident"] == threshold
        for photo in photos:
            answer = ask(server, photo)
            if answer["is_penguin"]:
                assert answer["uncertain"] is (answer["confidence"] < threshold), photo.name
            else:
                assert answer["uncertain"] is None, photo.name


def test_answers_with_the_flag_set_and_the_card_match_the_openapi_document(
    strict, penguin_photo, refused_photo
):
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(requests.get(strict.url("/openapi.json")).json())
    files = [("file", (p.name, p.read_bytes())) for p in (penguin_photo, refused_photo)]
    single = requests.post(strict.url("/predict"), files=files[:1], timeout=30)
    batch = requests.post(strict.url("/predict/batch"), files=files, timeout=30)
    card = requests.get(strict.url("/model"), timeout=10)
    assert single.json()["uncertain"] is True
    assert [r["uncertain"] for r in batch.json()["results"]] == [True, None]
    schema["/predict"]["POST"].validate_response(single)
    schema["/predict/batch"]["POST"].validate_response(batch)
    schema["/model"]["GET"].validate_response(card)
