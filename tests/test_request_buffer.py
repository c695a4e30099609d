"""Framing requests as their bytes arrive: when is a request whole, when must it be refused,
and when is it not ours to judge (penguin_api.request_buffer, used by the worker's event loop).
The chunked rules themselves are tested against Gunicorn's reader in tests/test_chunked.py."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penguin_api.request_buffer import RequestBuffer, Verdict

BODY = b"--b\r\nContent-Disposition: form-data; name=file; filename=a.jpg\r\n\r\nJPEG\r\n--b--\r\n"


def _head(*fields: str, line: str = "POST /predict HTTP/1.1") -> bytes:
    return ("\r\n".join([line, "Host: x", *fields]) + "\r\n\r\n").encode()


def _feed_bytewise(buffer: RequestBuffer, data: bytes) -> list[Verdict]:
    return [buffer.feed(data[i : i + 1]) for i in range(len(data))]


def test_a_request_with_content_length_is_complete_exactly_at_its_last_byte() -> None:
    request = _head(f"Content-Length: {len(BODY)}") + BODY
    verdicts = _feed_bytewise(RequestBuffer(max_body=1 << 20), request)
    assert verdicts[:-1] == [Verdict.MORE] * (len(request) - 1)
    assert verdicts[-1] is Verdict.COMPLETE


def test_a_request_without_a_body_is_complete_when_its_head_is() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(b"GET /health HTTP/1.1\r\nHost: x\r\n") is Verdict.MORE
    assert not buffer.head_received
    assert buffer.feed(b"\r\n") is Verdict.COMPLETE
    assert buffer.head_received


def test_a_chunked_body_is_complete_after_its_last_chunk_and_empty_trailer() -> None:
    body = b"4\r\nJPEG\r\n10;ext=1\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    request = _head("Transfer-Encoding: chunked") + body
    verdicts = _feed_bytewise(RequestBuffer(max_body=1 << 20), request)
    assert verdicts[-1] is Verdict.COMPLETE
    assert Verdict.COMPLETE not in verdicts[:-1]


def test_a_chunked_body_with_trailer_fields_is_complete_after_them() -> None:
    request = _head("Transfer-Encoding: chunked") + b"2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n"
    verdicts = _feed_bytewise(RequestBuffer(max_body=1 << 20), request)
    assert verdicts[-1] is Verdict.COMPLETE
    assert Verdict.COMPLETE not in verdicts[:-1]


def test_a_declared_body_over_the_limit_is_handed_over_at_once_without_its_expect() -> None:
    buffer = RequestBuffer(max_body=1000)
    request = _head("Content-Length: 1001", "Expect: 100-continue")
    assert buffer.feed(request) is Verdict.TOO_LARGE
    # The application refuses it; no "100 Continue" invites the client to send it anyway.
    assert not buffer.continue_due
    assert b"expect" not in bytes(buffer.data).lower()


def test_a_chunked_body_past_the_limit_is_refused_as_too_large() -> None:
    buffer = RequestBuffer(max_body=1000)
    buffer.feed(_head("Transfer-Encoding: chunked"))
    verdict = Verdict.MORE
    for _ in range(2000):
        verdict = buffer.feed(b"400\r\n" + b"x" * 1024 + b"\r\n")
        if verdict is not Verdict.MORE:
            break
    assert verdict is Verdict.REFUSE
    assert buffer.refusal is not None
    assert (buffer.refusal.status, buffer.refusal.problem) == (413, "upload-too-large")


def test_expect_100_continue_is_answered_once_when_the_body_has_not_started() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(_head(f"Content-Length: {len(BODY)}", "Expect: 100-continue")) is (
        Verdict.MORE
    )
    assert buffer.continue_due
    # The loop answers it, so Gunicorn must not see the expectation and answer it again.
    assert b"expect" not in bytes(buffer.data).lower()
    buffer.continue_due = False
    assert buffer.feed(BODY) is Verdict.COMPLETE
    assert not buffer.continue_due


def test_expect_on_http_1_0_or_without_a_body_asks_for_nothing() -> None:
    one_oh = RequestBuffer(max_body=1 << 20)
    one_oh.feed(_head("Content-Length: 4", "Expect: 100-continue", line="POST / HTTP/1.0"))
    no_body = RequestBuffer(max_body=1 << 20)
    no_body.feed(_head("Expect: 100-continue"))
    assert not one_oh.continue_due
    assert not no_body.continue_due


@pytest.mark.parametrize(
    "fields",
    [
        ("Content-Length: 4", "Content-Length: 5"),  # two different lengths
        ("Content-Length: -4",),
        ("Content-Length: 4x",),
        ("Not a header line",),
    ],
)
def test_framing_in_doubt_is_handed_to_gunicorn_at_once(fields: tuple[str, ...]) -> None:
    assert RequestBuffer(max_body=1 << 20).feed(_head(*fields)) is Verdict.HAND_OVER


@pytest.mark.parametrize(
    ("fields", "status", "problem"),
    [
        (("Content-Length: 4", "Transfer-Encoding: chunked"), 400, "bad-framing"),  # smuggling
        (("Transfer-Encoding: gzip, chunked",), 501, "unsupported-transfer-coding"),
        (("Transfer-Encoding: identity",), 400, "bad-framing"),
    ],
)
def test_a_transfer_coding_that_cannot_be_read_is_refused_from_the_head(
    fields: tuple[str, ...], status: int, problem: str
) -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(_head(*fields)) is Verdict.REFUSE
    assert buffer.refusal is not None
    assert (buffer.refusal.status, buffer.refusal.problem) == (status, problem)


def test_a_bad_chunk_size_is_refused_before_its_line_ends() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    buffer.feed(_head("Transfer-Encoding: chunked"))
    assert buffer.feed(b"z") is Verdict.REFUSE
    assert buffer.refusal is not None and buffer.refusal.status == 400


def test_a_cut_content_length_body_is_still_left_to_the_app() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(_head("Content-Length: 10") + b"JPEG") is Verdict.MORE
    assert buffer.end_of_input() is Verdict.COMPLETE


def test_a_head_past_gunicorns_limits_is_handed_over_before_it_ends() -> None:
    buffer = RequestBuffer(max_body=1 << 20, max_head=4096)
    assert buffer.feed(b"GET /" + b"a" * 4000) is Verdict.MORE
    assert buffer.feed(b"a" * 200) is Verdict.HAND_OVER


def test_a_line_ended_by_a_bare_lf_is_handed_over_at_once() -> None:
    assert RequestBuffer(max_body=1 << 20).feed(b"GET /health HTTP/1.1\n") is Verdict.HAND_OVER


def test_a_crlf_split_between_reads_is_not_a_bare_lf() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(b"GET /health HTTP/1.1\r") is Verdict.MORE
    assert buffer.feed(b"\nHost: x\r") is Verdict.MORE
    assert buffer.feed(b"\n\r") is Verdict.MORE
    assert buffer.feed(b"\n") is Verdict.COMPLETE


def test_repeated_equal_content_lengths_are_one_length() -> None:
    request = _head("Content-Length: 4", "content-length: 4") + b"JPEG"
    assert RequestBuffer(max_body=1 << 20).feed(request) is Verdict.COMPLETE


# --- any bytes, in any pieces ----------------------------------------------------------------

_PIECES = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@_PIECES
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=12))
def test_any_bytes_in_any_pieces_give_a_verdict_never_an_exception(
    data: bytes, cuts: list[int]
) -> None:
    buffer = RequestBuffer(max_body=256, max_head=512)
    for piece in _split(b"POST / HTTP/1.1\r\n" + data, cuts):
        if buffer.feed(piece) is not Verdict.MORE:
            break


@_PIECES
@given(
    body=st.binary(max_size=300),
    chunked=st.booleans(),
    chunk_size=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_a_request_is_complete_at_its_last_byte_however_it_is_split(
    body: bytes, chunked: bool, chunk_size: int, cuts: list[int]
) -> None:
    if chunked:
        framed = b"".join(
            f"{len(body[i : i + chunk_size]):x}\r\n".encode() + body[i : i + chunk_size] + b"\r\n"
            for i in range(0, len(body), chunk_size)
        )
        request = _head("Transfer-Encoding: chunked") + framed + b"0\r\n\r\n"
    else:
        request = _head(f"Content-Length: {len(body)}") + body
    buffer = RequestBuffer(max_body=1 << 20)
    pieces = _split(request, cuts)
    verdicts = [buffer.feed(piece) for piece in pieces]
    assert verdicts[-1] is Verdict.COMPLETE
    assert all(v is Verdict.MORE for v in verdicts[:-1])
    assert bytes(buffer.data) == request
