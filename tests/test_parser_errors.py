"""What a request gets when Gunicorn fails while reading or answering it: a problem, never
Gunicorn's HTML page. The statuses for real heads are tested over a socket in
tests/test_request_framing.py; these are the cases no client can send on purpose."""

from __future__ import annotations

from gunicorn.http import errors as http_errors

from penguin_api.connection import gunicorn_error_problem, loop_problem_response


def test_an_error_that_is_not_the_clients_is_an_internal_error() -> None:
    slug, detail = gunicorn_error_problem(RuntimeError("socket layer broke: secret path /x"))
    assert slug == "internal-error"
    assert "secret" not in detail


def test_a_header_the_app_tried_to_send_is_our_fault_not_the_clients() -> None:
    slug, _ = gunicorn_error_problem(http_errors.InvalidResponseHeader("X-Bad\n"))
    assert slug == "internal-error"


def test_the_parsers_words_are_cut_short_in_the_detail() -> None:
    slug, detail = gunicorn_error_problem(http_errors.InvalidHeaderName("A" * 5000))
    assert slug == "bad-request"
    assert 200 < len(detail) < 400


def test_the_answer_is_problem_json_and_closes_the_connection() -> None:
    answer = loop_problem_response("headers-too-large", "too big", "abc123", None)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    assert b"Server-Timing" not in head  # no wait to report
    assert b'"type": "/problems/headers-too-large"' in body
    assert f"Content-Length: {len(body)}".encode() in head
