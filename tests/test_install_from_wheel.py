"""From nothing: this checkout's wheel, installed without extras into a fresh venv, serves.

What a newcomer's `pip install .` gives, used from a folder far from the checkout: the
command lists every subcommand, `serve` answers a real photo, `predict` prints its line,
and `train` says which install it needs. The wheel must carry the model and the page.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from penguin_api.cli import _COMMANDS, TRAIN_INSTALL
from tests.server import DEFAULT_MODEL_DIR, REPO_ROOT, free_port, model_available
from tests.wheel_venv import WheelVenv, installed_wheel

CARD = "model-card.json"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WheelVenv]:
    if not model_available(DEFAULT_MODEL_DIR):
        pytest.skip(f"no model in {DEFAULT_MODEL_DIR} to put in the wheel")
    with installed_wheel(tmp_path_factory.mktemp("wheel"), DEFAULT_MODEL_DIR) as installed:
        yield installed


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with no checkout, model or config file anywhere near it."""
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((DEFAULT_MODEL_DIR / CARD).read_text())


def run(venv: WheelVenv, cwd: Path, *args: str, timeout: float = 120):
    return subprocess.run(
        [str(venv.bin / "penguin-api"), *args],
        cwd=cwd,
        env=venv.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_carries_the_code_the_model_and_the_page(venv, card):
    names = set(zipfile.ZipFile(venv.wheel).namelist())
    modules = {
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "penguin_api").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= names, f"not in the wheel: {sorted(modules - names)}"
    assert {f"penguin_api/model/{CARD}", f"penguin_api/model/{card['file']}"} <= names
    page = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "penguin_api" / "web").rglob("*")}
    assert {p for p in page if "/templates/" in p or "/static/" in p} <= names


def test_nothing_of_the_checkout_or_the_training_stack_is_reachable(venv, outside):
    probe = (
        "import importlib.util, json, penguin_api\n"
        "from penguin_api.config import DEFAULT_MODEL_DIR\n"
        "print(json.dumps({'package': penguin_api.__file__, 'model': str(DEFAULT_MODEL_DIR),\n"
        "    'torch': importlib.util.find_spec('torch') is not None}))\n"
    )
    proc = subprocess.run(
        [str(venv.bin / "python"), "-c", probe],
        cwd=outside,
        env=venv.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    where = json.loads(proc.stdout)
    assert Path(where["package"]).is_relative_to(venv.root)
    assert Path(where["model"]) == Path(where["package"]).parent / "model"
    assert where["torch"] is False  # installed without extras


def test_help_lists_every_subcommand(venv, outside):
    result = run(venv, outside, "--help")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in _COMMANDS)


@pytest.mark.parametrize("command", [n for n, spec in _COMMANDS.items() if spec.needs])
def test_training_commands_exit_2_with_the_install_line(venv, outside, command):
    result = run(venv, outside, command)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert TRAIN_INSTALL in result.stderr and "Traceback" not in result.stderr


def test_predict_prints_the_json_line(venv, outside, penguin_photo, card):
    result = run(venv, outside, "predict", str(penguin_photo))
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["file"] == str(penguin_photo)
    assert line["species"] in card["labels"] and line["is_penguin"] is True
    assert line["model"] == {"name": card["name"], "version": card["version"]}


def test_serve_answers_a_real_photo_with_a_species(venv, outside, penguin_photo, card):
    port = free_port()
    log = outside / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv.bin / "penguin-api"), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=outside,
            env=venv.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base + "/ready", log, timeout=120)
        with penguin_photo.open("rb") as photo:
            answer = requests.post(base + "/predict", files={"file": photo}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["species"] in card["labels"]
        assert requests.get(base + "/model", timeout=30).json()["sha256"] == card["sha256"]
        page = requests.get(base + "/", timeout=30)
        assert page.status_code == 200 and "<form" in page.text
        for asset in ("page.css", "page.js"):
            assert requests.get(f"{base}/assets/{asset}", timeout=30).status_code == 200
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll `url` until 200; fail with the server's log if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"penguin-api serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(f"penguin-api serve not ready after {timeout:.0f} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (a graceful stop), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
