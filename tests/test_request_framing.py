"""Broken body framing and request heads over a raw socket: every chunked body, transfer
coding, missing length or head the server cannot read gets its status and a problem+json
saying what was wrong, and changes nothing — no traceback, no worker restarted, the next
photo answered as before.
Well-framed chunked uploads (many small chunks, extensions, trailers) are answered as the
plain upload is.

The requests are listed in tests/framing_requests.py (rows of docs/reliability.md's table).
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
import requests

from tests.framing_requests import (
    FramingCase,
    bad_cases,
    bad_head_cases,
    chunked,
    good_cases,
    head,
    multipart,
    send,
)
from tests.server import Server, assert_serving_unchanged, metric_value, serving_state

BAD = bad_cases() + bad_head_cases()
GOOD = good_cases()


@pytest.fixture(scope="module")
def photo(penguin_photo: Path) -> bytes:
    return penguin_photo.read_bytes()


@pytest.fixture(scope="module")
def baseline(server: Server, photo: bytes) -> dict:
    """The answer to the photo sent the ordinary way, and who is serving."""
    return serving_state(server, photo)


def _unchanged(server: Server, photo: bytes, baseline: dict) -> None:
    assert_serving_unchanged(server, photo, baseline)
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("case", GOOD, ids=[c.id for c in GOOD])
def test_well_framed_chunked_upload_is_answered_like_the_plain_one(
    server: Server, photo: bytes, baseline: dict, case: FramingCase
) -> None:
    answer = send(server.port, case.build(multipart(photo)), case.closes)

    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.problem() == baseline["answer"]
    _unchanged(server, photo, baseline)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_broken_framing_gets_its_problem_and_changes_nothing(
    server: Server, photo: bytes, baseline: dict, case: FramingCase
) -> None:
    answer = send(server.port, case.build(multipart(photo)), case.closes)

    assert answer.status == case.status, answer.body
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers.get("x-request-id")
    problem = answer.problem()
    assert problem["type"] == f"/problems/{case.problem}"
    assert problem["status"] == case.status
    assert problem["title"]
    assert case.detail in problem["detail"], problem["detail"]
    assert "Traceback" not in problem["detail"]
    _unchanged(server, photo, baseline)


def test_a_photo_trickled_in_small_chunks_and_small_writes_is_answered(
    server: Server, photo: bytes, baseline: dict
) -> None:
    """Chunk lines split across reads: the loop must wait for them, not refuse them."""
    request = chunked(multipart(photo), 97, extension=";n=1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request), 1013):
            sock.sendall(request[i : i + 1013])
        received = b""
        while data := sock.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    _unchanged(server, photo, baseline)


def test_a_head_the_parser_refuses_keeps_the_callers_request_id_and_is_logged(
    server: Server, photo: bytes
) -> None:
    body = multipart(photo)
    request_id = f"refused-{secrets.token_hex(6)}"
    lengths = (f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}")
    answer = send(server.port, head(*lengths, f"X-Request-Id: {request_id}") + body, False)

    assert answer.status == 400, answer.body
    assert answer.headers["x-request-id"] == request_id
    assert answer.problem()["type"] == "/problems/bad-request"

    def logged() -> bool:
        lines = [r for r in server.log_records() if r.get("request_id") == request_id]
        warned = any("refused by the parser" in r.get("message", "") for r in lines)
        accessed = any(
            r.get("httpRequest", {}).get("status") == 400
            and r["httpRequest"].get("requestUrl") == "/predict"
            for r in lines
        )
        return warned and accessed

    server.wait_for(logged, 20, "a warning and an access line for the refused request")


def test_what_the_worker_answers_itself_is_counted_in_the_metrics(
    server: Server, photo: bytes
) -> None:
    def count(status: str, problem: str) -> float:
        name = "penguin_answered_before_app_total"
        return metric_value(server, name, status=status, problem=problem)

    framing_before = count("400", "bad-framing")
    head_before = count("431", "headers-too-large")
    not_hex = next(c for c in BAD if c.id == "size-not-hex")
    assert send(server.port, not_hex.build(multipart(photo)), False).status == 400
    too_big = requests.get(server.url("/health"), headers={"X-Filler": "y" * 9000}, timeout=10)
    assert too_big.status_code == 431

    # Summed over both workers, whichever answered.
    assert count("400", "bad-framing") == framing_before + 1
    assert count("431", "headers-too-large") == head_before + 1
