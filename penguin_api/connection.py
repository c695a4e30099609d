"""What the worker reads from and writes to client connections, outside Gunicorn's code.

`ReceivedRequest` is the socket as Gunicorn's request parser sees it once the worker's
event loop has received the request; `loop_problem_response` is an answer the loop gives
itself (`request_timeout_response`: the 408 for a client that took too long, or a refused
framing), and `gunicorn_error_problem` says which one a request Gunicorn's parser refused
gets; `ClosingConnections` closes answered connections without resetting a client that
is still sending. penguin_api.worker puts them together.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn.http import errors as http_errors

from penguin_api import errors, telemetry

#: A response a client does not read may block its thread this long, then it is dropped.
WRITE_TIMEOUT_S = 10.0
#: The most a read from the received request returns (what Werkzeug asks for at a time).
RECV_PIECE = 64 * 1024
#: After the answer, a connection is read (and what comes discarded) this long before it
#: is closed, so that a client still sending does not get a reset instead of the answer.
LINGER_S = 2.0
#: ...and at most this much is discarded (the same bound the app's 413 drain has).
LINGER_BYTES = 64 * 1024 * 1024
_DISCARD_BYTES = 256 * 1024


class ReceivedRequest:
    """The client socket as Gunicorn's request parser reads it: what the loop received first.

    Past those bytes the request has ended (`more_until` None), or, when the loop left the
    framing to Gunicorn, reads go to the socket until `more_until`; a read past it raises
    TimeoutError, which the app answers with 408. Writes go to the socket as they are.
    """

    def __init__(self, sock: socket.socket, received: bytes, more_until: float | None) -> None:
        self._sock = sock
        self._received = memoryview(received)
        self._more_until = more_until

    def recv(self, size: int) -> bytes:
        if self._received:
            # As a socket would, a piece at a time: Gunicorn's reader copies what it holds
            # beyond each read, so a whole body at once would be copied over and over.
            size = min(size, RECV_PIECE)
            piece, self._received = self._received[:size], self._received[size:]
            return bytes(piece)
        if self._more_until is None:
            return b""
        remaining = self._more_until - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not received in time")
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size)
        finally:
            self._sock.settimeout(WRITE_TIMEOUT_S)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def request_timeout_response(read_timeout: int, request_id: str, waited_s: float) -> bytes:
    """The whole 408 answer, as bytes: problem+json, like every other error."""
    detail = (
        f"The request did not arrive in full within {read_timeout} s of connecting; send it again."
    )
    return loop_problem_response("request-timeout", detail, request_id, waited_s)


def loop_problem_response(slug: str, detail: str, request_id: str, waited_s: float | None) -> bytes:
    """A whole problem+json answer, as bytes, for a request the worker answers itself
    (Server-Timing only when the wait is known)."""
    problem = errors.PROBLEMS[slug]
    status = problem.status
    body = errors.problem_body(problem, detail)
    body["request_id"] = request_id
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {errors.PROBLEM_JSON}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        + (f"Server-Timing: total;dur={waited_s * 1000:.1f}\r\n" if waited_s is not None else "")
        + f"X-Request-Id: {request_id}\r\n"
        f"X-Instance-Id: {telemetry.instance_id()}\r\n\r\n"
    )
    return head.encode() + payload


#: Requests Gunicorn's parser refuses, by the problem they get (the rest: bad-request).
#: A PROXY-protocol or TLS error, which Gunicorn answers 403, cannot happen here: the
#: service speaks plain HTTP behind its front end, with the PROXY protocol off.
_PARSER_PROBLEMS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (http_errors.LimitRequestLine, "request-line-too-long"),
    (http_errors.LimitRequestHeaders, "headers-too-large"),
    (http_errors.ExpectationFailed, "expectation-failed"),
    (http_errors.UnsupportedTransferCoding, "unsupported-transfer-coding"),
    (
        (
            http_errors.InvalidChunkSize,
            http_errors.ChunkMissingTerminator,
            http_errors.InvalidChunkExtension,
        ),
        "bad-framing",
    ),
)
#: Parse errors that are ours, not the client's: a header the app tried to send, a setting.
_OUR_PARSE_ERRORS = (
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
    http_errors.ConfigurationProblem,
)
#: The parser's own words go into the detail; a client's bytes in them are cut here.
_DETAIL_CHARS = 200


def gunicorn_error_problem(exc: BaseException) -> tuple[str, str]:
    """(problem slug, detail) for an error Gunicorn met while reading or answering a request.

    Gunicorn would answer these with an HTML page (400, 414, 431, ...); the service answers
    every error in problem+json. Anything that is not a parse error is ours: 500.
    """
    if not isinstance(exc, http_errors.ParseException) or isinstance(exc, _OUR_PARSE_ERRORS):
        return "internal-error", errors.PROBLEMS["internal-error"].description
    said = str(exc)
    if len(said) > _DETAIL_CHARS:
        said = said[:_DETAIL_CHARS] + "..."
    for kinds, slug in _PARSER_PROBLEMS:
        if isinstance(exc, kinds):
            return slug, f"{errors.PROBLEMS[slug].description} ({said})"
    return "bad-request", f"The request's head could not be read: {said}."


@dataclass(eq=False)
class _Closing:
    """A connection that got its answer and is read until the client closes it."""

    conn: Any
    until: float
    drained: int = 0
    done: bool = False


class ClosingConnections:
    """Close answered connections gracefully from a Gunicorn worker's event loop.

    For a worker with `poller` (a selector), `nr_conns` and a `_closing` list: the
    answer is followed by FIN, then what the client still sends is read and dropped
    until it closes (or `until`, or LINGER_BYTES), so that it gets the answer, not a
    reset; no thread waits meanwhile. `sweep_closing` ends those past their time.
    """

    poller: selectors.BaseSelector
    nr_conns: int
    _closing: list[_Closing]

    def close_gracefully(self, conn: Any, until: float) -> None:
        """Send FIN, then read and drop what the client still sends, without a thread."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self.close_now(conn)
            return
        closing = _Closing(conn, until)
        self._closing.append(closing)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._on_closing_readable, closing)
        )

    def _on_closing_readable(self, closing: _Closing, sock: socket.socket) -> None:
        try:
            data = sock.recv(_DISCARD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        closing.drained += len(data)
        if not data or closing.drained > LINGER_BYTES:
            self._end_closing(closing)

    def _end_closing(self, closing: _Closing) -> None:
        if closing.done:
            return
        closing.done = True
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(closing.conn.sock)
        self.close_now(closing.conn)

    def close_now(self, conn: Any) -> None:
        self.nr_conns -= 1
        conn.close()

    def sweep_closing(self, now: float) -> None:
        if self._closing:
            for closing in self._closing:
                if closing.until <= now:
                    self._end_closing(closing)
            self._closing = [c for c in self._closing if not c.done]
