"""Where rows go: standard output, a CSV/JSONL file that a re-run resumes, or one part of
a Cloud Run Job's output folder.

A results file only ever grows by whole chunks of complete rows, flushed as written, so
what a killed run leaves is every row it wrote, plus at worst one row cut short at the
end; the next run finds that row, cuts it off and redoes the photo.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from penguin_api.batch import rows as rowfmt
from penguin_api.batch import storage


class OutputError(Exception):
    """The results file cannot be resumed or written; the message says what to do."""


def part_name(index: int, count: int) -> str:
    """The object a Cloud Run task writes: part-00003-of-00020.jsonl."""
    return f"part-{index:05d}-of-{count:05d}.jsonl"


@dataclass
class Earlier:
    """What an earlier run left in the results file."""

    outcomes: list[rowfmt.Outcome] = field(default_factory=list)
    header: list[str] | None = None
    good_bytes: int = 0
    cut_short: bool = False

    @property
    def done(self) -> set[str]:
        return {o.file for o in self.outcomes}


def read_earlier(path: Path, fmt: str) -> Earlier:
    """Scan a results file for the rows it holds; OutputError if it is damaged mid-file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Earlier()
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    earlier = Earlier()
    if fmt == "jsonl":
        good = 0
        lines = text.splitlines(keepends=True)
        for number, line in enumerate(lines, 1):
            row = rowfmt.parse_jsonl_line(line)
            if row is None:
                if number < len(lines):
                    raise OutputError(
                        f"{path} line {number} is not a result row; it is not a file this "
                        "tool wrote, or it was damaged: write to a new file"
                    )
                break
            earlier.outcomes.append(rowfmt.Outcome.of(row))
            good += len(line)
        good_text = text[:good]
    else:
        try:
            earlier.header, records, good = rowfmt.csv_records(text)
        except ValueError as exc:
            raise OutputError(f"{path}: {exc}; write to a new file") from None
        earlier.outcomes = [rowfmt.Outcome.of_record(r) for r, _ in records]
        good_text = text[:good]
    earlier.good_bytes = len(good_text.encode("utf-8", errors="replace"))
    earlier.cut_short = earlier.good_bytes < len(data)
    return earlier


class Output:
    """Rows in, written somewhere. `finish` makes the result final; `abandon` after a stop."""

    #: Earlier rows this output already holds (a resumed file), counted in the summary.
    earlier: Earlier
    description: str

    def begin(self, answer_template: dict[str, Any]) -> None:
        """Called once the model is known (a CSV header needs its fields)."""

    def write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Everything is written: make it durable (and visible, for a part)."""

    def abandon(self) -> None:
        """Stopped early: keep what is safely written, publish nothing half done."""


class StdoutOutput(Output):
    """JSON lines on standard output, as `penguin-api predict PHOTO` always printed."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self.earlier = Earlier()
        self.description = "standard output"

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._stream.write("".join(rowfmt.jsonl_line(r) for r in rows))
            self._stream.flush()
        except BrokenPipeError:  # `penguin-api predict DIR | head`: the reader has enough
            # Nothing more can reach the reader; keep interpreter exit from trying again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
            raise OutputError("standard output was closed; stopped") from None


class FileOutput(Output):
    """A CSV or JSONL results file, resumed when it exists."""

    def __init__(self, path: Path, model_version: str) -> None:
        self.path = path
        self.description = str(path)
        try:
            self.fmt = rowfmt.format_of(str(path))
        except ValueError as exc:
            raise OutputError(str(exc)) from None
        self.earlier = read_earlier(path, self.fmt)
        others = {o.model_version for o in self.earlier.outcomes if o.model_version}
        others.discard(model_version)
        if others:
            raise OutputError(
                f"{path} holds answers of model version {', '.join(sorted(others))}, not "
                f"{model_version}; write this model's answers to a new file"
            )
        self._file: Any = None
        self._columns: list[str] = []

    def begin(self, answer_template: dict[str, Any]) -> None:
        columns = rowfmt.csv_columns(answer_template)
        header = self.earlier.header
        if self.fmt == "csv" and header is not None and header != columns:
            raise OutputError(
                f"{self.path} has the columns {','.join(header)}; this model writes "
                f"{','.join(columns)}: write to a new file"
            )
        self._columns = columns
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the whole run
            if self.earlier.cut_short:
                self._file.truncate(self.earlier.good_bytes)
            if self.fmt == "csv" and header is None:
                self._write_text(rowfmt.csv_text([], columns, header=True))
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.fmt == "csv":
            text = rowfmt.csv_text(rows, self._columns)
        else:
            text = "".join(rowfmt.jsonl_line(r) for r in rows)
        self._write_text(text)

    def _write_text(self, text: str) -> None:
        try:
            self._file.write(text.encode("utf-8"))
            self._file.flush()
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror}; what is written is kept: make room "
                "and run the same command again to finish"
            ) from None

    def finish(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
            self._close()

    def abandon(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            # A failed final flush leaves a row cut short, which the next run redoes.
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class PartOutput(Output):
    """One Cloud Run task's part, written locally and uploaded whole when the task is done.

    A retried task starts its part again and replaces the object; no other task's part is
    touched, and a half-done part is never uploaded.
    """

    def __init__(self, folder: str, index: int, count: int) -> None:
        self.url = storage.join(folder, part_name(index, count))
        self.description = self.url
        self.earlier = Earlier()
        handle, name = tempfile.mkstemp(prefix="penguin-part-", suffix=".jsonl")
        self._local = Path(name)
        self._file = os.fdopen(handle, "w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._file.write("".join(rowfmt.jsonl_line(r) for r in rows))

    def finish(self) -> None:
        self._file.close()
        try:
            storage.upload(self._local, self.url)
        finally:
            self._local.unlink(missing_ok=True)

    def abandon(self) -> None:
        self._file.close()
        self._local.unlink(missing_ok=True)
