"""Uploads with broken body framing (chunked bodies, transfer codings, lengths), and request
heads an HTTP parser must refuse, as raw bytes.

Each case is a whole request, most built around a real photo's multipart body, sent on a plain
socket (no HTTP client sends such bytes), with the status, problem type and a piece of
the detail it must get. tests/test_request_framing.py sends them; they are rows of the
"Bad input" table of docs/reliability.md (``python -m tests.hostile_requests``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from penguin_api.config import Settings

BOUNDARY = "penguin-boundary"
LIMIT = Settings().max_upload_bytes


@dataclass(frozen=True)
class Answer:
    """What came back on the socket."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def problem(self) -> dict:
        return json.loads(self.body)


@dataclass(frozen=True)
class FramingCase:
    """One request: what it is, its bytes (from the photo's multipart body), what must come back.

    `closes`: the client closes its side after sending (the body ends there); otherwise it
    keeps the connection open and the server must answer without waiting for more.
    """

    id: str
    what: str
    build: Callable[[bytes], bytes]
    status: int
    problem: str | None  # None: a good request, answered 200
    detail: str = ""  # a piece of the problem's detail
    closes: bool = False


def multipart(photo: bytes) -> bytes:
    """The multipart/form-data body carrying `photo` in the field `file`."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="penguin.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def head(*fields: str, version: str = "HTTP/1.1") -> bytes:
    """A POST /predict head with the multipart content type and `fields`."""
    lines = [
        f"POST /predict {version}",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        *fields,
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


CHUNKED = "Transfer-Encoding: chunked"


def chunks(body: bytes, size: int, extension: str = "") -> bytes:
    """`body` as chunks of `size` bytes (each size line with `extension`), without the last."""
    return b"".join(
        f"{len(body[i : i + size]):x}{extension}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )


def chunked(body: bytes, size: int = 1 << 20, extension: str = "", end: bytes = b"0\r\n\r\n"):
    """A whole chunked request carrying `body`."""
    return head(CHUNKED) + chunks(body, size, extension) + end


def _prefix(framing: bytes) -> Callable[[bytes], bytes]:
    """A chunked request whose body starts with `framing`, then the photo as it should be."""
    return lambda body: head(CHUNKED) + framing + chunks(body, 4096) + b"0\r\n\r\n"


def _over_limit_in_chunks(body: bytes) -> bytes:
    """Well-formed 1 MiB chunks, one more than the upload limit takes."""
    mib = bytes(range(256)) * 4096
    return head(CHUNKED) + chunks(mib * (LIMIT // len(mib) + 1), len(mib)) + b"0\r\n\r\n"


def good_cases() -> list[FramingCase]:
    """Chunked uploads that are well framed: each must be answered like the plain upload."""
    return [
        FramingCase("one-chunk", "the photo in one chunk", chunked, 200, None),
        FramingCase("small-chunks", "the photo in 64-byte chunks",
                    lambda b: chunked(b, 64), 200, None),
        FramingCase("extensions", "chunks with extensions (token and quoted values, spaces "
                    "before ';')", lambda b: chunked(b, 1000, ' ;a=1;flag; q="x;\\"y"'), 200,
                    None),
        FramingCase("trailer", "a trailer field after the last chunk",
                    lambda b: chunked(b, 5000, end=b"0\r\nX-Checksum: abc\r\n\r\n"), 200, None),
        FramingCase("upper-hex", "chunk sizes in upper-case hex with leading zeros",
                    lambda b: head(CHUNKED) + b"".join(
                        f"{len(b[i:i + 3000]):08X}\r\n".encode() + b[i:i + 3000] + b"\r\n"
                        for i in range(0, len(b), 3000)) + b"0\r\n\r\n", 200, None),
    ]  # fmt: skip


def bad_cases() -> list[FramingCase]:
    """Requests whose framing cannot be read: each gets its status and a problem."""
    over = f"{LIMIT + 1:x}"
    return [
        FramingCase("size-not-hex", "chunked: a chunk-size line that is not hex (`zz`)",
                    _prefix(b"zz\r\nabc\r\n"), 400, "bad-framing", "'zz' is not a hexadecimal"),
        FramingCase("size-negative", "chunked: a negative chunk size (`-5`)",
                    _prefix(b"-5\r\nabcde\r\n"), 400, "bad-framing", "'-5' is not a hexadecimal"),
        FramingCase("size-empty", "chunked: an empty chunk-size line",
                    _prefix(b"\r\nabc\r\n"), 400, "bad-framing", "not a hexadecimal"),
        FramingCase("size-line-long", "chunked: a 9 kB chunk-size line (extension)",
                    _prefix(b"1;" + b"a" * 9000 + b"\r\nx\r\n"), 400, "bad-framing",
                    "over 8,190 bytes"),
        FramingCase("size-huge", "chunked: a chunk size of 20 hex digits",
                    _prefix(b"ffffffffffffffffffff\r\nabc"), 413, "upload-too-large",
                    "over the 20 MB upload limit"),
        FramingCase("chunk-over-limit", "chunked: one chunk declared 1 byte over MAX_UPLOAD_MB",
                    _prefix(over.encode() + b"\r\nabc"), 413, "upload-too-large",
                    "over the 20 MB upload limit"),
        FramingCase("chunks-over-limit", "chunked: well-formed 1 MiB chunks adding up past "
                    "MAX_UPLOAD_MB", _over_limit_in_chunks, 413, "upload-too-large",
                    "bytes of chunks, over the 20 MB"),
        FramingCase("no-crlf-after-data", "chunked: no CRLF after a chunk's data",
                    _prefix(b"5\r\nabcdeXX"), 400, "bad-framing", "not followed by CRLF"),
        FramingCase("size-too-small", "chunked: more data than the chunk size says",
                    _prefix(b"3\r\nabcdef\r\n"), 400, "bad-framing", "not followed by CRLF"),
        FramingCase("extension-garbage", "chunked: a chunk extension of control bytes",
                    _prefix(b"5;\x01\x02garbage\r\nabcde\r\n"), 400, "bad-framing",
                    "extension"),
        FramingCase("extension-unquoted", "chunked: an extension value with an open quote",
                    _prefix(b'5;name="open\r\nabcde\r\n'), 400, "bad-framing", "extension"),
        FramingCase("bare-lf", "chunked: lines ending in LF instead of CRLF",
                    _prefix(b"5\nabcde\n"), 400, "bad-framing", "not a hexadecimal"),
        FramingCase("cut-mid-chunk", "chunked: the client closes in the middle of a chunk",
                    lambda b: head(CHUNKED) + f"{len(b):x}\r\n".encode() + b[: len(b) // 2],
                    400, "bad-framing", "before its last, zero-size chunk", closes=True),
        FramingCase("no-last-chunk", "chunked: the client closes without the last (0) chunk",
                    lambda b: head(CHUNKED) + chunks(b, 4096), 400, "bad-framing",
                    "before its last, zero-size chunk", closes=True),
        FramingCase("trailer-cut", "chunked: the client closes inside the trailer",
                    lambda b: chunked(b, end=b"0\r\nX-Sum: 1\r\n"), 400, "bad-framing",
                    "before its trailer section", closes=True),
        FramingCase("trailer-not-field", "chunked: a trailer line that is not a field",
                    lambda b: chunked(b, end=b"0\r\nno colon here\r\n\r\n"), 400, "bad-framing",
                    "is not a field"),
        FramingCase("trailer-forbidden", "chunked: Content-Length sent as a trailer field",
                    lambda b: chunked(b, end=b"0\r\nContent-Length: 5\r\n\r\n"), 400,
                    "bad-framing", "may not be sent in a trailer"),
        FramingCase("length-and-chunked", "both Content-Length and Transfer-Encoding: chunked",
                    lambda b: head(f"Content-Length: {len(b)}", CHUNKED) + chunks(b, 4096)
                    + b"0\r\n\r\n", 400, "bad-framing", "both Content-Length and"),
        FramingCase("te-gzip-chunked", "Transfer-Encoding: gzip, chunked",
                    lambda b: head("Transfer-Encoding: gzip, chunked") + chunks(b, 4096)
                    + b"0\r\n\r\n", 501, "unsupported-transfer-coding", "used gzip"),
        FramingCase("te-unknown", "Transfer-Encoding: br, chunked (br is no transfer coding)",
                    lambda b: head("Transfer-Encoding: br, chunked") + chunks(b, 4096)
                    + b"0\r\n\r\n", 501, "unsupported-transfer-coding", "used br"),
        FramingCase("te-identity", "Transfer-Encoding: identity (no chunked: the end of the "
                    "body cannot be found)", lambda b: head("Transfer-Encoding: identity") + b,
                    400, "bad-framing", "does not end in a single 'chunked'"),
        FramingCase("te-chunked-gzip", "Transfer-Encoding: chunked, gzip (chunked not last)",
                    lambda b: head("Transfer-Encoding: chunked, gzip") + chunks(b, 4096)
                    + b"0\r\n\r\n", 400, "bad-framing", "does not end in a single 'chunked'"),
        FramingCase("te-chunked-twice", "Transfer-Encoding: chunked in two header lines",
                    lambda b: head(CHUNKED, CHUNKED) + chunks(b, 4096) + b"0\r\n\r\n", 400,
                    "bad-framing", "does not end in a single 'chunked'"),
        FramingCase("http-1.0-chunked", "chunked over HTTP/1.0",
                    lambda b: head(CHUNKED, version="HTTP/1.0") + chunks(b, 4096)
                    + b"0\r\n\r\n", 411, "length-required", "HTTP/1.0"),
        FramingCase("no-length", "an upload with neither Content-Length nor Transfer-Encoding",
                    lambda b: head() + b, 411, "length-required", "has neither"),
    ]  # fmt: skip


def _get(*lines: bytes, target: bytes = b"GET /health HTTP/1.1") -> Callable[[bytes], bytes]:
    """A request with no body: `target` line, then the given header lines."""
    return lambda _body: (
        b"\r\n".join((target, b"Host: 127.0.0.1", *lines, b"Connection: close")) + b"\r\n\r\n"
    )


def _bare_lf(_body: bytes) -> bytes:
    return b"GET /health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n"


def _bare_lf_line(_body: bytes) -> bytes:
    return b"GET /health HTTP/1.1\nHost: 127.0.0.1"


def bad_head_cases() -> list[FramingCase]:
    """Request heads Gunicorn's parser refuses before the app sees them: each gets its
    status and a problem, like everything else, instead of Gunicorn's HTML page."""
    return [
        FramingCase("two-lengths", "two different Content-Length fields",
                    lambda b: head(f"Content-Length: {len(b)}", f"Content-Length: {len(b) + 1}")
                    + b, 400, "bad-request", "'CONTENT-LENGTH'"),
        FramingCase("length-not-number", "Content-Length: 4x",
                    lambda b: head("Content-Length: 4x") + b, 400, "bad-request",
                    "'CONTENT-LENGTH'"),
        FramingCase("request-line-garbage", "a request line that is not one (`GARBAGE`)",
                    lambda _b: b"GARBAGE\r\n\r\n", 400, "bad-request", "request line"),
        FramingCase("http-version", "HTTP/9.9", _get(target=b"GET /health HTTP/9.9"), 400,
                    "bad-request", "HTTP Version"),
        FramingCase("method-symbols", "a method with symbols (`G@T`)",
                    _get(target=b"G@T /health HTTP/1.1"), 400, "bad-request", "method"),
        FramingCase("header-name-space", "a header name with a space (`Bad Name: 1`)",
                    _get(b"Bad Name: 1"), 400, "bad-request", "header name"),
        FramingCase("header-nul", "a NUL byte in a header value",
                    _get(b"X-Note: a\x00b"), 400, "bad-request", "'X-NOTE'"),
        FramingCase("header-folded", "a header folded onto a second line (obsolete folding)",
                    _get(b"X-Note: 1", b"  folded"), 400, "bad-request", "folding"),
        FramingCase("bare-lf-head", "a head whose lines end in LF alone",
                    _bare_lf, 400, "bad-request", "bare LF"),
        FramingCase("bare-lf-line", "a request line ended by LF alone, the client waiting to "
                    "send the rest", _bare_lf_line, 400, "bad-request", "bare LF"),
        FramingCase("bare-lf-head-closed", "a head whose lines end in LF alone, the client "
                    "then closing its side", _bare_lf, 400, "bad-request", "bare LF",
                    closes=True),
        FramingCase("expect-other", "an upload with `Expect: 200-ok` (only 100-continue exists)",
                    lambda b: head(f"Content-Length: {len(b)}", "Expect: 200-ok") + b, 417,
                    "expectation-failed", "100-continue"),
    ]  # fmt: skip


def send(port: int, request: bytes, closes: bool, timeout: float = 20.0) -> Answer:
    """Send the bytes, half-close if asked, and read the answer until the server closes.

    The timeout is well under READ_TIMEOUT: a server that waits for more bytes than the
    client sends fails the test instead of answering 408.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        # The server may answer early and stop reading; its answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        if closes:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), received[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)
