"""The chunked-body judge (penguin_api.chunked) against Gunicorn's own reader: whatever the
event loop lets through, Gunicorn reads without an error, and whatever Gunicorn cannot read,
the loop refuses first. Also the app's last line of defence when Gunicorn's reader does fail.
"""

from __future__ import annotations

import pytest
from flask import Flask, request
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from penguin_api import errors
from penguin_api.chunked import Refusal, transfer_coding_refusal
from penguin_api.request_buffer import RequestBuffer, Verdict

HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def _ours(body: bytes, max_body: int = 1 << 20) -> tuple[Verdict, RequestBuffer]:
    """The loop's verdict once the client has sent `body` and closed its side."""
    buffer = RequestBuffer(max_body=max_body)
    verdict = buffer.feed(HEAD + body)
    if verdict is Verdict.MORE:
        verdict = buffer.end_of_input()
    return verdict, buffer


def _gunicorns(body: bytes) -> bytes | Exception:
    """What Gunicorn's request reader makes of the same bytes: the body, or its error."""
    try:
        req = next(RequestParser(Config(), iter([HEAD + body]), ("127.0.0.1", 0)))
        return req.body.read()
    except Exception as exc:  # any of its parse errors, or NoMoreData for a cut body
        return exc


# --- what the loop refuses, and how --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"zz\r\n", 400, "'zz' is not a hexadecimal"),
        (b"-1\r\n", 400, "'-1' is not a hexadecimal"),
        (b"5 \r\nabcde\r\n", 400, "not a hexadecimal"),  # space only before an extension
        (b"5;=x\r\n", 400, "extension"),
        (b'5;a="x\r\n', 400, "extension"),
        (b"5\r\nabcdefg", 400, "not followed by CRLF"),
        (b"5\r\nabcde\r\n0\r\n: v\r\n\r\n", 400, "is not a field"),
        (b"5\r\nabcde\r\n0\r\nTE: x\r\n\r\n", 400, "may not be sent in a trailer"),
        (b"5\r\nabcde\r\n0\r\nX-A: \x01\r\n\r\n", 400, "malformed value"),
        (b"5\r\nabcde\r\n0\r\nX-A: 1\nX-B: 2", 400, "bare LF"),
        (b"1" * 17 + b"\r\n", 413, "upload limit"),
        (b"401\r\n", 413, "1,025 bytes of chunks"),
    ],
)
def test_bad_chunk_framing_is_refused_as_soon_as_it_is_seen(
    body: bytes, status: int, detail: str
) -> None:
    buffer = RequestBuffer(max_body=1024)
    assert buffer.feed(HEAD + body) is Verdict.REFUSE
    assert buffer.refusal is not None
    assert buffer.refusal.status == status
    assert detail in buffer.refusal.detail


def test_a_body_cut_before_its_last_chunk_is_refused_when_the_client_closes() -> None:
    buffer = RequestBuffer(max_body=1 << 20)
    assert buffer.feed(HEAD + b"5\r\nabcde\r\n") is Verdict.MORE
    assert buffer.end_of_input() is Verdict.REFUSE
    assert buffer.refusal is not None
    assert "before its last, zero-size chunk" in buffer.refusal.detail
    assert "5 bytes of chunk data" in buffer.refusal.detail


def test_a_body_of_one_byte_chunks_is_refused_long_before_its_data_nears_the_limit() -> None:
    buffer = RequestBuffer(max_body=32 << 20)
    buffer.feed(HEAD)
    verdict, chunks = Verdict.MORE, 0
    while verdict is Verdict.MORE and chunks < 1_000_000:
        verdict = buffer.feed(b"1\r\nx\r\n" * 1000)  # 6 bytes each, 1 of them data
        chunks += 1000
    assert verdict is Verdict.REFUSE
    assert buffer.refusal is not None and buffer.refusal.status == 413
    assert "larger chunks" in buffer.refusal.detail
    assert chunks < 200_000  # refused after well under 200 kB of data


def test_a_large_upload_in_one_kilobyte_chunks_is_taken() -> None:
    buffer = RequestBuffer(max_body=32 << 20)
    buffer.feed(HEAD)
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    for _ in range(30):  # 30 MB in 30,720 chunks
        assert buffer.feed(chunk * 1024) is Verdict.MORE
    assert buffer.feed(b"0\r\n\r\n") is Verdict.COMPLETE


