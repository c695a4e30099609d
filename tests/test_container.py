"""The container image, built and run for real with podman or docker, as Cloud Run runs it.

One image is built per session from a snapshot of the tree and shared by every test here.
Containers run with Cloud Run's default shape (`--memory 1g --cpus 1`). Timings (build,
rebuild, cold start) are recorded in reports/container.json and printed, never asserted.
The Dockerfile and lock checks that need no engine are in test_dockerfile.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.container_engine import (
    REPO_ROOT,
    Build,
    Container,
    Engine,
    NoEngineError,
    find_engine,
    running,
    snapshot_context,
)
from tests.server import DEFAULT_MODEL_DIR, model_available

#: One tag per test session, so two sessions on one machine never remove each other's image.
IMAGE_TAG = f"localhost/penguin-api:pytest-{os.getpid()}"
REPORT = REPO_ROOT / "reports" / "container.json"
#: Cloud Run's default instance shape for this service (Makefile CPU/MEMORY).
LIMITS = ("--memory", "1g", "--cpus", "1")


def _record(**figures: object) -> None:
    """Merge measured figures into reports/container.json and print them."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data.update(figures)
    REPORT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\ncontainer figures: {json.dumps(figures)}")


# --- built and run ------------------------------------------------------------------------


@dataclass
class BuiltImage:
    """The session's image, its engine, and the context it was built from."""

    engine: Engine
    build: Build
    context: Path


@pytest.fixture(scope="session")
def engine() -> Engine:
    """docker or podman, set up; skip when the machine has neither."""
    try:
        return find_engine()
    except NoEngineError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """The image built once from a snapshot of the working tree."""
    # The model the other tests use (PENGUIN_TEST_MODEL_DIR can name a candidate) goes in.
    model = DEFAULT_MODEL_DIR if model_available(DEFAULT_MODEL_DIR) else None
    context = snapshot_context(tmp_path_factory.mktemp("build") / "context", model)
    build = engine.build(context, IMAGE_TAG)
    size = engine.image_size(IMAGE_TAG)
    base_size = engine.image_size(engine.base_image)
    _record(
        engine=engine.name,
        base_image=engine.base_image,
        build_seconds=round(build.seconds, 1),
        build_dependency_layer_from_cache=_dependency_step_cached(build),
        image_bytes=size,
        image_mb=round(size / 1e6, 1),
        base_image_mb=round(base_size / 1e6, 1),
        added_by_dockerfile_mb=round((size - base_size) / 1e6, 1),
    )
    yield BuiltImage(engine=engine, build=build, context=context)
    # The dependency layer stays cached in the builder stage's image for the next session.
    engine.run("rmi", "-f", IMAGE_TAG, check=False, timeout=120)


def _dependency_step_cached(build: Build) -> bool:
    return any("pip install" in step for step in build.cached_steps())


def _predict(base_url: str, photo: Path) -> requests.Response:
    with photo.open("rb") as f:
        return requests.post(
            base_url + "/predict", files={"file": (photo.name, f, "image/jpeg")}, timeout=60
        )


def _assert_prediction(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"species", "confidence", "is_penguin", "top_k", "model"}
    assert body["top_k"], body
    assert all(0.0 <= guess["confidence"] <= 1.0 for guess in body["top_k"])
    return body


@dataclass
class Served:
    """A container started for this module, and the first prediction it gave."""

    container: Container
    first: requests.Response


@pytest.fixture(scope="module")
def served(image: BuiltImage, model_dir: Path, penguin_photo: Path) -> Iterator[Served]:
    """A fresh container, timed from `run` to ready and to its first prediction."""
    with running(image.engine, image.build.tag, *LIMITS) as ctr:
        ready_s = ctr.wait_ready()
        first = _predict(ctr.base_url, penguin_photo)
        first_prediction_s = time.monotonic() - ctr.started_at
        _record(
            cold_start_run_to_ready_s=round(ready_s, 2),
            cold_start_run_to_first_prediction_s=round(first_prediction_s, 2),
            first_prediction_server_timing=first.headers.get("Server-Timing"),
        )
        yield Served(container=ctr, first=first)


