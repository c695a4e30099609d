"""`penguin-api evaluate`: score the shipped model on any folder-per-species tree.

Photos go through ``imaging.prepare`` and the ONNX file through ONNX Runtime, the
same path as the service, so these figures are the service's figures. Writes
metrics.json, confusion.png and reliability.png to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Evaluation photos are the user's own; this only guards against absurd files.
MAX_PIXELS = 200_000_000
BATCH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `penguin-api evaluate`."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with one sub-folder of photos per species (names as in the model's "
        "labels); with --photos, the folder to find the listed photos in",
    )
    parser.add_argument(
        "--photos",
        type=Path,
        default=None,
        help="a photo list (sha256,label,path CSV, as model/evaluation-photos.csv): score "
        "exactly those photos, found under --data by content",
    )
    parser.add_argument(
        "--negatives",
        type=Path,
        default=None,
        help="folder of non-penguin photos (searched recursively): the gate's false-pass rate",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("model"),
        help="folder with penguin-classifier.onnx and model-card.json",
    )
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print the headline figures."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.photos is not None:
            report = evaluate_recorded(args.model_dir, args.photos, args.data, args.threads)
        else:
            report = evaluate(args.model_dir, args.data, args.negatives, threads=args.threads)
    except (FileNotFoundError, ValueError) as exc:
        print(f"penguin-api evaluate: {exc}", file=sys.stderr)
        return 2
    write_report(report, args.out)
    s, g = report["species"], report["gate"]
    print(
        f"top-1 {s['top1']:.4f} on {s['n']} photos, ECE {s['ece']:.4f} "
        f"(a perfectly calibrated model would read "
        f"{s['ece_if_perfectly_calibrated']['mean']:.4f} on these photos); "
        f"gate pass {g.get('penguin_pass_rate', float('nan')):.4f}, "
        f"false pass {g.get('negative_false_pass_rate', float('nan')):.4f}; "
        f"report in {args.out}"
    )
    return 0


def load_card(model_dir: Path) -> tuple[dict, Path]:
    """The model card and the ONNX path it names, with the file's checksum verified."""
    card_path = model_dir / "model-card.json"
    if not card_path.is_file():
        raise FileNotFoundError(f"no model card at {card_path}")
    card = json.loads(card_path.read_text())
    model_path = model_dir / card["file"]
    if not model_path.is_file():
        raise FileNotFoundError(f"the card names {model_path}, which does not exist")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if digest != card["sha256"]:
        raise ValueError(f"{model_path} has SHA-256 {digest}, the card says {card['sha256']}")
    return card, model_path


def score_files(model_path: Path, files: list[Path], threads: int = 2, size: int = 224):
    """(species_probs [N,C], penguin_score [N], files scored) with ``size`` px inputs;
    undecodable files are skipped."""
    import onnxruntime as ort

    from penguin_api.imaging import ImageError, prepare

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    probs, scores, kept = [], [], []
    batch: list[np.ndarray] = []
    for i, path in enumerate(files):
        try:
            batch.append(prepare(path.read_bytes(), max_pixels=MAX_PIXELS, size=size))
            kept.append(path)
        except ImageError as exc:
            log.warning("skipped %s: %s", path, exc)
        if batch and (len(batch) == BATCH or i == len(files) - 1):
            p, s = session.run(["species_probs", "penguin_score"], {"image": np.stack(batch)})
            probs.append(p)
            scores.append(s)
            batch = []
    n_out = session.get_outputs()[0].shape[1]
    if not probs:
        return np.zeros((0, n_out), np.float32), np.zeros(0, np.float32), []
    return np.concatenate(probs), np.concatenate(scores), kept


def evaluate(model_dir: Path, data: Path, negatives: Path | None = None, threads: int = 2) -> dict:
    """All figures for a folder-per-species tree ``data`` (and ``negatives``) as one dict."""
    from penguin_api.training.dataset import list_images_recursive, species_tree

    tree = species_tree(data)
    photos = [(p, species) for species, files in tree.items() for p in files]
    neg_files: list[Path] = []
    if negatives is not None:
        neg_files = list_images_recursive(negatives)
        if not neg_files:
            raise FileNotFoundError(f"no photos under {negatives}")
    report = evaluate_photos(model_dir, photos, neg_files, threads)
    report.update(data=str(data), negatives=str(negatives) if negatives else None)
    return report


