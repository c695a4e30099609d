"""`penguin-api merge FOLDER`: join the parts a Cloud Run Job's tasks wrote into one file.

Each task of `penguin-api predict ... --out gs://bucket/results` writes
part-INDEX-of-COUNT.jsonl into the folder. Merge checks that every part of the run is
there (a missing one is named, and nothing is written), puts the rows in path order and
writes them as CSV or JSONL, with the same summary and exit status as predict.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

LABEL = "penguin-api merge"
_PART = re.compile(r"^part-(\d{5})-of-(\d{5})\.jsonl$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="FOLDER", help="gs://bucket/results or a local folder of parts"
    )
    parser.add_argument(
        "--out", metavar="FILE",
        help="results.csv or results.jsonl (default: JSON lines on standard output)",
    )  # fmt: skip
    parser.add_argument(
        "--tasks", type=int, metavar="N",
        help="the run's task count, when the folder holds parts of runs with different counts",
    )  # fmt: skip


class MergeError(Exception):
    """The parts cannot be joined; the message names what is missing or wrong."""


def run(args: argparse.Namespace) -> int:
    """Join the parts; 0 every photo answered, 1 some unreadable, 2 parts missing or bad."""
    from penguin_api.batch import rows as rowfmt
    from penguin_api.batch import storage
    from penguin_api.batch.progress import Summary

    try:
        parts = _parts(storage.list_folder(args.folder), args.folder, args.tasks)
        rows = []
        for name in parts:
            rows += _read_part(storage.read_text(storage.join(args.folder, name)), name)
        fmt = rowfmt.format_of(args.out) if args.out else "jsonl"
    except (MergeError, storage.StorageError, ValueError) as exc:
        print(f"{LABEL}: {exc}", file=sys.stderr)
        return 2
    seen: dict[str, str] = {}
    for row, part in rows:
        if row["file"] in seen:
            print(f"{LABEL}: {row['file']} is in both {seen[row['file']]} and {part}; the "
                  "parts are not from one run", file=sys.stderr)  # fmt: skip
            return 2
        seen[row["file"]] = part
    ordered = sorted((row for row, _ in rows), key=lambda r: r["file"])
    if fmt == "csv":
        template = next((r for r in ordered if "error" not in r), None)
        text = rowfmt.csv_text(ordered, rowfmt.csv_columns(template), header=True)
    else:
        text = "".join(rowfmt.jsonl_line(r) for r in ordered)
    where = args.out or "standard output"
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"{LABEL}: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    summary = Summary()
    for row in ordered:
        summary.add(rowfmt.Outcome.of(row))
    print(f"{LABEL}: {len(parts)} parts from {args.folder}", file=sys.stderr)
    for line in summary.lines(where):
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0


def _parts(names: list[str], folder: str, tasks: int | None) -> list[str]:
    """The part names of one run, in task order; MergeError names any that is missing."""
    found: dict[int, set[int]] = {}
    for name in names:
        match = _PART.match(name)
        if match:
            found.setdefault(int(match[2]), set()).add(int(match[1]))
    if not found:
        raise MergeError(f"no parts (part-NNNNN-of-NNNNN.jsonl) in {folder}")
    if tasks is None:
        if len(found) > 1:
            counts = ", ".join(str(c) for c in sorted(found))
            raise MergeError(
                f"{folder} holds parts of runs with {counts} tasks: pass --tasks N, or "
                "clear the folder before a run"
            )
        tasks = next(iter(found))
    have = found.get(tasks, set())
    missing = [f"part-{i:05d}-of-{tasks:05d}.jsonl" for i in range(tasks) if i not in have]
    if missing:
        shown = ", ".join(missing[:20]) + (
            f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise MergeError(
            f"{len(missing)} of {tasks} parts missing in {folder}: {shown} (those tasks "
            "failed or have not finished; run the job again, then merge)"
        )
    return [f"part-{i:05d}-of-{tasks:05d}.jsonl" for i in range(tasks)]


def _read_part(text: str, name: str) -> list[tuple[dict, str]]:
    """Every row of a part; MergeError if a line is not a whole row (a damaged part)."""
    from penguin_api.batch import rows as rowfmt

    out = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        row = rowfmt.parse_jsonl_line(line)
        if row is None:
            raise MergeError(f"{name} line {number} is not a result row: the part is damaged")
        out.append((row, name))
    return out