@pytest.mark.container
def test_container_runs_as_non_root_and_answers_ready_then_predict(served: Served) -> None:
    body = _assert_prediction(served.first)
    assert body["model"]["name"]
    # Every process in the container (Gunicorn master and workers) runs unprivileged.
    ctr = served.container
    uids = ctr.engine.run(
        "exec", ctr.cid, "sh", "-c", "cat /proc/[0-9]*/status | grep '^Uid:'"
    ).stdout.split("\n")
    real_and_effective = {int(u) for line in uids if line for u in line.split()[1:3]}
    assert real_and_effective, uids
    assert 0 not in real_and_effective


#: Every format the service accepts, as Pillow (and pillow-heif) names it.
_FORMATS = {
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "AVIF": "avif",
    "HEIF": "heic",
}


@pytest.mark.container
@pytest.mark.parametrize("fmt", sorted(_FORMATS))
def test_container_decodes_every_accepted_format(
    served: Served, penguin_photo: Path, fmt: str
) -> None:
    # The image leaves out libraries serving does not need; every accepted format must
    # still decode in it. The photo is re-encoded in memory, never written anywhere.
    if fmt == "HEIF":
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.register_heif_opener()
    with Image.open(penguin_photo) as img:
        img = img.convert("RGB")
        img.thumbnail((640, 640))
        buf = io.BytesIO()
        img.save(buf, fmt)
    name = f"photo.{_FORMATS[fmt]}"
    resp = requests.post(
        served.container.base_url + "/predict",
        files={"file": (name, buf.getvalue(), f"image/{_FORMATS[fmt]}")},
        timeout=60,
    )
    _assert_prediction(resp)


@pytest.mark.container
def test_image_holds_the_service_but_no_compilers_caches_or_tests(image: BuiltImage) -> None:
    # As root, so that root's own cache folders are visible too.
    script = (
        "ls -A /app; ls /opt/venv/bin; "
        "for tool in gcc cc c++ make; do command -v $tool >/dev/null && echo has:$tool; done; "
        "{ find / -xdev -type d -path '*/.cache/pip'; find /opt/venv /app -type d -name tests; } "
        "| sed 's/^/has:/'; true"
    )
    out = image.engine.run(
        "run", "--rm", "--user", "0", image.build.tag, "sh", "-c", script
    ).stdout.split()
    assert {"gunicorn.conf.py", "model", "penguin_api"} <= set(out)
    assert not {"tests", "loadtests", ".git", ".venv", "Dockerfile"} & set(out)
    # The venv runs the service and installs nothing: Gunicorn in, pip out.
    assert "gunicorn" in out
    assert "pip" not in out
    assert not [word for word in out if word.startswith("has:")]