def evaluate_recorded(model_dir: Path, photo_list: Path, root: Path, threads: int = 2) -> dict:
    """All figures for the photos a list records (found under ``root`` by content hash)."""
    from penguin_api.training import photolist

    found = photolist.resolve(photolist.read_photo_list(photo_list), root)
    photos = [(p, label) for p, label in found if label != photolist.NOT_PENGUIN]
    negatives = [p for p, label in found if label == photolist.NOT_PENGUIN]
    report = evaluate_photos(model_dir, photos, negatives, threads)
    report.update(data=str(root), photos=str(photo_list))
    return report


@dataclass
class Scored:
    """A model's outputs on labelled photos: covered species first, then other penguins."""

    labels: list[str]
    files: list[Path]
    y: np.ndarray  # species index of the first len(y) files (the covered ones)
    probs: np.ndarray
    scores: np.ndarray
    uncovered: dict[str, int]
    negative_files: list[Path]
    negative_scores: np.ndarray
    skipped: int


def score_photos(
    model_path: Path,
    labels: list[str],
    size: int,
    photos: list[tuple[Path, str]],
    negatives: list[Path],
    threads: int = 2,
) -> Scored:
    """Run the model on penguin ``photos`` labelled by species (any label the model does
    not cover counts for the gate only) and on non-penguin ``negatives``."""
    files = [p for p, species in photos if species in labels]
    truth = [labels.index(species) for _, species in photos if species in labels]
    uncovered: dict[str, int] = {}
    for _, species in photos:
        if species not in labels:
            uncovered[species] = uncovered.get(species, 0) + 1
    other_penguins = [p for p, species in photos if species not in labels]
    probs, scores, kept = score_files(model_path, files + other_penguins, threads, size)
    kept_set = set(kept)
    y = np.array([t for p, t in zip(files, truth, strict=True) if p in kept_set], dtype=np.int64)
    neg_scores, neg_kept = np.zeros(0, np.float32), []
    if negatives:
        _, neg_scores, neg_kept = score_files(model_path, negatives, threads, size)
    return Scored(
        labels=labels,
        files=kept,
        y=y,
        probs=probs,
        scores=scores,
        uncovered=uncovered,
        negative_files=neg_kept,
        negative_scores=neg_scores,
        skipped=len(files) + len(other_penguins) + len(negatives) - len(kept) - len(neg_kept),
    )


def figures(scored: Scored, penguin_threshold: float) -> dict:
    """Species and gate figures of :func:`score_photos`' outputs, and every answer."""
    from penguin_api.training.metrics import gate_metrics, species_metrics

    n_cov, probs, scores, labels = len(scored.y), scored.probs, scored.scores, scored.labels
    species = species_metrics(probs[:n_cov], scored.y, labels)
    passed = scores[:n_cov] >= penguin_threshold
    species["top1_with_gate"] = round(
        float(((probs[:n_cov].argmax(1) == scored.y) & passed).mean()) if n_cov else 0.0, 4
    )
    return {
        "species": species,
        "gate": gate_metrics(scores, scored.negative_scores, penguin_threshold),
        "species_not_covered": scored.uncovered,
        "skipped_files": scored.skipped,
        "predictions": [
            {
                "file": str(p),
                "predicted": labels[int(i)],
                "confidence": round(float(c), 4),
                "penguin_score": round(float(s), 4),
            }
            for p, i, c, s in zip(scored.files, probs.argmax(1), probs.max(1), scores, strict=True)
        ],
        "negatives": [
            {"file": str(p), "penguin_score": round(float(s), 4)}
            for p, s in zip(scored.negative_files, scored.negative_scores, strict=True)
        ],
    }


def evaluate_photos(
    model_dir: Path,
    photos: list[tuple[Path, str]],
    negatives: list[Path],
    threads: int = 2,
) -> dict:
    """Figures for penguin ``photos`` labelled by species (any label the model does not
    cover counts for the gate only) and non-penguin ``negatives``."""
    card, model_path = load_card(model_dir)
    size = int(card["input"]["size"])
    scored = score_photos(model_path, card["labels"], size, photos, negatives, threads)
    report = figures(scored, float(card["thresholds"]["penguin_score"]))
    report["model"] = {
        "name": card["name"],
        "version": card["version"],
        "sha256": card["sha256"],
        "quantization": card.get("quantization"),
    }
    return report


def write_report(report: dict, out: Path) -> None:
    """metrics.json plus the two figures."""
    from penguin_api.training.plots import plot_confusion, plot_reliability

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    s = report["species"]
    plot_confusion(
        np.array(s["confusion"]["matrix"]), s["confusion"]["labels"], out / "confusion.png"
    )
    noise = s.get("ece_if_perfectly_calibrated", {}).get("mean")
    plot_reliability(s["reliability"], s["ece"], out / "reliability.png", noise)
