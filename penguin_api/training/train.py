"""`penguin-api train`: build model/ (ONNX + card) from the labelled photos.

Steps: embed augmented views with the frozen backbone (cached), fit the heads
(penguin_api.training.fit), export one ONNX graph, quantise it to int8 and keep
that if val top-1 drops by at most one point and it is faster than fp32, evaluate
the shipped file through the service's own path, write the card.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from penguin_api.training.dataset import TrainingData
    from penguin_api.training.embed import EmbeddingCache

log = logging.getLogger(__name__)

DEFAULT_VIEWS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `penguin-api train`."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data root with penguins/{train,val}/<Species>/, "
        "penguin_unspecified/, not_penguin/{train,val}/",
    )
    parser.add_argument("--out", type=Path, default=Path("model"), help="output folder")
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache (default ~/.cache/penguin-api)"
    )
    parser.add_argument(
        "--views",
        type=int,
        default=DEFAULT_VIEWS,
        help="views per training photo: centre, mirror, then random crops",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads to use")
    parser.add_argument(
        "--quantize",
        choices=["auto", "int8", "fp32"],
        default="auto",
        help="auto: int8 if it costs at most one point of val top-1",
    )
    parser.add_argument(
        "--version", default=None, help="model version (default: build date + SHA-256 prefix)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small hyper-parameter grid (for tests and smoke runs)"
    )


def run(args: argparse.Namespace) -> int:
    """Train, export, evaluate and write ``args.out``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from penguin_api.training import dataset, embed, fit
    from penguin_api.training.backbone import load_backbone

    started = time.monotonic()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = dataset.load_training_data(args.data)
    if len(data.labels) < 2 or not data.val:
        log.error("need at least two species with >= 6 train photos and a val split")
        return 2
    log.info(
        "%d species, %d train / %d val photos; excluded: %s",
        len(data.labels),
        len(data.train),
        len(data.val),
        data.excluded or "none",
    )
    cache = embed.EmbeddingCache(args.cache or embed.default_cache_dir(), args.threads)
    view_ids = range(args.views)
    emb = embed_all(cache, data, view_ids, args.seed)
    backbone = load_backbone()
    grid = [(1e-3, True)] if args.quick else None
    fitted = fit.fit_all(
        train=emb["train"],
        y_train=_labels(data.train),
        val=emb["val"],
        y_val=_labels(data.val),
        gate_train=emb["gate_train"],
        gate_y=_penguin(data.gate_train),
        n_classes=len(data.labels),
        folds=args.folds,
        seed=args.seed,
        grid=grid,
    )
    from penguin_api.training.ship import ship

    ship(args, data, backbone, fitted, started)
    return 0


def _labels(samples) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.int64)


def _penguin(samples) -> np.ndarray:
    return np.array([s.is_penguin for s in samples], dtype=bool)


def embed_all(
    cache: EmbeddingCache, data: TrainingData, view_ids: Iterable[int], seed: int
) -> dict[str, np.ndarray]:
    """[V, N, 1281] embeddings (+ king score) per group; one cache pass over all photos.

    Photos the service cannot decode are dropped from ``data`` (and listed in
    ``data.skipped``): a model should be judged only on what it can be sent.
    """
    groups = ("train", "val", "gate_train", "gate_val")
    everything = sorted({s.path for g in groups for s in getattr(data, g)})
    table = cache.get(everything, view_ids, seed)
    row = {p: i for i, p in enumerate(everything)}
    bad = {p for p in everything if np.isnan(table[0, row[p]]).any()}
    data.skipped = sorted(str(p) for p in bad)
    out = {}
    for name in groups:
        kept = [s for s in getattr(data, name) if s.path not in bad]
        setattr(data, name, kept)
        out[name] = table[:, [row[s.path] for s in kept]]
    return out