@pytest.mark.container
def test_container_finishes_the_request_in_flight_when_sigterm_stops_it(
    image: BuiltImage, model_dir: Path, penguin_photo: Path
) -> None:
    engine = image.engine
    with running(image.engine, image.build.tag, *LIMITS) as ctr:
        ctr.wait_ready()
        body = _multipart(penguin_photo.read_bytes(), penguin_photo.name)
        head = (
            "POST /predict HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{ctr.port}\r\n"
            "Content-Type: multipart/form-data; boundary=penguin-boundary\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", ctr.port), timeout=30) as sock:
            # Half the upload is on the wire, and a worker has accepted the request.
            sock.sendall(head + body[: len(body) // 2])
            ctr.wait_accepted()
            stop_started = time.monotonic()
            stopper = threading.Thread(
                target=engine.run, args=("stop", "-t", "10", ctr.cid), kwargs={"timeout": 60}
            )
            stopper.start()
            # Gunicorn's master logs the signal as it handles it; only then does the rest of
            # the upload go out, so the request is certainly in flight across the SIGTERM.
            ctr.wait_log(re.compile(r"signal:? term", re.I), timeout=15)
            sock.sendall(body[len(body) // 2 :])
            response = _read_http_response(sock)
            stopper.join(60)
        stop_s = time.monotonic() - stop_started

        status, payload = response
        assert status == 200, payload[:500]
        assert "top_k" in json.loads(payload)
        exit_code = engine.run("inspect", "--format", "{{.State.ExitCode}}", ctr.cid).stdout
        # 0: Gunicorn shut down by itself; 137 would mean the engine had to SIGKILL it at 10 s.
        assert exit_code.strip() == "0", ctr.logs()[-3000:]
        _record(sigterm_to_exit_s=round(stop_s, 2))


@pytest.mark.container
def test_changing_a_source_file_reuses_the_dependency_layer(image: BuiltImage) -> None:
    init = image.context / "penguin_api" / "__init__.py"
    init.write_text(init.read_text() + f"# rebuild probe {time.time_ns()}\n")
    rebuild = image.engine.build(image.context, IMAGE_TAG + "-rebuild")
    try:
        _record(rebuild_after_py_change_seconds=round(rebuild.seconds, 1))
        assert _dependency_step_cached(rebuild), rebuild.output[-4000:]
        assert not any("pip install" in step for step in rebuild.rebuilt_steps())
        # The code layer did change: the new image is not the old one.
        assert rebuild.image_id != image.build.image_id
        old, new = image.engine.layers(image.build.tag), image.engine.layers(rebuild.tag)
        shared = 0
        while shared < min(len(old), len(new)) and old[shared] == new[shared]:
            shared += 1
        # Only the layers from the code copy on differ; the venv layer below them is shared.
        assert 0 < len(new) - shared <= 2, (old, new)
    finally:
        image.engine.run("rmi", rebuild.tag, check=False)


@pytest.mark.container
def test_the_image_runs_a_cloud_run_job_task_on_a_bucket(
    image: BuiltImage, shared_data: Path, tmp_path: Path
) -> None:
    # make batch-job runs this image as `python -m penguin_api.cli predict gs://...`.
    storage = pytest.importorskip("google.cloud.storage")
    from tests.gcs_emulator import running_emulator

    photos = sorted((shared_data / "not_penguin" / "val").glob("*.jp*g"))[:6]
    with running_emulator(tmp_path / "emulator.log") as url:
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
        )
        bucket = client.create_bucket("survey")
        for photo in photos:
            bucket.blob(f"photos/{photo.name}").upload_from_filename(str(photo))
        run = image.engine.run(
            "run", "--rm", "--network", "host", *LIMITS, "-e", f"STORAGE_EMULATOR_HOST={url}",
            "-e", "CLOUD_RUN_TASK_INDEX=0", "-e", "CLOUD_RUN_TASK_COUNT=1",
            image.build.tag, "python", "-m", "penguin_api.cli", "predict",
            "gs://survey/photos", "--out", "gs://survey/results",
            check=False, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        part = bucket.blob("results/part-00000-of-00001.jsonl").download_as_bytes()
    rows = [json.loads(line) for line in part.decode().splitlines()]
    assert [r["file"] for r in rows] == sorted(f"gs://survey/photos/{p.name}" for p in photos)
    assert all("model" in r for r in rows)


# --- raw HTTP, for the request held open across SIGTERM --------------------------------------


def _multipart(data: bytes, filename: str) -> bytes:
    return (
        b"--penguin-boundary\r\n"
        + f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
        + b"Content-Type: image/jpeg\r\n\r\n"
        + data
        + b"\r\n--penguin-boundary--\r\n"
    )


def _read_http_response(sock: socket.socket) -> tuple[int, str]:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return 0, ""
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", errors="replace")
