"""What the worker reads from and writes to one client connection, outside Gunicorn.

`ReceivedRequest` is the socket as Gunicorn's request parser sees it once the worker's
event loop has received the request; `request_timeout_response` is the 408 the loop sends
a client that took too long. Both sit below penguin_api.worker and know nothing of it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from penguin_api import errors, telemetry

#: A response a client does not read may block its thread this long, then it is dropped.
WRITE_TIMEOUT_S = 10.0
#: The most a read from the received request returns (what Werkzeug asks for at a time).
RECV_PIECE = 64 * 1024


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
    body = errors.problem_body(
        errors.PROBLEMS["request-timeout"],
        f"The request did not arrive in full within {read_timeout} s of connecting; send it again.",
    )
    body["request_id"] = request_id
    payload = json.dumps(body).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"Content-Type: {errors.PROBLEM_JSON}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
        f"Server-Timing: total;dur={waited_s * 1000:.1f}\r\n"
        f"X-Request-Id: {request_id}\r\n"
        f"X-Instance-Id: {telemetry.instance_id()}\r\n\r\n"
    )
    return head.encode() + payload
