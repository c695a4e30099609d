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
        help="folder with one sub-folder of photos per species (names as in the model's labels)",
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


def score_files(model_path: Path, files: list[Path], threads: int = 2):
    """(species_probs [N,C], penguin_score [N], files scored); undecodable files are skipped."""
    import onnxruntime as ort

    from penguin_api.imaging import ImageError, prepare

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    probs, scores, kept = [], [], []
    batch: list[np.ndarray] = []
    for i, path in enumerate(files):
        try:
            batch.append(prepare(path.read_bytes(), max_pixels=MAX_PIXELS))
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
    """All figures for the photos under ``data`` (and ``negatives``) as one dict."""
    from penguin_api.training.dataset import list_images_recursive, species_tree
    from penguin_api.training.metrics import gate_metrics, species_metrics

    card, model_path = load_card(model_dir)
    labels: list[str] = card["labels"]
    threshold = float(card["thresholds"]["penguin_score"])
    tree = species_tree(data)
    covered = [s for s in tree if s in labels]
    uncovered = {s: len(p) for s, p in tree.items() if s not in labels}
    files = [p for s in covered for p in tree[s]]
    truth = [labels.index(s) for s in covered for _ in tree[s]]
    other_penguins = [p for s in uncovered for p in tree[s]]
    probs, scores, kept = score_files(model_path, files + other_penguins, threads)
    kept_set = set(kept)
    y = np.array([t for p, t in zip(files, truth, strict=True) if p in kept_set], dtype=np.int64)
    n_cov = len(y)
    species = species_metrics(probs[:n_cov], y, labels)
    passed = scores[:n_cov] >= threshold
    species["top1_with_gate"] = round(
        float(((probs[:n_cov].argmax(1) == y) & passed).mean()) if n_cov else 0.0, 4
    )
    neg_scores = np.zeros(0, np.float32)
    neg_files: list[Path] = []
    if negatives is not None:
        neg_files = list_images_recursive(negatives)
        if not neg_files:
            raise FileNotFoundError(f"no photos under {negatives}")
        _, neg_scores, _ = score_files(model_path, neg_files, threads)
    return {
        "model": {
            "name": card["name"],
            "version": card["version"],
            "sha256": card["sha256"],
            "quantization": card.get("quantization"),
        },
        "data": str(data),
        "negatives": str(negatives) if negatives else None,
        "species": species,
        "gate": gate_metrics(scores, neg_scores, threshold),
        "species_not_covered": uncovered,
        "skipped_files": len(files) + len(other_penguins) - len(kept),
        "predictions": [
            {
                "file": str(p),
                "predicted": labels[int(i)],
                "confidence": round(float(c), 4),
                "penguin_score": round(float(s), 4),
            }
            for p, i, c, s in zip(kept, probs.argmax(1), probs.max(1), scores, strict=True)
        ],
    }


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
