"""Hostile clients on raw sockets for the slow-client tests: tricklers and idle connections.

A `Trickler` holds many connections from one thread and sends each its next byte once a
second; it reads whatever the server sends back, and notes when the server closed each
connection. Nothing here waits on a fixed sleep to decide anything: the tests poll.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field


def multipart_upload(port: int, data: bytes, filename: str = "photo.jpg") -> tuple[bytes, bytes]:
    """(head, body) of a POST /predict carrying `data` as the form field `file`."""
    body = (
        b"--penguin-boundary\r\n"
        + f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
        + b"Content-Type: image/jpeg\r\n\r\n"
        + data
        + b"\r\n--penguin-boundary--\r\n"
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=penguin-boundary\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head, body


@dataclass
class SlowClient:
    """One connection: what is left to send, what came back, when it ended."""

    sock: socket.socket
    pending: bytes
    connected_at: float
    received: bytes = b""
    closed_at: float | None = None
    sent: int = 0

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def status(self) -> int | None:
        """The HTTP status the server answered with, if it answered."""
        if not self.received.startswith(b"HTTP/"):
            return None
        return int(self.received.split(b" ", 2)[1])

    def problem(self) -> dict:
        """The JSON body of the answer."""
        head, _, body = self.received.partition(b"\r\n\r\n")
        assert b"application/problem+json" in head.lower(), head
        return json.loads(body)


@dataclass
class Trickler:
    """Clients that each send one byte a second: `start(port, [(sent at once, trickled)])`."""

    clients: list[SlowClient] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, port: int, requests: list[tuple[bytes, bytes]]) -> Trickler:
        for at_once, trickled in requests:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            connected = time.monotonic()
            sock.sendall(at_once)
            sock.setblocking(False)
            self.clients.append(SlowClient(sock, trickled, connected))
        self._thread = threading.Thread(target=self._run, name="trickler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            for client in self.clients:
                # A client that got an answer stops sending (so no reset loses the answer).
                if client.open and not client.received and client.sent < len(client.pending):
                    with contextlib.suppress(BlockingIOError):
                        client.sent += client.sock.send(
                            client.pending[client.sent : client.sent + 1]
                        )
            self._stop.wait(1.0)

    def _read(self) -> None:
        live = [c for c in self.clients if c.open]
        if not live:
            return
        readable, _, _ = select.select([c.sock for c in live], [], [], 0)
        for client in live:
            if client.sock not in readable:
                continue
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                client.received += data
            else:
                client.closed_at = time.monotonic()

    def all_closed(self) -> bool:
        return all(not c.open for c in self.clients)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for client in self.clients:
            client.sock.close()


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing at all."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def still_open(sock: socket.socket) -> bool:
    """True while the server has neither closed nor answered this connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def sockets_held(pids: list[int]) -> int:
    """TCP sockets the given processes hold open (their listening socket included)."""
    from pathlib import Path

    count = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if fd.readlink().name.startswith("socket:"):
                        count += 1
    return count
