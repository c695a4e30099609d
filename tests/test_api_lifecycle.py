"""The service's life: readiness, refusing a bad model, workers dying, graceful shutdown."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from penguin_api import create_app
from penguin_api.config import Settings
from tests.server import CARD_FILE, MODEL_FILE, copy_model, running_server


# --- readiness ---------------------------------------------------------------------------
def test_ready_is_503_until_the_model_is_loaded_then_200(model_dir):
    app = create_app(Settings(model_dir=model_dir), load_model=False)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    for path, method in (("/ready", "get"), ("/model", "get"), ("/predict", "post")):
        response = getattr(client, method)(path)
        assert response.status_code == 503, path
        assert response.mimetype == "application/problem+json"
        assert response.json["type"] == "/problems/not-ready"
        assert response.headers["Retry-After"] == "1"
    app.extensions["penguin"].slot.load()
    assert client.get("/ready").status_code == 200


def test_requests_sent_while_workers_warm_up_wait_for_them_instead_of_failing(
    model_dir, small_jpeg
):
    # Many warm-up runs keep the workers loading for a while; a worker takes connections
    # only once its model is ready, so early requests queue and then get real answers.
    with running_server(model_dir=model_dir, env={"WARMUP_RUNS": "100"}, wait_ready=False) as srv:
        answers: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and srv.proc.poll() is None and len(answers) < 3:
            try:
                ready = requests.get(srv.url("/ready"), timeout=60)
                photo = requests.post(srv.url("/predict"), files={"file": small_jpeg}, timeout=60)
            except requests.ConnectionError:  # not bound yet
                time.sleep(0.02)
                continue
            answers += [ready.status_code, photo.status_code]
        assert answers and set(answers) == {200}, answers
        loaded = [r for r in srv.log_records() if r["message"].startswith("model ready")]
        assert loaded, "answers came only after a worker had loaded its model"


# --- a bad model stops the server ----------------------------------------------------------
def _flip_byte(model):
    data = bytearray((model / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / MODEL_FILE).write_bytes(bytes(data))


def _truncate(model):
    data = (model / MODEL_FILE).read_bytes()
    (model / MODEL_FILE).write_bytes(data[: len(data) // 2])


def _remove(model):
    (model / MODEL_FILE).unlink()


def _unloadable(model):
    junk = b"\x08\x07" + os.urandom(4096)
    (model / MODEL_FILE).write_bytes(junk)
    card = json.loads((model / CARD_FILE).read_text())
    card["sha256"] = hashlib.sha256(junk).hexdigest()
    (model / CARD_FILE).write_text(json.dumps(card))


def _extra_label(model):
    card = json.loads((model / CARD_FILE).read_text())
    card["labels"] = [*card["labels"], "Dodo"]
    (model / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_flip_byte, "sha256"),
        (_truncate, "sha256"),
        (_remove, "model file not found"),
        (_unloadable, "ONNX Runtime cannot load"),
        (_extra_label, "labels"),
    ],
    ids=["altered", "truncated", "missing", "unloadable", "card-label-mismatch"],
)
def test_bad_model_stops_the_server_with_one_clear_line(
    model_dir, tmp_path, small_jpeg, damage, says
):
    model = copy_model(tmp_path / "model", model_dir)
    damage(model)
    with running_server(model_dir=model, wait_ready=False) as srv:
        code, answers = srv.answers_until_exit(small_jpeg, 60)
        records = srv.log_records()
        logs = srv.logs()
    assert code != 0
    refusals = [r for r in records if r.get("severity") == "CRITICAL"]
    assert len(refusals) == 1, logs
    assert says in refusals[0]["message"]
    # No worker ever served this model: none became ready, none answered a photo.
    assert 200 not in answers, answers
    assert not [r for r in records if r.get("message", "").startswith("model ready")], logs
    if says == "sha256":
        expected = json.loads((model / CARD_FILE).read_text())["sha256"]
        actual = hashlib.sha256((model / MODEL_FILE).read_bytes()).hexdigest()
        assert expected in refusals[0]["message"] and actual in refusals[0]["message"]


# --- workers come and go -----------------------------------------------------------------
@pytest.fixture
def fresh_server(model_dir):
    with running_server(workers=2, model_dir=model_dir) as srv:
        yield srv


def _instances_seen(server, photo: bytes, n: int = 24) -> dict[str, requests.Response]:
    """Send `n` predictions, a few at a time so both workers take some; one per instance."""

    def one(_):
        return requests.post(server.url("/predict"), files={"file": photo}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(n)))
    assert all(r.status_code == 200 for r in responses)
    return {r.headers["X-Instance-Id"]: r for r in responses}


def test_killed_worker_is_replaced_and_the_service_keeps_answering(fresh_server, small_jpeg):
    srv = fresh_server
    before = srv.worker_pids()
    assert len(before) == 2
    expected = requests.post(srv.url("/predict"), files={"file": small_jpeg}, timeout=30).json()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    srv.wait_for(
        lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(), 60, "replaced"
    )
    srv.wait_all_ready(2)  # the replacement loads its model too
    after = srv.worker_pids()
    assert before[1] in after
    instances = {int(i.rsplit("-", 1)[1]) for i in _instances_seen(srv, small_jpeg)}
    assert victim not in instances and instances <= set(after)
    answer = requests.post(srv.url("/predict"), files={"file": small_jpeg}, timeout=30)
    assert answer.json() == expected
    assert srv.proc.poll() is None


def test_workers_load_their_models_one_at_a_time(fresh_server):
    import datetime as dt

    def ready_lines():
        return [r for r in fresh_server.log_records() if r["message"].startswith("model ready")]

    fresh_server.wait_for(lambda: len(ready_lines()) == 2, 60, "both workers loaded")
    loads = []
    for record in ready_lines():
        end = dt.datetime.fromisoformat(record["time"]).timestamp()
        loads.append((end - record["load_seconds"], end))
    assert len(loads) == 2
    (_, first_end), (second_start, _) = sorted(loads)
    assert second_start >= first_end  # the second load began after the first ended


def test_cold_start_header_marks_each_workers_first_real_request_only(fresh_server, small_jpeg):
    first_by_instance: dict[str, bool] = {}
    for _ in range(6):  # probes never carry the flag nor use it up
        assert "X-Cold-Start" not in requests.get(fresh_server.url("/ready"), timeout=5).headers

    def one(_):
        return requests.post(fresh_server.url("/predict"), files={"file": small_jpeg}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(24)))
    cold = [r for r in responses if r.headers.get("X-Cold-Start") == "1"]
    for response in responses:
        instance = response.headers["X-Instance-Id"]
        first_by_instance.setdefault(instance, False)
        first_by_instance[instance] |= response.headers.get("X-Cold-Start") == "1"
    assert len(cold) == len(first_by_instance)  # exactly one cold answer per worker
    assert all(first_by_instance.values())


# --- shutdown ------------------------------------------------------------------------------
def _start_slow_upload(port: int, photo: bytes) -> tuple[socket.socket, bytes]:
    """Open a /predict request and send all but the last bytes of its body."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body[:-10])
    return sock, body[-10:]


def _finish(sock: socket.socket, rest: bytes) -> bytes:
    sock.sendall(rest)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_sigterm_lets_the_request_in_flight_finish(model_dir, small_jpeg):
    with running_server(workers=1, model_dir=model_dir) as srv:
        sock, rest = _start_slow_upload(srv.port, small_jpeg)
        srv.wait_accepted()  # the worker has the request and is reading its body
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_log("Handling signal: term")  # the shutdown has begun
        response = _finish(sock, rest)
        assert srv.proc.wait(15) == 0
        # Workers end cleanly: no abort from a runtime that was loaded before the fork.
        assert "SIGABRT" not in srv.logs() and "terminate called" not in srv.logs()
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 200 OK", response[:300]
    assert b'"top_k"' in response


def test_an_unusable_setting_stops_the_server_naming_the_variable(model_dir):
    with running_server(model_dir=model_dir, env={"TOP_K": "many"}, wait_ready=False) as srv:
        code = srv.proc.wait(60)
        records = srv.log_records()
    assert code != 0
    assert [r["severity"] for r in records] == ["CRITICAL"]
    assert "TOP_K" in records[0]["message"]
