"""The photos a model's figures were measured on, recorded by content hash.

A card's figures name their exact photos (SHA-256 and label) in a CSV beside the
model, so anyone can re-score those photos later however the photo folders grow,
split or move: `penguin-api evaluate --photos model/evaluation-photos.csv --data DIR`.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from penguin_api.training.dataset import list_images_recursive

PHOTOS_FILE = "evaluation-photos.csv"
#: Labels of photos that count for the penguin gate only.
PENGUIN = "_penguin"  # a penguin of a species the model does not cover, or of unknown species
NOT_PENGUIN = "_not_penguin"
_FIELDS = ("sha256", "label", "path")


@dataclass(frozen=True)
class RecordedPhoto:
    """One line of the list: content hash, label, and where the photo was when recorded."""

    sha256: str
    label: str
    path: str


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_photo_list(entries: Iterable[tuple[Path, str]], out: Path, root: Path) -> str:
    """Write (photo, label) pairs as CSV, paths relative to ``root``; returns the file's SHA-256."""
    rows = sorted(
        (file_sha256(path), label, path.relative_to(root).as_posix()) for path, label in entries
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_FIELDS)
        writer.writerows(rows)
    return file_sha256(out)


def read_photo_list(path: Path) -> list[RecordedPhoto]:
    """The recorded photos, in file order."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != _FIELDS:
            raise ValueError(f"{path} is not a photo list (columns {', '.join(_FIELDS)})")
        return [RecordedPhoto(row["sha256"], row["label"], row["path"]) for row in reader]


def resolve(recorded: list[RecordedPhoto], root: Path) -> list[tuple[Path, str]]:
    """Find each recorded photo under ``root`` by its content; (path, label) in list order.

    Raises FileNotFoundError naming the missing photos: figures cannot be checked on a
    subset, so a partial match is an error, not a smaller evaluation.
    """
    by_hash: dict[str, Path] = {}
    for path in list_images_recursive(root):
        by_hash.setdefault(file_sha256(path), path)
    missing = [r for r in recorded if r.sha256 not in by_hash]
    if missing:
        shown = ", ".join(r.path for r in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of {len(recorded)} recorded photos are not under {root} "
            f"(first: {shown})"
        )
    return [(by_hash[r.sha256], r.label) for r in recorded]
