"""One row per photo, as JSON (a JSONL line) or flattened (a CSV record), and back.

A row is the /predict answer plus `"file"`, or `"file"` plus an `"error"` problem object
(`type`, `title`, `detail`), the same shape as a bad file's entry in /predict/batch.
Columns follow the answer's fields, so a field the model adds shows up without a change here.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

#: Problems only the batch tool meets (the service's own types come from penguin_api.errors).
UNREADABLE = {"type": "/problems/unreadable-file", "title": "Unreadable file"}
WORKER_CRASHED = {"type": "/problems/worker-crashed", "title": "Photo crashed the decoder"}

FORMATS = ("csv", "jsonl")
_ERROR_COLUMNS = ("error_type", "error_detail")


def format_of(path: str) -> str:
    """'csv' or 'jsonl' from a file name; ValueError for anything else."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix == "json" or suffix == "ndjson":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise ValueError(f"{path}: the results file must end in .csv or .jsonl")
    return suffix


def error_row(key: str, problem: dict[str, Any], detail: str | None = None) -> dict[str, Any]:
    """The row of a photo that got no answer."""
    error = {k: v for k, v in problem.items() if k in ("type", "title", "status", "detail")}
    if detail is not None:
        error["detail"] = detail
    return {"file": key, "error": error}


@dataclass(frozen=True)
class Outcome:
    """What the summary and a resume need from a row, whatever its format."""

    file: str
    species: str | None
    is_penguin: bool
    error_type: str | None
    model_version: str | None
    uncertain: bool

    @classmethod
    def of(cls, row: dict[str, Any]) -> Outcome:
        error = row.get("error")
        model = row.get("model")
        return cls(
            file=str(row["file"]),
            species=row.get("species"),
            is_penguin=bool(row.get("is_penguin")),
            error_type=error.get("type") if isinstance(error, dict) else None,
            model_version=model.get("version") if isinstance(model, dict) else None,
            uncertain=row.get("uncertain") is True,
        )

    @classmethod
    def of_record(cls, record: dict[str, str]) -> Outcome:
        return cls(
            file=record["file"],
            species=record.get("species") or None,
            is_penguin=record.get("is_penguin") == "true",
            error_type=record.get("error_type") or None,
            model_version=record.get("model_version") or None,
            uncertain=record.get("uncertain") == "true",
        )


# --- JSONL ----------------------------------------------------------------------------------


def jsonl_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def parse_jsonl_line(line: str) -> dict[str, Any] | None:
    """The row a complete JSONL line holds, or None when it is not one of ours."""
    if not line.endswith("\n"):
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("file"), str) else None


# --- CSV ------------------------------------------------------------------------------------


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV record: nested fields spread into columns, top-k as `Species:0.98;...`."""
    flat: dict[str, Any] = {"file": row["file"]}
    for key, value in row.items():
        if key in ("file", "error"):
            continue
        if key == "top_k" and isinstance(value, list):
            flat[key] = ";".join(f"{g['species']}:{g['confidence']}" for g in value)
        elif key == "model" and isinstance(value, dict):
            flat["model_name"], flat["model_version"] = value.get("name"), value.get("version")
        elif isinstance(value, dict | list):
            flat[key] = json.dumps(value, ensure_ascii=False)
        else:
            flat[key] = value
    error = row.get("error") or {}
    flat["error_type"], flat["error_detail"] = error.get("type"), error.get("detail")
    return flat


def csv_columns(answer: dict[str, Any] | None) -> list[str]:
    """The header: the columns of a flattened answer (any answer of this model), then errors."""
    if answer is None:
        return ["file", *_ERROR_COLUMNS]
    columns = [c for c in flatten(answer) if c not in _ERROR_COLUMNS]
    return [*columns, *_ERROR_COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_text(rows: list[dict[str, Any]], columns: list[str], *, header: bool = False) -> str:
    """CSV records (and the header first, if asked) for `rows`, with `\\n` line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        flat = flatten(row)
        writer.writerow([_cell(flat.get(c)) for c in columns])
    return buf.getvalue()


def csv_records(text: str) -> tuple[list[str] | None, list[tuple[dict[str, str], int]], int]:
    """Parse CSV text into (header, [(record, end offset)], end of the last complete record).

    A record is complete when it has as many fields as the header and its line ended; a
    last one that is not (a write cut short) is left out, and the offset tells where the
    good text ends. A bad record before the last raises ValueError.
    """
    consumed = 0

    def lines():
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            yield line

    reader = csv.reader(lines())
    header: list[str] | None = None
    records: list[tuple[dict[str, str], int]] = []
    good_end = 0
    for fields in reader:
        complete = text[consumed - 1 : consumed] == "\n"
        if header is None:
            if not complete:
                break
            header, good_end = fields, consumed
            continue
        if complete and len(fields) == len(header):
            records.append((dict(zip(header, fields, strict=True)), consumed))
            good_end = consumed
            continue
        if consumed < len(text):  # damage that is not at the very end
            raise ValueError(f"record {len(records) + 2} does not have {len(header)} fields")
        break
    return header, records, good_end
