"""A fresh venv holding this checkout's wheel and nothing else: what `pip install .` gives a user.

The venv and its dependencies are built once per pyproject.toml (and Python version) and kept
under $XDG_CACHE_HOME/penguin-api/wheel-venv/ (outside the repository), so a re-run costs only
the wheel: built from a snapshot of the working tree each time and reinstalled with --no-deps,
so it is always the current code. A lock file keeps two test sessions (two worktrees, say)
from reinstalling into the same venv under each other's feet.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.server import REPO_ROOT

#: Never part of a wheel build's source: repositories, environments, caches, outputs.
_NOT_SOURCE = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".cache",
    "reports",
    "out",
    "build",
    "dist",
    "*.egg-info",
    "node_modules",
)
_DONE = ".complete"
_PIP_TIMEOUT = 1200  # first run: the dependencies download (onnxruntime, numpy, Pillow...)


def cache_root() -> Path:
    """$XDG_CACHE_HOME/penguin-api/wheel-venv (default ~/.cache/...), outside the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "penguin-api" / "wheel-venv"


def cache_key(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """Changes with pyproject.toml's content (dependencies, build backend) or the Python."""
    digest = hashlib.sha256(pyproject.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class WheelVenv:
    """The venv with the wheel installed, and the wheel it came from."""

    root: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        """An environment that reaches only this venv: no PYTHONPATH, its bin first on PATH."""
        drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env


@contextlib.contextmanager
def installed_wheel(
    work: Path, model_dir: Path | None = None, lock_timeout: float = 1800
) -> Iterator[WheelVenv]:
    """Build this checkout's wheel in `work`, install it without extras into the cached venv.

    `model_dir` (another model under test) replaces model/ in the snapshot the wheel is built
    from. The venv stays locked for this session until the block ends.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key()
    with _locked(root / f"{key}.lock", lock_timeout):
        venv, builder = root / key / "venv", root / key / "build"
        if not (root / key / _DONE).is_file():
            shutil.rmtree(root / key, ignore_errors=True)
            _create(venv)
            _create(builder)
            requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]
            _pip(builder, "install", *requires["requires"])
            fresh = True
        else:
            fresh = False
        source = snapshot(work / "source", model_dir)
        _pip(builder, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(source))
        (wheel,) = work.glob("penguin_api-*.whl")
        if fresh:  # the one install that brings the dependencies (no extras)
            _pip(venv, "install", str(wheel))
            (root / key / _DONE).touch()
        else:
            _pip(venv, "install", "--no-deps", "--force-reinstall", str(wheel))
        yield WheelVenv(root=venv, wheel=wheel)


def snapshot(dest: Path, model_dir: Path | None = None) -> Path:
    """Copy the working tree (uncommitted edits included) to `dest`, without build leftovers.

    Building from a copy keeps setuptools' build/ and egg-info out of the checkout, and stale
    files from an earlier build out of the wheel.
    """
    shutil.copytree(REPO_ROOT, dest, ignore=shutil.ignore_patterns(*_NOT_SOURCE), symlinks=True)
    if model_dir is not None and model_dir.resolve() != (REPO_ROOT / "model").resolve():
        shutil.rmtree(dest / "model", ignore_errors=True)
        shutil.copytree(model_dir, dest / "model")
    return dest


def _create(venv: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300
    )


def _pip(venv: Path, *args: str) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True,
        text=True,
        timeout=_PIP_TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"pip {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting at most `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    with path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} still locked after {timeout:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
