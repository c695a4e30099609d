"""Faults with a real Gunicorn: a damaged model, a killed worker, SIGTERM under load, a burst.

Each test prints what it counted (requests lost, latency), so a CI log shows the figures
docs/reliability.md quotes. Nothing here asserts a speed; the waits are upper bounds that only a
hang reaches.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from urllib3 import encode_multipart_formdata

from tests.load_driver import Load, Photo, mixed_photos, percentiles, post_photo, summary
from tests.server import CARD_FILE, MODEL_FILE, copy_model, running_server

#: Upper bound on how long a refused start may take; it normally takes a second or two.
REFUSAL_WAIT_S = 30


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[Photo]:
    return mixed_photos(shared_data, count=12)


def _report(request: pytest.FixtureRequest, text: str) -> None:
    """Print a figure even when pytest captures output."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        print(f"\n{request.node.name}: {text}")


# --- a damaged model: the server must refuse to start ------------------------------------


def _alter(model: Path) -> str:
    onnx = model / MODEL_FILE
    data = bytearray(onnx.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    onnx.write_bytes(bytes(data))
    return "fails its sha256 checksum"


def _truncate(model: Path) -> str:
    onnx = model / MODEL_FILE
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    return "fails its sha256 checksum"


def _remove(model: Path) -> str:
    (model / MODEL_FILE).unlink()
    return "model file not found"


def _drop_label(model: Path) -> str:
    card_path = model / CARD_FILE
    card = json.loads(card_path.read_text())
    card["labels"] = card["labels"][:-1]
    card_path.write_text(json.dumps(card))
    return "labels"


def _garbage_with_matching_checksum(model: Path) -> str:
    import hashlib

    garbage = b"not an onnx graph " * 512
    (model / MODEL_FILE).write_bytes(garbage)
    card_path = model / CARD_FILE
    card = json.loads(card_path.read_text())
    card["sha256"] = hashlib.sha256(garbage).hexdigest()
    card_path.write_text(json.dumps(card))
    return "ONNX Runtime cannot load"


def _confident_threshold_over_one(model: Path) -> str:
    card_path = model / CARD_FILE
    card = json.loads(card_path.read_text())
    card["thresholds"]["confident"] = 95  # a percentage where a probability belongs
    card_path.write_text(json.dumps(card))
    return "thresholds.confident must be a probability in (0, 1]"


def _remove_card(model: Path) -> str:
    (model / CARD_FILE).unlink()
    return "model card not found"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "altered-bytes": _alter,
    "truncated": _truncate,
    "missing-onnx": _remove,
    "card-label-mismatch": _drop_label,
    "not-onnx-but-checksum-matches": _garbage_with_matching_checksum,
    "missing-card": _remove_card,
    "confident-threshold-over-one": _confident_threshold_over_one,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_model_stops_the_server_with_one_clear_line(
    model_dir: Path,
    tmp_path: Path,
    small_jpeg: bytes,
    damage: Callable[[Path], str],
    request: pytest.FixtureRequest,
) -> None:
    model = copy_model(tmp_path / "model", model_dir)
    expected = damage(model)
    started = time.monotonic()
    with running_server(workers=2, model_dir=model, wait_ready=False) as srv:
        code, answers = srv.answers_until_exit(small_jpeg, REFUSAL_WAIT_S)
        elapsed = time.monotonic() - started
        records = srv.log_records()

    assert code != 0
    critical = [r for r in records if r.get("severity") == "CRITICAL"]
    assert len(critical) == 1, f"expected one CRITICAL line, got {critical}\n{srv.logs()}"
    message = critical[0]["message"]
    assert "refusing to start" in message and expected in message, message
    if "checksum" in expected:  # both hashes named, so an operator can tell which is wrong
        card_sha = json.loads((model / CARD_FILE).read_text())["sha256"]
        assert card_sha in message
    # No worker ever served this model: none became ready, none answered a photo.
    assert 200 not in answers, answers
    assert not any(r.get("message", "").startswith("model ready") for r in records)
    _report(request, f"exit {code} after {elapsed:.1f} s: {message}")


# --- a worker killed under load -------------------------------------------------------------


def test_worker_killed_under_load_is_replaced_and_loses_at_most_its_request(
    model_dir: Path, photos: list[Photo], request: pytest.FixtureRequest
) -> None:
    with running_server(workers=2, model_dir=model_dir) as srv:
        before = srv.worker_pids()
        load = Load(srv.base_url, photos, threads=4).start()
        load.wait_done(60)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        srv.wait_for(
            lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(),
            60, "replacing the killed worker",
        )  # fmt: skip
        (replacement,) = set(srv.worker_pids()) - set(before)
        # The replacement serves traffic, then a last stretch of normal load.
        srv.wait_for(
            lambda: any(o.instance.endswith(f"-{replacement}") for o in load.outcomes if o.ok),
            60, "the replacement answering",
        )  # fmt: skip
        load.wait_done(load.done() + 60)
        outcomes = load.stop()
        ready = requests.get(srv.url("/ready"), timeout=10).status_code
        logs = srv.logs()

    failed = [o for o in outcomes if not o.ok]
    in_flight = [o for o in outcomes if o.started <= killed_at <= o.ended]
    counts = summary(outcomes)
    _report(
        request,
        f"{len(outcomes)} requests, outcomes {dict(counts)}, in flight at the kill "
        f"{len(in_flight)}, lost {len(failed)}",
    )
    assert ready == 200
    # Only what the killed worker held when it died may be lost: requests in flight at the
    # kill (one being answered, others it had accepted), nothing sent later.
    assert all(o.started <= killed_at <= o.ended for o in failed), failed
    assert all(o.status is None for o in failed), "a lost request must not become a 5xx"
    assert "Traceback" not in logs


# --- SIGTERM under load ----------------------------------------------------------------


class SlowUpload:
    """A POST /predict whose body arrives in two halves, so it is in flight for a while."""

    def __init__(self, port: int, photo: Photo) -> None:
        body, content_type = encode_multipart_formdata(
            {"file": (photo.name, photo.data, photo.mime)}
        )
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self._halves = (head + body[: len(body) // 2], body[len(body) // 2 :])
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.sendall(self._halves[0])
        self.status: int | None = None
        self.instance = ""

    def finish(self) -> None:
        """Send the rest of the body and read the answer."""
        self._sock.sendall(self._halves[1])
        chunks = []
        while chunk := self._sock.recv(65536):
            chunks.append(chunk)
        self._sock.close()
        head = b"".join(chunks).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "x-instance-id":
                self.instance = value.strip()


def test_sigterm_under_load_answers_accepted_requests_and_exits_in_time(
    model_dir: Path, photos: list[Photo], request: pytest.FixtureRequest
) -> None:
    with running_server(workers=2, model_dir=model_dir) as srv:
        for photo in photos[:4]:  # both workers warm
            assert post_photo(srv.base_url, photo).ok
        # Two uploads half sent: accepted, their bodies still arriving.
        slow = [SlowUpload(srv.port, photos[i]) for i in range(2)]
        srv.wait_accepted()
        load = Load(srv.base_url, photos, threads=4).start()
        time.sleep(0.5)  # let the load run a moment (the half-sent uploads hold no worker)
        srv.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        srv.wait_log("Handling signal: term")  # the shutdown has begun; now the uploads complete
        finishers = [threading.Thread(target=s.finish) for s in slow]
        for thread in finishers:
            thread.start()
        code = srv.proc.wait(30)
        exited_after = time.monotonic() - term_at
        for thread in finishers:
            thread.join(30)
        outcomes = load.stop()
        logs = srv.logs()

    counts = summary(outcomes)
    _report(
        request,
        f"master exited {code} {exited_after:.1f} s after SIGTERM; in-flight uploads "
        f"{[s.status for s in slow]}; the other clients' requests {dict(counts)}",
    )
    assert [s.status for s in slow] == [200, 200], "accepted requests must be answered"
    assert code == 0
    assert exited_after < 10, "Cloud Run kills the instance 10 s after SIGTERM"
    # Requests that arrived after SIGTERM were never accepted: refused, not failed.
    assert not [o for o in outcomes if o.status is not None and o.status >= 500], counts
    assert "Traceback" not in logs


# --- a burst of 64 concurrent uploads -------------------------------------------------------


def test_64_concurrent_uploads_against_2_workers_all_answered(
    model_dir: Path, photos: list[Photo], request: pytest.FixtureRequest
) -> None:
    rounds, clients = 3, 64
    with running_server(workers=2, model_dir=model_dir) as srv:
        workers = sorted(srv.worker_pids())
        lines = []
        all_outcomes = []
        for n in range(rounds):
            barrier = threading.Barrier(clients)
            outcomes = [None] * clients

            def client(i: int, barrier=barrier, outcomes=outcomes) -> None:
                barrier.wait()
                outcomes[i] = post_photo(srv.base_url, photos[i % len(photos)])

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            all_outcomes += outcomes
            lines.append(
                f"round {n + 1}: {dict(summary(outcomes))} latency ms "
                f"{percentiles([o.latency for o in outcomes])}"
            )
        logs = srv.logs()
        assert sorted(srv.worker_pids()) == workers, "a worker was replaced"

    _report(request, "; ".join(lines))
    assert all(o.status == 200 for o in all_outcomes), summary(all_outcomes)
    assert "WORKER TIMEOUT" not in logs
