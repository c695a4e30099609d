"""Fit the heads on cached embeddings: species head (L2 strength by cross-validation),
penguin gate and temperature. (The gate threshold is picked later, on the exported file.)

What is tuned on what:
- species-head L2 strength: stratified k-fold cross-validation over train + val photos
  pooled (all views of a photo stay in one fold);
- species head weights: train photos only (all augmented views);
- gate head: penguin photos of train (+ unspecified, excluded species) against
  not_penguin/train; its mix with the ImageNet king-penguin score from out-of-fold
  train predictions;
- temperature: out-of-fold species logits of the chosen L2 over train + val (about
  six times as many photos as val alone, so a steadier fit); its cross-validated
  ECE fits the temperature on the other folds' logits and scores each fold.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from penguin_api.training.heads import (
    Linear,
    fit_binary,
    fit_softmax,
    fit_temperature,
    softmax,
)
from penguin_api.training.metrics import ece_sampling_noise, expected_calibration_error

log = logging.getLogger(__name__)

L2_GRID = (1e-3, 1e-2, 1e-1)
#: Class-balanced loss won in cross-validation (rare species gain, common ones barely
#: lose), so it is not searched again on every run.
BALANCED_GRID = (True,)
GATE_L2 = 1e-3


@dataclass
class Fitted:
    """Everything the graph needs, plus how it was chosen."""

    species: Linear
    gate: Linear
    gate_mix: tuple[float, float, float]
    temperature: float
    chosen: dict = field(default_factory=dict)
    cv: list[dict] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row, each class dealt round-robin over the folds after a shuffle."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


def stack_views(views: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, N, D] views and [N] labels -> [V*N, D] rows and [V*N] labels."""
    v, n, d = views.shape
    return views.reshape(v * n, d), np.tile(y, v)


def cross_validate(
    views: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    k: int,
    seed: int,
    grid: list[tuple[float, bool]] | None = None,
) -> tuple[list[dict], list[np.ndarray], np.ndarray]:
    """Out-of-fold top-1 and NLL (on each photo's centre view) for each (l2, balanced).

    Also returns the out-of-fold logits per grid row and the fold of each photo.
    """
    grid = grid or list(itertools.product(L2_GRID, BALANCED_GRID))
    folds = stratified_folds(y, k, seed)
    results, oof_all = [], []
    for l2, balanced in grid:
        correct, nll = 0, 0.0
        oof = np.empty((len(y), n_classes))
        for f in range(k):
            tr, te = folds != f, folds == f
            x, yy = stack_views(views[:, tr], y[tr])
            logits = fit_softmax(x, yy, n_classes, l2, balanced)(views[0, te])
            oof[te] = logits
            z = logits - logits.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
            correct += int((logits.argmax(1) == y[te]).sum())
            nll += float(-logp[np.arange(te.sum()), y[te]].sum())
        row = {
            "l2": l2,
            "balanced": balanced,
            "top1": round(correct / len(y), 4),
            "nll": round(nll / len(y), 4),
        }
        log.info("  cv %s", row)
        results.append(row)
        oof_all.append(oof)
    return results, oof_all, folds


def cross_validated_probs(logits: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold probabilities, each fold scaled by a temperature fitted on the others."""
    probs = np.empty_like(logits, dtype=np.float64)
    for f in np.unique(folds):
        te = folds == f
        probs[te] = softmax(logits[te] / fit_temperature(logits[~te], y[~te]))
    return probs


def cross_validated_ece(logits: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """ECE of :func:`cross_validated_probs`."""
    probs = cross_validated_probs(logits, y, folds)
    return expected_calibration_error(probs.max(1), probs.argmax(1) == y)


def fit_gate(
    views: np.ndarray, king: np.ndarray, is_penguin: np.ndarray, k: int, seed: int
) -> tuple[Linear, tuple[float, float, float]]:
    """Penguin-vs-not head on embeddings, and the (a, b, c) mixing it with the king score."""
    y = is_penguin.astype(np.int64)
    x, yy = stack_views(views, y)
    gate = fit_binary(x, yy, GATE_L2)
    # Mixing weights from out-of-fold gate logits, so they are not fooled by overfit.
    folds = stratified_folds(y, k, seed)
    oof = np.empty(len(y))
    for f in range(k):
        tr, te = folds != f, folds == f
        xf, yf = stack_views(views[:, tr], y[tr])
        oof[te] = fit_binary(xf, yf, GATE_L2)(views[0, te])[:, 0]
    mix = fit_binary(np.stack([oof, king], axis=1), y, l2=1e-4)
    a, b = (float(w) for w in mix.weight[0])
    return gate, (a, b, float(mix.bias[0]))


def fit_all(
    *,
    train: np.ndarray,
    y_train: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    gate_train: np.ndarray,
    gate_y: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int,
    grid: list[tuple[float, bool]] | None = None,
) -> Fitted:
    """The whole recipe in this module's docstring.

    Each array is ``[views, photos, 1281]``: the embedding, then the ImageNet
    king-penguin log-probability; view 0 is what the service sees.
    """
    emb = slice(0, -1)
    pooled = np.concatenate([train[:, :, emb], val[:, :, emb]], axis=1)
    y_pooled = np.concatenate([y_train, y_val])
    log.info("cross-validating the species head on %d photos", len(y_pooled))
    cv, oof, fold_of = cross_validate(pooled, y_pooled, n_classes, folds, seed, grid)
    best_i = max(range(len(cv)), key=lambda i: (cv[i]["top1"], -cv[i]["nll"]))
    best = cv[best_i]
    x, yy = stack_views(train[:, :, emb], y_train)
    species = fit_softmax(x, yy, n_classes, best["l2"], best["balanced"])
    temperature = fit_temperature(oof[best_i], y_pooled)
    calibration = {
        "temperature_fitted_on": f"out-of-fold logits of {len(y_pooled)} train+val photos",
        "temperature_val_only": round(fit_temperature(species(val[0, :, emb]), y_val), 4),
        "cross_validated_ece": round(cross_validated_ece(oof[best_i], y_pooled, fold_of), 4),
        "cross_validated_ece_if_perfectly_calibrated": ece_sampling_noise(
            cross_validated_probs(oof[best_i], y_pooled, fold_of).max(1)
        ),
    }
    log.info("chosen %s, temperature %.3f, %s", best, temperature, calibration)
    gate, mix = fit_gate(gate_train[:, :, emb], gate_train[0, :, -1], gate_y, folds, seed)
    return Fitted(
        species,
        gate,
        mix,
        temperature,
        chosen={"l2": best["l2"], "balanced": best["balanced"]},
        cv=cv,
        calibration=calibration,
    )
