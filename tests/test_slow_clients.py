"""Slow and idle clients against real Gunicorn with its default settings (2 workers).

A client that sends its request a byte a second, or connects and says nothing, must cost
the service a connection, not a worker: normal uploads sent meanwhile are answered, the
slow ones get 408 (problem+json) when READ_TIMEOUT has passed since they connected, and
no worker is restarted. Each test prints what it counted; no speed is asserted, only
deadlines a hang would reach.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from penguin_api.config import Settings
from tests.server import Server, metric_value, running_server
from tests.slow_clients import Trickler, multipart_upload, open_idle, sockets_held, still_open

READ_TIMEOUT = Settings().read_timeout
SLOW_UPLOADS = 16
SLOW_HEADERS = 16
IDLE_CONNECTIONS = 500


def _report(request: pytest.FixtureRequest, text: str) -> None:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n{request.node.name}: {text}")


def _predict(server: Server, photo: bytes, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.post(
        server.url("/predict"), files={"file": ("p.jpg", photo, "image/jpeg")}, timeout=timeout
    )
    return response.status_code, time.monotonic() - started


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} after {timeout:.0f} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def photo(penguin_photo: Path) -> bytes:
    return penguin_photo.read_bytes()


@pytest.fixture(scope="module")
def default_server(model_dir: Path) -> Iterator[Server]:
    """The service as `make run` starts it, on 2 workers."""
    with running_server(workers=2, model_dir=model_dir) as srv:
        yield srv


def test_slow_uploads_and_headers_hold_connections_not_workers_and_get_408_at_the_deadline(
    default_server: Server, photo: bytes, request: pytest.FixtureRequest
) -> None:
    srv = default_server
    workers, booted = sorted(srv.worker_pids()), srv.workers_booted()
    timeouts_before = _timeouts_counted(srv)
    head, body = multipart_upload(srv.port, photo)
    # 16 uploads whose headers arrive at once and whose body then comes a byte a second,
    # and 16 whose very headers come a byte a second.
    slow = [(head, body)] * SLOW_UPLOADS + [(b"", head + body)] * SLOW_HEADERS
    trickler = Trickler().start(srv.port, slow)
    try:
        _wait(lambda: all(c.sent >= 2 for c in trickler.clients), 30, "trickling")
        status, latency = _predict(srv, photo, timeout=READ_TIMEOUT)
        # Answered while every slow client still held its connection.
        held = sum(c.open and not c.received for c in trickler.clients)
        assert status == 200
        assert held == len(slow), "a slow client was cut before the normal upload was answered"

        _wait(trickler.all_closed, READ_TIMEOUT + 30, "cut off")
        after_status, after_latency = _predict(srv, photo, timeout=60)
    finally:
        trickler.stop()
    logs = srv.logs()

    statuses = [c.status() for c in trickler.clients]
    lasted = [c.closed_at - c.connected_at for c in trickler.clients if c.closed_at]
    _report(
        request,
        f"normal upload answered in {latency * 1000:.0f} ms with {len(slow)} slow clients "
        f"connected, {after_latency * 1000:.0f} ms after they were cut; slow clients answered "
        f"{sorted(set(statuses))} after {min(lasted):.1f}-{max(lasted):.1f} s "
        f"(READ_TIMEOUT {READ_TIMEOUT} s), bytes sent {sorted({c.sent for c in trickler.clients})}",
    )
    assert after_status == 200
    assert statuses == [408] * len(slow)
    for client in trickler.clients:
        problem = client.problem()
        assert problem["type"] == "/problems/request-timeout" and problem["status"] == 408
        assert problem["detail"] and problem["request_id"]
        # Never before the stated deadline (the server counts from its accept, after connect).
        assert client.closed_at - client.connected_at >= READ_TIMEOUT
    assert sorted(srv.worker_pids()) == workers, "a worker was replaced"
    assert srv.workers_booted() == booted, "a worker was restarted"
    assert "WORKER TIMEOUT" not in logs and "Traceback" not in logs
    # An operator sees them: the app's request metrics never do.
    assert _timeouts_counted(srv) == timeouts_before + len(slow)


def _timeouts_counted(srv: Server) -> float:
    name = "penguin_answered_before_app_total"
    return metric_value(srv, name, status="408", problem="request-timeout")


def test_500_idle_connections_do_not_stop_normal_uploads(
    model_dir: Path, photo: bytes, request: pytest.FixtureRequest
) -> None:
    # A long READ_TIMEOUT, so that the idle connections are certainly still held while
    # the uploads are answered, however slow the machine.
    with running_server(workers=2, model_dir=model_dir, env={"READ_TIMEOUT": "600"}) as srv:
        workers = sorted(srv.worker_pids())
        idle = open_idle(srv.port, IDLE_CONNECTIONS)
        try:
            # Accepted by the workers (each also holds its listening socket), not left in
            # the listen backlog.
            _wait(
                lambda: sockets_held(workers) >= IDLE_CONNECTIONS + len(workers),
                60, "holding the idle connections",
            )  # fmt: skip
            answers = [_predict(srv, photo, timeout=60) for _ in range(6)]
            open_after = sum(still_open(s) for s in idle)
        finally:
            for sock in idle:
                sock.close()
        assert sorted(srv.worker_pids()) == workers
        logs = srv.logs()

    _report(
        request,
        f"{IDLE_CONNECTIONS} idle connections held by the workers; uploads "
        f"{[s for s, _ in answers]} in {[round(t * 1000) for _, t in answers]} ms; "
        f"{open_after} idle connections still open after",
    )
    assert [s for s, _ in answers] == [200] * 6
    assert open_after == IDLE_CONNECTIONS
    assert "Traceback" not in logs


def test_an_upload_over_expect_100_continue_gets_its_continue_then_its_answer(
    default_server: Server, photo: bytes
) -> None:
    head, body = multipart_upload(default_server.port, photo)
    head = head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=30) as sock:
        sock.sendall(head)
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"100 Continue" not in answer  # not a second time


def test_an_oversized_upload_over_expect_100_continue_is_refused_before_its_body(
    default_server: Server,
) -> None:
    too_large = Settings().max_upload_bytes + 1
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {too_large}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=30) as sock:
        sock.sendall(head)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"/problems/upload-too-large" in answer


def test_a_client_that_stops_sending_mid_body_but_still_reads_gets_400(
    default_server: Server, photo: bytes
) -> None:
    head, body = multipart_upload(default_server.port, photo)
    with socket.create_connection(("127.0.0.1", default_server.port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
        sock.shutdown(socket.SHUT_WR)  # no more to send; the answer may still come
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"application/problem+json" in answer


def test_a_chunked_upload_is_received_whole_and_answered(
    default_server: Server, photo: bytes
) -> None:
    _, body = multipart_upload(default_server.port, photo)
    pieces = (body[i : i + 4096] for i in range(0, len(body), 4096))
    response = requests.post(
        default_server.url("/predict"),
        data=pieces,  # a generator: requests sends it chunked
        headers={"Content-Type": "multipart/form-data; boundary=penguin-boundary"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "top_k" in response.json()


def test_uploads_past_the_buffer_budget_wait_their_turn_and_all_complete(
    model_dir: Path, request: pytest.FixtureRequest
) -> None:
    # One worker may hold 1 MiB of bodies being received; eight 0.9 MB uploads arrive
    # side by side, in pieces: they must all get through, in turn, none cut or refused.
    data = bytes(range(256)) * (900_000 // 256)
    env = {"MAX_UPLOAD_MB": "1"}
    with running_server(workers=1, model_dir=model_dir, env=env) as srv:
        results: list[bytes] = [b""] * 8

        def upload(i: int) -> None:
            head, body = multipart_upload(srv.port, data, "noise.jpg")
            with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
                sock.sendall(head)
                for start in range(0, len(body), 64 * 1024):
                    sock.sendall(body[start : start + 64 * 1024])
                    time.sleep(0.01)
                results[i] = _read_all(sock)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        logs = srv.logs()
    statuses = [r.split(b" ", 2)[1].decode() if r else "none" for r in results]
    _report(request, f"8 uploads of 0.9 MB against a 1 MiB buffer budget: {statuses}")
    # Not an image: each is refused by the decoder (415), which means it arrived whole.
    assert statuses == ["415"] * 8
    assert "Traceback" not in logs


def _big_webp() -> bytes:
    """A 49 MP WebP: about a CPU second to decode."""
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (30, 90, 150)).save(buf, "WEBP", quality=10, method=0)
    return buf.getvalue()


def test_a_worker_running_a_long_request_leaves_new_connections_to_the_idle_one(
    default_server: Server, photo: bytes, request: pytest.FixtureRequest
) -> None:
    # As with sync workers: a busy worker takes no connection, so uploads sent meanwhile
    # are answered by the other worker at once, not queued behind the long request.
    files = [("file", (f"big{i}.webp", _big_webp(), "image/webp")) for i in range(6)]
    batch: dict[str, requests.Response] = {}

    def long_request() -> None:
        url = default_server.url("/predict/batch")
        batch["answer"] = requests.post(url, files=files, timeout=120)

    thread = threading.Thread(target=long_request)
    thread.start()
    answered: list[str] = []
    while thread.is_alive():
        response = requests.post(
            default_server.url("/predict"), files={"file": ("p.jpg", photo)}, timeout=60
        )
        assert response.status_code == 200
        answered.append(response.headers["X-Instance-Id"])
    thread.join()
    busy = batch["answer"].headers["X-Instance-Id"]
    during = answered[:-1]  # the last may have been sent as the batch ended
    _report(request, f"{len(during)} uploads answered during a 6 x 49 MP batch")
    assert batch["answer"].status_code == 200
    assert len(during) >= 3
    assert busy not in during


def test_a_request_running_past_timeout_still_gets_its_worker_replaced(
    model_dir: Path, request: pytest.FixtureRequest
) -> None:
    # The worker's event loop beats every second whatever its threads do; a request stuck
    # in the app must still get the worker killed after TIMEOUT, as a sync worker was.
    # Stuck here means a batch of 32 WebPs of 49 MP: about a CPU second each to decode.
    webp = _big_webp()
    env = {"TIMEOUT": "5", "MAX_BATCH_FILES": "32"}
    with running_server(workers=1, model_dir=model_dir, env=env) as srv:
        (victim,) = srv.worker_pids()
        files = [("file", (f"big{i}.webp", webp, "image/webp")) for i in range(32)]
        with pytest.raises(requests.ConnectionError):
            requests.post(srv.url("/predict/batch"), files=files, timeout=120)
        srv.wait_for(lambda: srv.worker_pids() and victim not in srv.worker_pids(), 60, "replaced")
        srv.wait_ready()
        logs = srv.logs()
    _report(request, "the worker running a batch past TIMEOUT (5 s) was killed and replaced")
    assert "WORKER TIMEOUT" in logs


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
