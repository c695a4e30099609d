"""Find the labelled photos: folder-per-species trees, gate positives and negatives.

Layout expected under ``--data`` (see ../shared/data/SOURCES.md)::

    penguins/{train,val}/<Species>/*.jpg
    penguin_unspecified/*.jpg           penguins of unknown species (gate positives only)
    not_penguin/{train,val}/*.jpg       anything else (gate negatives)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
#: Fewer training photos than this and a species is left out of the model.
MIN_TRAIN_PHOTOS = 6


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (any depth below is ignored), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_images_recursive(folder: Path) -> list[Path]:
    """Every image file below ``folder``, sorted by path."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def species_tree(root: Path) -> dict[str, list[Path]]:
    """``root/<Species>/*`` -> {species: photos}; species without photos are dropped."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    tree = {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir()}
    return {name: photos for name, photos in tree.items() if photos}


@dataclass(frozen=True)
class Sample:
    """One photo with its class index (-1: not a covered species) and gate target."""

    path: Path
    label: int
    is_penguin: bool


@dataclass
class TrainingData:
    """Everything the training run reads, split and labelled."""

    labels: list[str]
    excluded: dict[str, int]
    train: list[Sample]
    val: list[Sample]
    gate_train: list[Sample]
    gate_val: list[Sample]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Short hash of the file list, so a changed data set is visible in the card."""
        h = hashlib.sha256()
        for group in (self.train, self.val, self.gate_train, self.gate_val):
            for s in group:
                h.update(f"{s.path.name}|{s.label}|{s.is_penguin}\n".encode())
        return h.hexdigest()[:16]


def load_training_data(data: Path, min_train: int = MIN_TRAIN_PHOTOS) -> TrainingData:
    """Read the data tree; species with fewer than ``min_train`` train photos are excluded."""
    train_tree = species_tree(data / "penguins" / "train")
    val_dir = data / "penguins" / "val"
    val_tree = species_tree(val_dir) if val_dir.is_dir() else {}
    labels = sorted(name for name, photos in train_tree.items() if len(photos) >= min_train)
    excluded = {name: len(photos) for name, photos in train_tree.items() if len(photos) < min_train}
    index = {name: i for i, name in enumerate(labels)}
    train = [Sample(p, index[s], True) for s in labels for p in train_tree[s]]
    val = [Sample(p, index[s], True) for s in labels for p in val_tree.get(s, [])]
    # Photos of excluded species are still penguins: the gate learns from them.
    extra_pos = [Sample(p, -1, True) for s in excluded for p in train_tree[s]]
    unspecified = [Sample(p, -1, True) for p in list_images(data / "penguin_unspecified")]
    neg_train = [Sample(p, -1, False) for p in list_images(data / "not_penguin" / "train")]
    neg_val = [Sample(p, -1, False) for p in list_images(data / "not_penguin" / "val")]
    extra_val = [Sample(p, -1, True) for s, ps in val_tree.items() if s not in index for p in ps]
    counts = {
        s: {"train": len(train_tree.get(s, [])), "val": len(val_tree.get(s, []))}
        for s in sorted(set(train_tree) | set(val_tree))
    }
    counts["_penguin_unspecified"] = {"train": len(unspecified), "val": 0}
    counts["_not_penguin"] = {"train": len(neg_train), "val": len(neg_val)}
    return TrainingData(
        labels=labels,
        excluded=excluded,
        train=train,
        val=val,
        gate_train=train + extra_pos + unspecified + neg_train,
        gate_val=val + extra_val + neg_val,
        counts=counts,
    )
