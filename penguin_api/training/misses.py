"""Where the model fails: every photo's out-of-fold answer, and a contact sheet of the
most confident misses, written next to (never into) the shipped model.

The photos belong to their sources (../shared/data/SOURCES.md), so the sheet goes to a
reports folder that git ignores; model/README.md describes it in words.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TILE = 200
CAPTION = 34
COLUMNS = 8


def write_out_of_fold(
    out: Path, files: list[Path], y: np.ndarray, probs: np.ndarray, labels: list[str]
) -> Path:
    """One row per labelled photo: its species, the out-of-fold answer and confidence."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "out-of-fold.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["file", "species", "answer", "confidence", "p_species", "right"])
        for f, truth, p in zip(files, y, probs, strict=True):
            answer = int(p.argmax())
            writer.writerow(
                [str(f), labels[truth], labels[answer], f"{p[answer]:.4f}", f"{p[truth]:.4f}",
                 int(answer == truth)]
            )  # fmt: skip
    return path


def worst_misses(y: np.ndarray, probs: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` wrong answers given with the highest confidence."""
    wrong = np.flatnonzero(probs.argmax(1) != y)
    order = np.argsort(-probs[wrong].max(1), kind="stable")
    return [int(i) for i in wrong[order][:n]]


def contact_sheet(
    out: Path,
    files: list[Path],
    y: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    n: int = 48,
) -> Path:
    """A JPEG grid of the ``n`` most confident misses, each captioned truth -> answer."""
    from penguin_api.imaging import ImageError, decode_image

    picked = worst_misses(y, probs, n)
    rows = max(1, (len(picked) + COLUMNS - 1) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(picked):
        left, top = (k % COLUMNS) * TILE, (k // COLUMNS) * (TILE + CAPTION)
        try:
            img = decode_image(files[i].read_bytes(), max_pixels=200_000_000, min_side=TILE)
            img.thumbnail((TILE, TILE))
            sheet.paste(img, (left, top))
        except (ImageError, OSError):
            draw.text((left + 4, top + 4), "unreadable", fill="black")
        answer = int(probs[i].argmax())
        draw.text(
            (left + 2, top + TILE + 2),
            f"{labels[y[i]]} -> {labels[answer]} {probs[i, answer]:.2f}",
            fill="black",
        )
        draw.text((left + 2, top + TILE + 17), files[i].name[:32], fill="grey")
    path = out / "worst-misses.jpg"
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=85)
    return path
