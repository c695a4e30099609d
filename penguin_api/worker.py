"""The Gunicorn worker: a request is received whole before the worker works on it.

Gunicorn's sync worker reads a request while it holds the whole worker, so two clients
sending an upload at a byte a second stopped the service. This worker is Gunicorn's
threaded worker (`gthread`) with its front changed: each connection waits in the event
loop while its request arrives; the loop reads what comes, and only once the request is
whole (penguin_api.request_buffer decides) does the worker answer it, right there in the
loop, as a sync worker would. A client that has not sent its whole request READ_TIMEOUT
seconds after connecting gets 408 and is closed; one whose framing cannot be read (a bad
chunked body or transfer coding) is answered from the loop too. Framing the loop leaves to Gunicorn,
which may still read from the client, goes to a thread instead (the app's lock keeps
inference one at a time). A worker running a request takes no new connections, so
requests go to idle workers first, as with sync workers.

Memory: the request bodies a worker holds while they arrive are bounded (one upload
limit, plus the oldest upload, which may always go on, so that uploads finish in turn).
Built on Gunicorn 27's gthread worker: pyproject.toml pins its major version.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import selectors
import socket
import time
from collections import deque
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn.http.message import Request
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import TConn, ThreadWorker

from penguin_api import errors, metrics, telemetry
from penguin_api.config import Settings
from penguin_api.connection import (
    LINGER_S,
    WRITE_TIMEOUT_S,
    ClosingConnections,
    ReceivedRequest,
    gunicorn_error_problem,
    loop_problem_response,
    request_timeout_response,
)
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


@dataclass
class _Held:
    """A request being answered: its bytes in the budget, how long to read after it."""

    size: int
    linger_until: float = 0.0


class BufferingWorker(ClosingConnections, ThreadWorker):
    """gthread, with every request received whole in the event loop before it is answered."""

    def init_process(self) -> None:
        settings = Settings.from_env()
        self.read_timeout = settings.read_timeout
        self.max_body = settings.max_upload_bytes
        #: Bytes of request bodies this worker may hold before it reads only the oldest.
        self.buffer_budget = settings.max_upload_bytes
        self._incoming: deque[_Incoming] = deque()  # in arrival order, so deadline order
        self._paused: list[_Incoming] = []
        self._closing = []
        self._held: dict[int, _Held] = {}  # id(conn) -> request being answered
        self._running: dict[int, float] = {}  # id(conn) -> when the app started on it
        self._buffered = 0
        self._busy = 0  # requests being answered (in the loop or a thread)
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
        buffer = RequestBuffer(self.max_body, max_head, limits.limit_request_field_size or 8190)
        incoming = _Incoming(conn, buffer, now + self.read_timeout, now)
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
        # is answered as soon as it is whole.
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
                    self._answer(incoming, incoming.buffer.end_of_input())
                elif incoming.size:
                    # Part of a head, or bytes that are no HTTP, and nothing more to come:
                    # Gunicorn's parser says what it makes of them, in the loop (a 400
                    # problem, or a quiet close for a head cut short).
                    self._answer(incoming, Verdict.COMPLETE)
                else:
                    self._forget(incoming)
                    self.close_now(incoming.conn)
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
            self._answer(incoming, verdict)
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

    def _answer(self, incoming: _Incoming, verdict: Verdict) -> None:
        if verdict is Verdict.REFUSE:
            self._refuse(incoming)
        else:
            self._dispatch(incoming, verdict)

    def _refuse(self, incoming: _Incoming) -> None:
        """Framing that cannot be read: answer it here (the app never sees it), then close."""
        refusal = incoming.buffer.refusal
        assert refusal is not None
        self._forget(incoming)
        conn = incoming.conn
        now = time.monotonic()
        request_id = secrets.token_hex(16)
        self.log.info(
            "request refused before the application: %d %s after %d bytes: %s",
            refusal.status, refusal.problem, incoming.size, refusal.detail,
            extra={"request_id": request_id, "bytes_received": incoming.size},
        )  # fmt: skip
        waited = now - incoming.accepted_at
        _count_refusal(refusal.problem)
        answer = loop_problem_response(refusal.problem, refusal.detail, request_id, waited)
        with contextlib.suppress(OSError):  # a fresh socket's buffer takes the few hundred bytes
            conn.sock.send(answer)
        # A client may still be sending the body: read and drop it a while, so it reads the
        # answer instead of a reset (the rest of a refused upload, up to its deadline).
        linger = incoming.deadline if refusal.status == 413 else 0.0
        self.close_gracefully(conn, max(now + LINGER_S, linger))

    def _dispatch(self, incoming: _Incoming, verdict: Verdict) -> None:
        """Answer a request from what the loop received of it."""
        incoming.done = True
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(incoming.conn.sock)
        conn = incoming.conn
        now = time.monotonic()
        # A refused upload is still being sent: read (and drop) it up to its deadline.
        linger = max(now + LINGER_S, incoming.deadline) if verdict is Verdict.TOO_LARGE else 0.0
        self._held[id(conn)] = _Held(incoming.size, linger)
        conn.prefetched = bytes(incoming.buffer.data)
        # Past what was received, the request has ended (the answer does not depend on the
        # rest), or, for framing the loop left to Gunicorn, reads go on until the deadline.
        conn.more_until = None if verdict in (Verdict.COMPLETE, Verdict.TOO_LARGE) else (
            incoming.deadline
        )  # fmt: skip
        conn.data_ready = True  # skip gthread's wait for the first byte
        self._busy += 1
        self._hold_accept_until = 0.0  # busy now: that holds accepting
        super().set_accept_enabled(False)
        if conn.more_until is not None:
            self.enqueue_req(conn)  # may still read from the client: a thread, not the loop
            return
        # The whole request is here: answer it at once in the loop, as a sync worker would,
        # without handing it to a thread and back.
        done: futures.Future = futures.Future()
        try:
            done.set_result(self.handle(conn))
        except Exception as exc:  # handle() answers errors itself; this is a last resort
            done.set_exception(exc)
        self.finish_request(conn, done)

    # --- answering ------------------------------------------------------------------------
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

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """A request Gunicorn's parser refused (a 9 kB header, two Content-Lengths, ...), or
        one it failed to answer: problem+json like every other error, not Gunicorn's HTML.

        Logged as Gunicorn logs them: a warning, or the traceback of a 500; an access line
        too when the parser had read the request line and headers far enough to say (as
        for conflicting lengths), whose X-Request-Id, if sane, the answer then keeps.
        """
        started = datetime.now()
        slug, detail = gunicorn_error_problem(exc)
        status = errors.PROBLEMS[slug].status
        if req is None:  # some header errors carry the request read so far (others a string)
            req = getattr(exc, "req", None)
        if not isinstance(req, Request):
            req = None
        said_id = dict(req.headers).get("X-REQUEST-ID") if req else None
        request_id = telemetry.request_id_from(said_id)
        ip, port = addr or ("", -1)
        if status >= 500:
            what = f"{req.method} {req.uri}" if req else "(no request line read)"
            self.log.exception("error answering %s", what, extra={"request_id": request_id})
        else:
            self.log.warning(
                "request refused by the parser: %d %s from %s: %s", status, slug, ip, detail,
                extra={"request_id": request_id},
            )  # fmt: skip
            _count_refusal(slug)  # a 500 may be a request the app saw, and counted
        answer = loop_problem_response(slug, detail, request_id, None)
        with contextlib.suppress(OSError):
            client.settimeout(WRITE_TIMEOUT_S)
            client.sendall(answer)
        if req is None:
            return
        try:
            environ = default_environ(req, client, self.cfg)
            environ.update(REMOTE_ADDR=ip, REMOTE_PORT=str(port), PATH_INFO=req.path,
                           QUERY_STRING=req.query)  # fmt: skip
            resp = Response(req, client, self.cfg)
            resp.status = f"{status} {HTTPStatus(status).phrase}"
            resp.headers = [("X-Request-Id", request_id)]
            resp.sent = resp.response_length = len(answer.partition(b"\r\n\r\n")[2])
            self.log.access(resp, req, environ, datetime.now() - started)
        except Exception:  # the answer is out; a log line must not turn into a lost worker
            self.log.exception("could not write the access line of a refused request")

    def notify(self) -> None:
        """Heartbeat as old as the longest-running request, as a sync worker's would be.

        A request answered in the loop stops the beat while it runs; one in a thread does
        not, so a request stuck there (a decoder that never returns) would never get the
        worker replaced after TIMEOUT, as it does with sync workers.
        """
        now = time.monotonic()
        oldest = min(self._running.values(), default=now)
        stamp = min(now, oldest)
        os.utime(self.tmp.fileno(), (stamp, stamp))

    # --- finishing --------------------------------------------------------------------------
    def finish_request(self, conn: TConn, fs: Any) -> None:
        """A request is answered: free its budget, close its connection gracefully."""
        if fs.done() and fs.exception() is not None:  # handle() answers its own errors
            self.log.error("a request ended in an error no handler took", exc_info=fs.exception())
        held = self._held.pop(id(conn), None)
        self._busy -= 1
        if held is not None:
            self._buffered -= held.size
        self._resume_paused()
        now = time.monotonic()
        self.close_gracefully(conn, max(now + LINGER_S, held.linger_until if held else 0.0))
        if self.alive:
            self.set_accept_enabled(self.nr_conns < self.worker_connections)

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
                self.close_now(incoming.conn)
        self.sweep_closing(now)

    def _time_out(self, incoming: _Incoming) -> None:
        """READ_TIMEOUT passed before the request was in: 408 if it began, then close."""
        self._forget(incoming)
        conn = incoming.conn
        if not incoming.size:  # never said a word: just close
            self.close_now(conn)
            return
        request_id = secrets.token_hex(16)
        self.log.info(
            "request not received within %d s: answered 408 after %d bytes (%s)",
            self.read_timeout, incoming.size,
            "headers complete" if incoming.buffer.head_received else "headers incomplete",
            extra={"request_id": request_id, "bytes_received": incoming.size},
        )  # fmt: skip
        _count_refusal("request-timeout")
        with contextlib.suppress(OSError):
            waited = time.monotonic() - incoming.accepted_at
            conn.sock.send(request_timeout_response(self.read_timeout, request_id, waited))
        self.close_gracefully(conn, time.monotonic() + LINGER_S)


def _count_refusal(slug: str) -> None:
    """Count an answer the worker gave itself: the app's request metrics never see these."""
    status = str(errors.PROBLEMS[slug].status)
    metrics.child(metrics.ANSWERED_BEFORE_APP, status, slug).inc()
