"""`penguin-api serve` and `penguin-api predict`, run as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import requests

from tests.server import (
    REPO_ROOT,
    clean_env,
    copy_model_with_thresholds,
    free_port,
    running_server,
)


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "penguin_api.cli", *args],
        cwd=REPO_ROOT,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_predict_prints_the_api_answer_per_photo(model_dir, tmp_path, small_jpeg):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(small_jpeg)
    result = cli("predict", str(photo), str(photo), "--model-dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1]
    with running_server(workers=1, model_dir=model_dir) as srv:
        api = requests.post(srv.url("/predict"), files={"file": small_jpeg}, timeout=30).json()
    assert lines[0] == {"file": str(photo), **api}


def test_predict_lines_mark_answers_below_the_cards_confident_threshold(
    model_dir, tmp_path, penguin_photo
):
    lines = {}
    for threshold in (1.0, 0.01):
        model = copy_model_with_thresholds(
            tmp_path / str(threshold), model_dir, confident=threshold
        )
        result = cli("predict", str(penguin_photo), "--model-dir", str(model))
        assert result.returncode == 0, result.stderr
        lines[threshold] = json.loads(result.stdout)
    assert lines[1.0]["is_penguin"] and lines[1.0]["confidence"] < 1.0
    assert (lines[1.0]["uncertain"], lines[0.01]["uncertain"]) == (True, False)
    assert lines[1.0]["species"] == lines[0.01]["species"]


def test_predict_with_a_bad_confident_threshold_exits_2_and_says_why(
    model_dir, tmp_path, small_jpeg
):
    model = copy_model_with_thresholds(tmp_path / "m", model_dir, confident="high")
    photo = tmp_path / "p.jpg"
    photo.write_bytes(small_jpeg)
    result = cli("predict", str(photo), "--model-dir", str(model))
    assert result.returncode == 2 and result.stdout == ""
    assert 'thresholds.confident must be a probability in (0, 1] (or absent), not "high"' in (
        result.stderr
    )


def test_predict_reports_an_unreadable_photo_and_exits_1(model_dir, tmp_path, small_jpeg):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(small_jpeg)
    bad.write_bytes(b"not really a jpeg")
    result = cli("predict", str(bad), str(good), str(tmp_path / "missing.jpg"),
                 env={"MODEL_DIR": str(model_dir)})  # fmt: skip
    assert result.returncode == 1
    first, second, third = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"]["type"] == "/problems/unsupported-image"
    assert "species" in second and "error" not in second
    assert third["error"]["title"] == "Unreadable file"


def test_predict_with_a_bad_model_exits_2_and_says_why(tmp_path, small_jpeg):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(small_jpeg)
    result = cli("predict", str(photo), "--model-dir", str(tmp_path))
    assert result.returncode == 2
    assert "model card not found" in result.stderr


def test_serve_runs_gunicorn_with_the_project_config(model_dir):
    _serve_until_ready(model_dir, cwd="/", env=clean_env())  # not the working directory's


def test_serve_from_an_installed_package_without_the_repository_uses_the_same_settings(
    model_dir, tmp_path
):
    # As from a wheel: the package alone, no gunicorn.conf.py anywhere near it.
    site = tmp_path / "site-packages"
    shutil.copytree(REPO_ROOT / "penguin_api", site / "penguin_api",
                    ignore=shutil.ignore_patterns("__pycache__", "training"))  # fmt: skip
    records = _serve_until_ready(
        model_dir, cwd=str(tmp_path), env={**clean_env(), "PYTHONPATH": str(site)}
    )
    started = [r for r in records if r["message"].startswith("Listening at")]
    assert started and started[0]["logger"] == "gunicorn.error"  # JSON logs: our logger class
    verified = [r for r in records if r["message"].startswith("model files verified")]
    assert verified, "the config's on_starting hook ran"


def _serve_until_ready(model_dir, *, cwd: str, env: dict) -> list[dict]:
    """Run `penguin-api serve` until /ready is 200, stop it; its JSON log records."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "penguin_api.cli", "serve", "--port", str(port),
         "--host", "127.0.0.1", "--workers", "1", "--model-dir", str(model_dir)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(requests.ConnectionError):
                ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200
        assert ready.headers["X-Instance-Id"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    first = json.loads(out.splitlines()[0])
    assert first["severity"] == "INFO" and "gunicorn" in first["message"].lower()
    return [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
