"""What to classify: photos named on the command line, folders searched, gs:// prefixes
listed; and which of them a Cloud Run task takes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from penguin_api.batch import storage

#: File name endings of the formats the service accepts (imaging.ACCEPTED_FORMATS).
PHOTO_SUFFIXES = frozenset(
    (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
     ".avif", ".heic", ".heif")
)  # fmt: skip


def is_photo_name(name: str) -> bool:
    """A name a folder search picks up: an accepted format's ending, not a hidden file."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in PHOTO_SUFFIXES


def expand(paths: list[str]) -> list[str]:
    """Every photo the paths name, in order: a folder's or prefix's photos sorted by name.

    A file named directly is taken whatever its ending (and a missing one too: its row
    says so); folders are searched recursively, skipping hidden files and folders.
    """
    keys: list[str] = []
    for raw in paths:
        if storage.is_gs(raw):
            keys += [k for k in storage.list_objects(raw) if is_photo_name(k)]
        elif Path(raw).is_dir():
            keys += _folder_photos(Path(raw))
        else:
            keys.append(raw)
    return keys


def _folder_photos(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative) or not path.is_file():
            continue
        if is_photo_name(path.name):
            found.append(path)
    return [str(p) for p in sorted(found)]


def task_of(key: str, count: int) -> int:
    """The task (0..count-1) that classifies `key`: a hash of its path, so the same photo
    always lands with the same task, whatever else is in the bucket and however often a
    task is retried."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def share(keys: list[str], index: int, count: int) -> list[str]:
    """The keys task `index` of `count` takes, in their original order."""
    if count == 1:
        return list(keys)
    return [k for k in keys if task_of(k, count) == index]
