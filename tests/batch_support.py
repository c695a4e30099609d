"""Helpers for the batch tool's tests: a photo collection, running and stopping the CLI.

The collection is real photos read from ../shared/data where they lie (penguins and
non-penguins, never copied into the repository) plus broken files written to a temporary
folder: a truncated JPEG, text named .jpg, an empty .png.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.server import REPO_ROOT, clean_env


@dataclass(frozen=True)
class Collection:
    """Command-line paths and the keys (row `file` values) they expand to, in order."""

    paths: list[str]
    penguins: list[str]
    others: list[str]
    broken: list[str]

    @property
    def keys(self) -> list[str]:
        return [*self.penguins, *self.others, *self.broken]


def _photos(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def make_collection(shared_data: Path, scratch: Path) -> Collection:
    """The validation penguins and non-penguins, plus a folder of broken files."""
    penguins_dir = shared_data / "penguins" / "val"
    others_dir = shared_data / "not_penguin" / "val"
    broken_dir = scratch / "broken"
    (broken_dir / "deeper").mkdir(parents=True, exist_ok=True)
    first = _photos(penguins_dir)[0]
    (broken_dir / "cut-short.jpg").write_bytes(Path(first).read_bytes()[:1500])
    (broken_dir / "deeper" / "not-an-image.jpg").write_text("these are not pixels\n")
    (broken_dir / "empty.png").write_bytes(b"")
    (broken_dir / "notes.txt").write_text("not a photo name: a folder search skips it\n")
    return Collection(
        paths=[str(penguins_dir), str(others_dir), str(broken_dir)],
        penguins=_photos(penguins_dir),
        others=_photos(others_dir),
        broken=[str(broken_dir / "cut-short.jpg"), str(broken_dir / "deeper" / "not-an-image.jpg"),
                str(broken_dir / "empty.png")],
    )  # fmt: skip


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give: no stray service or task settings."""
    env = clean_env()
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw):
    """Run `penguin-api ARGS` to the end; the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "penguin_api.cli", *args],
        cwd=REPO_ROOT, env=env or cli_env(), capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip


def start_cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """Start `penguin-api ARGS` in its own process group (as a shell job would be)."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen(
        [sys.executable, "-m", "penguin_api.cli", *args],
        cwd=REPO_ROOT, env=env or cli_env(), text=True, start_new_session=True, **options,
    )  # fmt: skip


class HeldPhoto:
    """A photo path whose reader blocks until released: a run cannot get past it.

    It is a named pipe, so a stop, kill or crash meant for the middle of a run lands
    there however fast the run goes and however late the test gets to it on a busy
    machine. Released, every reader (now or later) reads it as an empty file.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "held.jpg"
        os.mkfifo(self.path)

    def release(self) -> None:
        if not self.path.exists() or self.path.is_file():
            return
        holder = os.open(self.path, os.O_RDWR)  # a writer: readers blocked in open() go on
        spare = self.path.with_name("released.jpg")
        spare.write_bytes(b"")
        spare.replace(self.path)  # later readers open an empty file
        os.close(holder)  # the current readers see the end of the (empty) pipe


@contextlib.contextmanager
def held_photo(folder: Path):
    """A HeldPhoto in `folder`, released on the way out whatever happened."""
    held = HeldPhoto(folder)
    try:
        yield held
    finally:
        held.release()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `condition()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def kill_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results file, CSV records as dicts of strings, JSONL as JSON."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    return [json.loads(line) for line in text.splitlines()]


def card(model_dir: Path) -> dict:
    return json.loads((model_dir / "model-card.json").read_text())
