"""Figures that say how good a model is: accuracy, per-species P/R/F1, calibration, gate.

Plain numpy, shared by `penguin-api train` (figures for the card) and
`penguin-api evaluate` (figures for anyone's own photos), so both count the same way.
"""

from __future__ import annotations

import numpy as np

#: Equal-width confidence bins for the expected calibration error.
ECE_BINS = 10


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: its range, photo count, mean confidence and accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to bin 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        mask = which == i
        n = int(mask.sum())
        rows.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": n,
                "confidence": float(confidence[mask].mean()) if n else 0.0,
                "accuracy": float(correct[mask].mean()) if n else 0.0,
            }
        )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ECE: photo-weighted mean |accuracy - confidence| over equal-width bins."""
    total = len(confidence)
    if total == 0:
        return 0.0
    return float(
        sum(
            r["count"] / total * abs(r["accuracy"] - r["confidence"])
            for r in reliability(confidence, correct)
        )
    )


#: Simulated draws behind :func:`ece_sampling_noise`; seeded, so figures are reproducible.
ECE_NOISE_DRAWS = 2000


def ece_sampling_noise(confidence: np.ndarray, draws: int = ECE_NOISE_DRAWS) -> dict[str, float]:
    """The ECE a perfectly calibrated model would show on photos with these confidences.

    Each draw counts every photo right with probability equal to its confidence. On a
    hundred photos that alone reads 0.05-0.1, so an ECE near these figures says "no
    miscalibration visible at this size", not "miscalibrated". Returns mean and 95th pct.
    """
    n = len(confidence)
    if n == 0:
        return {"mean": 0.0, "p95": 0.0}
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, ECE_BINS - 1)
    members = np.zeros((n, ECE_BINS))
    members[np.arange(n), which] = 1.0
    counts = members.sum(axis=0)
    used = counts > 0
    mean_conf = (confidence @ members)[used] / counts[used]
    rng = np.random.default_rng(0)
    ece = np.empty(draws)
    # A few MB of random draws at a time, whatever the number of photos.
    chunk = max(1, 250_000 // n)
    for start in range(0, draws, chunk):
        stop = min(draws, start + chunk)
        correct = rng.random((stop - start, n)) < confidence
        accuracy = (correct @ members)[:, used] / counts[used]
        ece[start:stop] = (np.abs(accuracy - mean_conf) * counts[used] / n).sum(axis=1)
    return {"mean": round(float(ece.mean()), 4), "p95": round(float(np.percentile(ece, 95)), 4)}


def species_metrics(probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """Top-1, per-species precision/recall/F1, ECE, NLL and the confusion matrix."""
    n_classes = len(labels)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = (pred == y).astype(np.float64)
    m = confusion(y, pred, n_classes)
    per_species = {}
    for i, name in enumerate(labels):
        support = int(m[i].sum())
        if support == 0 and m[:, i].sum() == 0:
            continue
        tp = int(m[i, i])
        precision = tp / m[:, i].sum() if m[:, i].sum() else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_species[name] = {
            "support": support,
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
        }
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, None)
    return {
        "n": len(y),
        "top1": round(float(correct.mean()), 4) if len(y) else 0.0,
        "ece": round(expected_calibration_error(conf, correct), 4),
        "ece_if_perfectly_calibrated": ece_sampling_noise(conf),
        "nll": round(float(-np.log(p_true).mean()), 4) if len(y) else 0.0,
        "mean_confidence": round(float(conf.mean()), 4) if len(y) else 0.0,
        "per_species": per_species,
        "reliability": reliability(conf, correct),
        "confusion": {"labels": labels, "matrix": m.tolist()},
    }


def gate_metrics(penguin_scores: np.ndarray, negative_scores: np.ndarray, threshold: float) -> dict:
    """Share of penguin photos that pass the gate, and of non-penguin photos that do."""
    out: dict = {"threshold": round(float(threshold), 6)}
    if len(penguin_scores):
        out["penguin_pass_rate"] = round(float((penguin_scores >= threshold).mean()), 4)
        out["penguins"] = len(penguin_scores)
    if len(negative_scores):
        out["negative_false_pass_rate"] = round(float((negative_scores >= threshold).mean()), 4)
        out["negatives"] = len(negative_scores)
    return out