@pytest.mark.parametrize(
    ("values", "length", "one_oh", "expected"),
    [
        ([b"chunked"], False, False, None),
        ([b"Chunked"], False, False, None),
        ([b"chunked"], True, False, (400, "bad-framing")),
        ([b"chunked"], False, True, (411, "length-required")),
        ([b"gzip, chunked"], False, False, (501, "unsupported-transfer-coding")),
        ([b"gzip", b"chunked"], False, False, (501, "unsupported-transfer-coding")),
        ([b"identity"], False, False, (400, "bad-framing")),
        ([b"chunked, gzip"], False, False, (400, "bad-framing")),
        ([b"chunked", b"chunked"], False, False, (400, "bad-framing")),
        ([b"chunked,"], False, False, (400, "bad-framing")),
        ([b""], False, False, (400, "bad-framing")),
    ],
)
def test_transfer_codings(
    values: list[bytes], length: bool, one_oh: bool, expected: tuple[int, str] | None
) -> None:
    refusal = transfer_coding_refusal(values, has_length=length, http_1_0=one_oh)
    if expected is None:
        assert refusal is None
    else:
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.problem) == expected
        assert refusal.detail


# --- the same verdict as Gunicorn's reader, on well- and ill-formed bodies ------------------

_JUNK = st.lists(
    st.sampled_from(
        [b"a", b"F", b"0", b"7", b";", b"=", b" ", b"\t", b'"', b"\\", b"\r", b"\n", b"\x01",
         b"-", b":", b"x", b"\xff", b"\r\n"]
    ),
    max_size=8,
).map(b"".join)  # fmt: skip
_GOOD_EXTENSIONS = st.sampled_from([b"", b";a", b";a=1", b' ; a = "q\\"x" ;b', b"\t;x=y"])
_EXTENSIONS = st.one_of(
    _GOOD_EXTENSIONS,
    st.sampled_from([b";a=", b";=1", b';a="x', b"; ", b";a b"]),
    _JUNK.map(lambda junk: b";" + junk),
)
_GOOD_TRAILERS = st.lists(st.sampled_from([b"X-Sum: 1", b"X-A:", b"x_y: 2"]), max_size=2)
_TRAILERS = st.lists(
    st.one_of(st.sampled_from([b"X-Sum: 1", b"Host: x", b"no colon", b" X: y", b"X :1"]), _JUNK),
    max_size=3,
)


@st.composite
def _chunked_bodies(draw: st.DrawFn) -> bytes:
    """A chunked body: well formed about half the time, else with a fault or several."""
    clean = draw(st.booleans())
    extensions = _GOOD_EXTENSIONS if clean else _EXTENSIONS
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=20))
        size = len(data) if clean or draw(st.integers(0, 3)) else draw(st.integers(0, 25))
        size_text = draw(st.sampled_from(["{:x}", "{:X}", "00{:x}"])).format(size).encode()
        if not clean and not draw(st.integers(0, 5)):
            size_text = draw(_JUNK)
        after = (
            b"\r\n" if clean else draw(st.sampled_from([b"\r\n"] * 5 + [b"\n", b"\r", b"", b"xx"]))
        )
        out += size_text + draw(extensions) + b"\r\n" + data + after
    out += b"0" + draw(extensions) + b"\r\n"
    out += b"".join(t + b"\r\n" for t in draw(_GOOD_TRAILERS if clean else _TRAILERS)) + b"\r\n"
    if not clean and draw(st.integers(0, 3)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(body=_chunked_bodies())
def test_the_loop_passes_exactly_what_gunicorns_reader_can_read(body: bytes) -> None:
    verdict, buffer = _ours(body)
    theirs = _gunicorns(body)
    if isinstance(theirs, Exception):
        assert verdict is Verdict.REFUSE, f"Gunicorn refuses it ({theirs!r}), the loop lets it in"
    else:
        assert verdict is Verdict.COMPLETE, f"Gunicorn reads it, the loop says {buffer.refusal}"
        assert buffer._chunked is not None and buffer._chunked.received == len(theirs)


# --- the application, if Gunicorn's reader fails all the same -------------------------------


def test_a_framing_error_from_gunicorns_reader_is_a_400_problem_not_a_500() -> None:
    app = Flask("framing")
    errors.init_app(app, max_upload_bytes=1 << 20)

    @app.post("/read")
    def read() -> bytes:
        return request.get_data()

    req = next(RequestParser(Config(), iter([HEAD + b"zz\r\n"]), ("127.0.0.1", 0)))
    response = app.test_client().post(
        "/read",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": req.body, "wsgi.input_terminated": True},
    )
    assert response.status_code == 400
    assert response.mimetype == errors.PROBLEM_JSON
    assert response.json["type"] == "/problems/bad-framing"
    assert "Invalid chunk size" in response.json["detail"]
