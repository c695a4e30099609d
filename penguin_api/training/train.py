"""`penguin-api train`: build model/ (ONNX + card) from every labelled photo.

Steps: embed augmented views of every photo with each frozen backbone (cached), fit
the heads on all labelled photos and measure them by repeated cross-validation
(penguin_api.training.fit), export one ONNX graph holding every backbone, quantise it
to int8 and keep that if it answers as the float graph does and is faster, score the
shipped file on the photos it learnt from, write the card and the photo list.
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

log = logging.getLogger(__name__)

DEFAULT_VIEWS = 10
#: Lite0 + Lite1 at 320 px: 0.853 cross-validated top-1 (3 repeats) at about 20 ms int8
#: on one core; Lite0 alone at 224 px 0.806, the pair at 288 px 0.850, at 352 px 0.855,
#: all three at 288 px 0.855 but 28 ms (model/README.md has every variant).
DEFAULT_BACKBONES = ("lite0", "lite1")
DEFAULT_SIZE = 320
DEFAULT_REPEATS = 3
#: Power of the inverse class frequency in the species loss (1 = fully balanced).
DEFAULT_BALANCE = 1.0


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that say what the model is made of (shared with `learning-curve`)."""
    from penguin_api.training.backbone import BACKBONES

    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data root with penguins/{train,val}/<Species>/, "
        "penguin_unspecified/, not_penguin/{train,val}/",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="embedding cache (default ~/.cache/penguin-api)"
    )
    parser.add_argument(
        "--backbones",
        type=_names(BACKBONES),
        default=DEFAULT_BACKBONES,
        help=f"comma-separated frozen backbones, side by side in one graph "
        f"(default {','.join(DEFAULT_BACKBONES)}; known: {', '.join(BACKBONES)})",
    )
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help=f"model input size (default {DEFAULT_SIZE})"
    )
    parser.add_argument(
        "--views",
        type=int,
        default=DEFAULT_VIEWS,
        help="views per training photo: centre, mirror, then random crops (at least 2)",
    )
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="average each photo with its mirror image inside the graph: twice the "
        "latency, no gain in cross-validation at 288 px (default off)",
    )
    parser.add_argument(
        "--balance", type=float, default=DEFAULT_BALANCE, help="class balancing power, 0..1"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads to use")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `penguin-api train`."""
    add_recipe_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("model"), help="output folder")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("reports/train"),
        help="folder for every photo's out-of-fold answer and a contact sheet of the worst "
        "misses (photos of others: keep it out of the repository; default reports/train)",
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="cross-validation repeats"
    )
    parser.add_argument(
        "--quantize",
        choices=["auto", "int8", "fp32"],
        default="auto",
        help="auto: int8 if it answers as fp32 does and is faster",
    )
    parser.add_argument(
        "--version", default=None, help="model version (default: build date + SHA-256 prefix)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one L2 strength (for tests and smoke runs)"
    )


def _names(known: Iterable[str]):
    """An argparse type: comma-separated names, each one of ``known``."""
    known = tuple(known)

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"unknown backbone(s) {', '.join(unknown) or '(none)'}; known: {', '.join(known)}"
            )
        return names

    return parse


def run(args: argparse.Namespace) -> int:
    """Train, export, evaluate and write ``args.out``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    torch.manual_seed(args.seed)
    # The heads are small: on shared cores one thread fits them faster than two that
    # wait on each other. The backbones run in ONNX Runtime with --threads.
    torch.set_num_threads(1)
    # numpy's BLAS sums in an order that depends on its thread count; one thread makes
    # the fitted heads, and so the shipped file, the same bits run after run.
    with threadpool_limits(limits=1):
        return _train(args, started)


def _train(args: argparse.Namespace, started: float) -> int:
    from penguin_api.training import dataset, fit
    from penguin_api.training.backbone import load_backbone

    if args.views < 2 or args.folds < 2 or args.repeats < 1:
        log.error("need --views >= 2, --folds >= 2 and --repeats >= 1")
        return 2
    data = dataset.load_training_data(args.data)
    if len(data.labels) < 2:
        log.error("need at least two species with >= %d photos", dataset.MIN_TRAIN_PHOTOS)
        return 2
    log.info(
        "%d species, %d labelled photos (train + val); gate: %d photos; excluded: %s",
        len(data.labels),
        len(data.train) + len(data.val),
        len(data.gate_train) + len(data.gate_val),
        data.excluded or "none",
    )
    emb = embed_all(args, data)
    labelled = data.train + data.val
    gate = data.gate_train + data.gate_val
    fitted = fit.fit_all(
        views=emb["labelled"][0],
        y=_labels(labelled),
        gate_views=emb["gate"][0],
        gate_kings=emb["gate"][1],
        gate_y=_penguin(gate),
        labels=data.labels,
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        balance=args.balance,
        mirror=args.mirror,
        grid=(1e-2,) if args.quick else fit.L2_GRID,
    )
    from penguin_api.training import misses
    from penguin_api.training.ship import ship

    files, y = [s.path for s in labelled], _labels(labelled)
    misses.write_out_of_fold(args.report, files, y, fitted.first_probs, data.labels)
    sheet = misses.contact_sheet(args.report, files, y, fitted.first_probs, data.labels)
    log.info("out-of-fold answers and the worst misses (%s) in %s", sheet.name, args.report)
    backbones = [load_backbone(name) for name in args.backbones]
    ship(args, data, backbones, fitted, started)
    return 0


def _labels(samples) -> np.ndarray:
    return np.array([s.label for s in samples], dtype=np.int64)


def _penguin(samples) -> np.ndarray:
    return np.array([s.is_penguin for s in samples], dtype=bool)


def embed_all(args: argparse.Namespace, data: TrainingData) -> dict[str, tuple]:
    """Per group ("labelled", "gate"): ([V, N, B*1280] embeddings, [V, N, B] king-penguin
    log-probs), the backbones side by side; one cache pass per backbone over all photos.

    Photos the service cannot decode are dropped from ``data`` (and listed in
    ``data.skipped``): a model should be judged only on what it can be sent.
    """
    from penguin_api.training import embed

    groups = ("train", "val", "gate_train", "gate_val")
    everything = sorted({s.path for g in groups for s in getattr(data, g)})
    cache_dir = args.cache or embed.default_cache_dir()
    tables = [
        embed.EmbeddingCache(cache_dir, args.threads, name, args.size).get(
            everything, range(args.views), args.seed
        )
        for name in args.backbones
    ]
    row = {p: i for i, p in enumerate(everything)}
    bad = {p for p in everything if any(np.isnan(t[0, row[p]]).any() for t in tables)}
    data.skipped = sorted(str(p) for p in bad)
    for name in groups:
        setattr(data, name, [s for s in getattr(data, name) if s.path not in bad])
    out = {}
    for group, samples in (
        ("labelled", data.train + data.val),
        ("gate", data.gate_train + data.gate_val),
    ):
        idx = [row[s.path] for s in samples]
        feats = np.concatenate([t[:, idx, :-1] for t in tables], axis=2)
        kings = np.stack([t[:, idx, -1] for t in tables], axis=2)
        out[group] = (feats, kings)
    return out
