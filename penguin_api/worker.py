"""The Gunicorn worker: a request is received whole before a thread works on it.

Gunicorn's sync worker reads a request while it holds the whole worker, so two clients
sending an upload at a byte a second stopped the service. This worker is Gunicorn's
threaded worker (`gthread`) with its front changed: each connection waits in the event
loop, costing no thread, while its request arrives; the loop reads what comes, and only
a complete request (penguin_api.request_buffer decides) goes to a thread. A client that
has not sent its whole request READ_TIMEOUT seconds after connecting gets 408 and is
closed. Inference stays one at a time per worker (the app holds a lock around it), and a
worker that runs a request takes no new connections until it is idle again, so requests
go to idle workers first, as with sync workers.

Memory: the request bodies a worker holds while they arrive are bounded (one upload
limit, plus the oldest upload, which may always go on, so that uploads finish in turn).
Built on Gunicorn 27's gthread worker: pyproject.toml pins its major version.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from penguin_api.config import Settings
from penguin_api.connection import WRITE_TIMEOUT_S, ReceivedRequest, request_timeout_response
from penguin_api.request_buffer import RequestBuffer, Verdict

#: One read from a connection in the event loop, and the most reads in one turn.
RECV_BYTES = 256 * 1024
MAX_RECVS = 16
#: After taking a connection a worker takes no other for a moment, to see whether a
#: request follows at once; if its head comes with a body still on its way, for longer
#: (or until the body is in). An upload on its way is work this worker will soon have:
#: the next connection should go to an idle worker, as it would with sync workers.
FIRST_BYTES_WAIT_S = 0.005
ACCEPT_HOLD_S = 0.05
#: After the answer, a connection is read (and what comes discarded) this long before it
#: is closed, so that a client still sending does not get a reset instead of the answer.
LINGER_S = 2.0
#: ...and at most this much is discarded (the same bound the app's 413 drain has).
LINGER_BYTES = 64 * 1024 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(eq=False)
class _Incoming:
    """A connection whose request is still arriving."""

    conn: TConn
    buffer: RequestBuffer
    deadline: float
    accepted_at: float = 0.0
    size: int = 0  # bytes read so far, counted against the worker's buffer budget
    done: bool = False
    paused: bool = False


@dataclass(eq=False)
class _Closing:
    """A connection that got its answer and is read until the client closes it."""

    conn: TConn
    until: float
    drained: int = 0
    done: bool = False


@dataclass
class _Held:
    """What the worker tracks for a request handed to a thread."""

    size: int
    deadline: float
    linger_until: float = field(default=0.0)


class BufferingWorker(ThreadWorker):
    """gthread with every request received in full in the event loop before a thread runs it."""

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.read_timeout = settings.read_timeout
        self.max_body = settings.max_upload_bytes
        #: Bytes of request bodies this worker may hold before it reads only the oldest.
        self.buffer_budget = settings.max_upload_bytes
        self._incoming: deque[_Incoming] = deque()  # in arrival order, so deadline order
        self._paused: list[_Incoming] = []
        self._closing: list[_Closing] = []
        self._held: dict[int, _Held] = {}  # id(conn) -> request handed to a thread
        self._running: dict[int, float] = {}  # id(conn) -> when the app started on it
        self._buffered = 0
        self._busy = 0  # requests handed to threads and not yet finished
        self._hold_accept_until = 0.0
        super().init_process()

    # --- accepting ------------------------------------------------------------------------
    def set_accept_enabled(self, enabled: bool) -> None:
        """Take new connections only while idle: a busy worker leaves them to idle ones."""
        super().set_accept_enabled(enabled and self._idle() and self.alive)

    def _idle(self) -> bool:
        return self._busy == 0 and time.monotonic() >= self._hold_accept_until

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Wake when an accept hold ends, not a second later.
        hold = self._hold_accept_until - time.monotonic()
        if 0 < hold < timeout:
            timeout = hold + 0.001
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener: socket.socket) -> None:
        if not self._idle():  # became busy within this round of events
            return
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, addr, listener.getsockname())  # non-blocking
        limits = self.cfg
        max_head = (
            limits.limit_request_line + 2
            + limits.limit_request_fields * (limits.limit_request_field_size + 2) + 2
        )  # fmt: skip
        now = time.monotonic()
        incoming = _Incoming(
            conn, RequestBuffer(self.max_body, max_head), now + self.read_timeout, now
        )
        self._incoming.append(incoming)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_readable, incoming))
        self._hold_accept(now + FIRST_BYTES_WAIT_S)

    # --- receiving --------------------------------------------------------------------------
    def _on_readable(self, incoming: _Incoming, sock: socket.socket) -> None:
        if self._buffered >= self.buffer_budget and not self._is_oldest(incoming):
            # Over budget: only the oldest upload reads on; this one waits (TCP holds the rest).
            self.poller.unregister(sock)
            incoming.paused = True
            self._paused.append(incoming)
            return
        verdict = Verdict.MORE
        # Read all that is there (a photo on a fast link arrives in one go), so the request
        # reaches a thread as soon as it can.
        for _ in range(MAX_RECVS):
            try:
                data = sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:  # the client stopped sending
                if incoming.buffer.head_received:
                    # It may still read: the app answers what came (a cut body gets 400).
                    self._dispatch(incoming, Verdict.COMPLETE)
                else:
                    self._forget(incoming)
                    self._close_now(incoming.conn)
                return
            incoming.size += len(data)
            self._buffered += len(data)
            try:
                verdict = incoming.buffer.feed(data)
            except Exception:  # a framing bug must not take the worker down: Gunicorn judges
                self.log.exception("could not frame a request; handed to Gunicorn as it is")
                verdict = Verdict.HAND_OVER
            if verdict is not Verdict.MORE or len(data) < RECV_BYTES:
                break
        if incoming.buffer.continue_due:
            incoming.buffer.continue_due = False
            with contextlib.suppress(OSError):  # a fresh socket's buffer takes 25 bytes
                sock.send(_CONTINUE)
        if verdict is not Verdict.MORE:
            self._dispatch(incoming, verdict)
        elif incoming.buffer.head_received:
            self._hold_accept(incoming.accepted_at + ACCEPT_HOLD_S)

    def _hold_accept(self, until: float) -> None:
        if until > self._hold_accept_until and until > time.monotonic():
            self._hold_accept_until = until
            super().set_accept_enabled(False)

    def _is_oldest(self, incoming: _Incoming) -> bool:
        """True for the upload that began first of those still arriving (it may always read)."""
        for other in self._incoming:
            if not other.done and other.size:
                return other is incoming
        return False

    def _forget(self, incoming: _Incoming) -> None:
        """Stop tracking a connection's arrival and give back its buffer budget."""
        incoming.done = True
        self._buffered -= incoming.size
        if incoming.paused:
            self._paused.remove(incoming)
        else:
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(incoming.conn.sock)
        self._resume_paused()

    def _resume_paused(self) -> None:
        """Let waiting uploads read again when the budget allows (or the oldest has changed)."""
        while self._paused and self._buffered < self.buffer_budget:
            self._resume(self._paused.pop(0))
        for waiting in list(self._paused):
            if self._is_oldest(waiting):
                self._paused.remove(waiting)
                self._resume(waiting)

    def _resume(self, incoming: _Incoming) -> None:
        incoming.paused = False
        self.poller.register(
            incoming.conn.sock, selectors.EVENT_READ, partial(self._on_readable, incoming)
        )

    def _dispatch(self, incoming: _Incoming, verdict: Verdict) -> None:
        """Hand a request to a thread, with what the loop received of it."""
        incoming.done = True
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(incoming.conn.sock)
        conn = incoming.conn
        now = time.monotonic()
        # A refused upload is still being sent: read (and drop) it up to its deadline.
        linger = max(now + LINGER_S, incoming.deadline) if verdict is Verdict.TOO_LARGE else 0.0
        self._held[id(conn)] = _Held(incoming.size, incoming.deadline, linger)
        conn.prefetched = bytes(incoming.buffer.data)
        # Past what was received, the request has ended (the answer does not depend on the
        # rest), or, for framing the loop left to Gunicorn, reads go on until the deadline.
        conn.more_until = None if verdict in (Verdict.COMPLETE, Verdict.TOO_LARGE) else (
            incoming.deadline
        )  # fmt: skip
        conn.data_ready = True  # skip gthread's wait for the first byte
        self._busy += 1
        super().set_accept_enabled(False)
        self.enqueue_req(conn)

    # --- in the thread ----------------------------------------------------------------------
    def handle(self, conn: TConn) -> Any:
        """Serve the request from the bytes received, never from a slow socket."""
        if not conn.initialized:
            conn.init()
            conn.parser.unreader.sock = ReceivedRequest(conn.sock, conn.prefetched, conn.more_until)
            conn.prefetched = b""
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> Any:
        key = id(conn)
        self._running[key] = time.monotonic()
        conn.sock.settimeout(WRITE_TIMEOUT_S)
        try:
            return super().handle_request(req, conn)
        finally:
            self._running.pop(key, None)

    def notify(self) -> None:
        """Heartbeat as old as the longest-running request, as a sync worker's would be.

        The event loop beats every second whatever the threads do; a request stuck in
        the app (a decoder that never returns) must still get the worker replaced after
        TIMEOUT, as it did with sync workers.
        """
        now = time.monotonic()
        oldest = min(self._running.values(), default=now)
        stamp = min(now, oldest)
        os.utime(self.tmp.fileno(), (stamp, stamp))

    # --- finishing --------------------------------------------------------------------------
    def finish_request(self, conn: TConn, fs: Any) -> None:
        """A thread is done with a connection: free its budget, close it gracefully."""
        held = self._held.pop(id(conn), None)
        self._busy -= 1
        if held is not None:
            self._buffered -= held.size
        self._resume_paused()
        now = time.monotonic()
        self._close_gracefully(conn, max(now + LINGER_S, held.linger_until if held else 0.0))
        if self.alive:
            self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def _close_gracefully(self, conn: TConn, until: float) -> None:
        """Send FIN, then read and drop what the client still sends, without a thread."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self._close_now(conn)
            return
        closing = _Closing(conn, until)
        self._closing.append(closing)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._on_closing_readable, closing)
        )

    def _on_closing_readable(self, closing: _Closing, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_BYTES)
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
        self._close_now(closing.conn)

    def _close_now(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    # --- deadlines (gthread's run loop calls this at least once a second) ------------------
    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._incoming and (self._incoming[0].done or self._incoming[0].deadline <= now):
            incoming = self._incoming.popleft()
            if not incoming.done:
                self._time_out(incoming)
        if not self.alive:
            # Shutting down: connections that have sent nothing are not worth waiting for.
            for incoming in [i for i in self._incoming if not i.done and not i.size]:
                self._forget(incoming)
                self._close_now(incoming.conn)
        if self._closing:
            for closing in self._closing:
                if closing.until <= now:
                    self._end_closing(closing)
            self._closing = [c for c in self._closing if not c.done]

    def _time_out(self, incoming: _Incoming) -> None:
        """READ_TIMEOUT passed before the request was in: 408 if it began, then close."""
        self._forget(incoming)
        conn = incoming.conn
        if not incoming.size:  # never said a word: just close
            self._close_now(conn)
            return
        request_id = secrets.token_hex(16)
        self.log.info(
            "request not received within %d s: answered 408 after %d bytes (%s)",
            self.read_timeout, incoming.size,
            "headers complete" if incoming.buffer.head_received else "headers incomplete",
            extra={"request_id": request_id, "bytes_received": incoming.size},
        )  # fmt: skip
        with contextlib.suppress(OSError):
            waited = time.monotonic() - (incoming.deadline - self.read_timeout)
            conn.sock.send(request_timeout_response(self.read_timeout, request_id, waited))
        self._close_gracefully(conn, time.monotonic() + LINGER_S)


def give_back_large_buffers() -> None:
    """Have glibc return freed large buffers (decoded images) to the system at once.

    By default it keeps them for reuse in a heap per thread: with four threads decoding
    in turn, a worker grew by about 35 MB after 12 MP PNG and WebP uploads and stayed
    there (123 MB against 126 MB for a sync worker with this, 160 MB without). The
    decode memory budget counts on that memory coming back. Call it before any thread
    starts: glibc fixes its number of heaps at the first thread.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: leave it be
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)  # allocations of 1 MiB and up: own mapping
        libc.mallopt(_M_ARENA_MAX, 2)


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_M_ARENA_MAX = -8
