"""`penguin-api learning-curve`: cross-validated top-1 against the number of training photos.

It answers "would more photos help, and how many?" before anyone goes looking for
them. Each cross-validation fold's training part is cut to a fraction of its photos
per species (at least two each), the species head is refitted as `penguin-api train`
fits it (same backbones, size, views, mirror averaging and class balancing, and the L2
strength from the same grid that scores best at that size), and the held-out fold is
scored as the service would see it. Embeddings come from the training cache, so a run
after `penguin-api train` takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from penguin_api.training import train
from penguin_api.training.fit import L2_GRID, fit_species, service_view, stratified_folds

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def learning_curve(
    views: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    fractions: Sequence[float],
    l2_grid: Sequence[float] = L2_GRID,
    folds: int = 5,
    seed: int = 0,
    repeats: int = 3,
    balance: float = 1.0,
    mirror: bool = False,
) -> list[dict]:
    """Out-of-fold top-1 for each fraction of each fold's training photos.

    ``views`` is ``[V, N, D]`` (view 0 is what the service sees, view 1 its mirror,
    averaged with it when ``mirror``). A fraction below 1 is
    drawn ``repeats`` times with different seeds (the same draws for every L2); each row
    reports the L2 with the best mean and keeps that L2's figure per draw.
    """
    if folds < 2 or repeats < 1:
        raise ValueError("need at least 2 folds and 1 draw per fraction")
    fold_of = stratified_folds(y, folds, seed)
    rows = []
    for fraction in fractions:
        draws = 1 if fraction >= 1 else repeats
        best: dict | None = None
        for l2 in l2_grid:
            scores, photos = [], []
            for draw in range(draws):
                rng = np.random.default_rng([seed, draw])
                correct, used = 0, 0
                for f in range(folds):
                    keep = _subsample(np.flatnonzero(fold_of != f), y, fraction, rng)
                    used += len(keep)
                    head, std = fit_species(views[:, keep], y[keep], n_classes, l2, balance)
                    test = fold_of == f
                    logits = head(std(service_view(views[:, test], mirror)))
                    correct += int((logits.argmax(1) == y[test]).sum())
                scores.append(correct / len(y))
                photos.append(used / folds)
            row = {
                "fraction": fraction,
                "train_photos": round(float(np.mean(photos))),
                "l2": l2,
                "top1": round(float(np.mean(scores)), 4),
                "top1_per_draw": [round(s, 4) for s in scores],
            }
            if best is None or row["top1"] > best["top1"]:
                best = row
        log.info("  %s", best)
        rows.append(best)
    return rows


def _subsample(
    idx: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``fraction`` of ``idx`` per class (rounded, at least two, at most all)."""
    keep = []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        n = min(len(members), max(2, round(len(members) * fraction)))
        keep.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `penguin-api learning-curve`."""
    train.add_recipe_arguments(parser)
    parser.add_argument(
        "--folds", type=_at_least(2), default=5, help="cross-validation folds (>= 2)"
    )
    parser.add_argument(
        "--fractions",
        type=_fractions,
        default=DEFAULT_FRACTIONS,
        help="comma-separated fractions of each fold's training photos (default 0.25,0.5,0.75,1)",
    )
    parser.add_argument(
        "--repeats", type=_at_least(1), default=3, help="draws per fraction below 1 (>= 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")


def _fractions(text: str) -> tuple[float, ...]:
    """``"0.25,0.5,1"`` -> (0.25, 0.5, 1.0); each must lie in (0, 1]."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError("fractions must lie in (0, 1]")
    return values


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    """Embed (or read from the cache), refit the head at each size, print the curve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from penguin_api.training import dataset

    torch.set_num_threads(1)  # small heads: one thread is faster on shared cores
    data = dataset.load_training_data(args.data)
    if len(data.labels) < 2:
        log.error("need at least two species with >= %d train photos", dataset.MIN_TRAIN_PHOTOS)
        return 2
    views = train.embed_all(args, data)["labelled"][0]
    y = np.array([s.label for s in data.train + data.val], dtype=np.int64)
    rows = learning_curve(
        views,
        y,
        len(data.labels),
        fractions=args.fractions,
        folds=args.folds,
        seed=args.seed,
        repeats=args.repeats,
        balance=args.balance,
        mirror=args.mirror,
    )
    print(f"{len(y)} photos, {args.folds}-fold cross-validation")
    print("fraction  train photos per fold  best L2  top-1")
    for row in rows:
        print(
            f"{row['fraction']:8.2f}  {row['train_photos']:21d}  {row['l2']:7g}  {row['top1']:.3f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"photos": len(y), "folds": args.folds, "rows": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0
