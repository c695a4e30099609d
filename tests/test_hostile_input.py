"""Hostile input over HTTP: every bad request gets its status and a problem+json with a detail,
and changes nothing — the next good photo gets the same answer, from the same workers.

The requests are listed in tests/hostile_requests.py (which also prints the table in
docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.hostile_requests import Case, cases
from tests.server import Server, assert_serving_unchanged, serving_state

CASES = cases()


@pytest.fixture(scope="module")
def photo(penguin_photo: Path) -> bytes:
    return penguin_photo.read_bytes()


@pytest.fixture(scope="module")
def baseline(server: Server, photo: bytes) -> dict:
    """What the service says about the photo before any bad request, and who is serving."""
    return serving_state(server, photo)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_gets_its_problem_and_changes_nothing(
    server: Server, photo: bytes, baseline: dict, case: Case
) -> None:
    response = case.send(server.base_url)

    assert response.status_code == case.status, response.text
    assert "Traceback" not in response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith(f"/problems/{case.problem}")
    assert problem["status"] == case.status
    assert problem["title"]
    assert problem["detail"].strip()
    assert response.headers.get("X-Request-Id")

    assert_serving_unchanged(server, photo, baseline)


def test_batch_with_one_bad_file_answers_the_good_ones(
    server: Server, photo: bytes, baseline: dict
) -> None:
    files = [
        ("file", ("good.jpg", photo, "image/jpeg")),
        ("file", ("bad.jpg", b"not an image", "image/jpeg")),
        ("file", ("empty.jpg", b"", "image/jpeg")),
        ("file", ("good-again.jpg", photo, "image/jpeg")),
    ]
    response = requests.post(server.url("/predict/batch"), files=files, timeout=60)

    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["filename"] for r in results] == [
        "good.jpg",
        "bad.jpg",
        "empty.jpg",
        "good-again.jpg",
    ]
    assert (body["succeeded"], body["failed"]) == (2, 2)
    assert results[1]["error"]["status"] == 415
    assert results[2]["error"]["status"] == 400
    expected = baseline["answer"]
    for good in (results[0], results[3]):
        assert good["species"] == expected["species"]
        assert good["penguin_score"] == pytest.approx(expected["penguin_score"], abs=1e-3)


def test_no_bad_request_left_a_trace_in_the_logs(server: Server, baseline: dict) -> None:
    logs = server.logs()
    assert "Traceback" not in logs
    assert "WORKER TIMEOUT" not in logs
    assert server.workers_booted() == baseline["booted"]
