"""Fit the heads on cached embeddings and measure them out of fold.

Every labelled photo trains the shipped heads; the figures come from repeated
stratified cross-validation over the same photos (all views of a photo stay in its
fold), so each photo is judged by heads that never saw it:

- species head: standardised embeddings of all backbones side by side, multinomial
  logistic regression with (partly) class-balanced loss; its L2 strength is chosen
  by cross-validated top-1 on the first repeat;
- temperature: fitted on the out-of-fold logits of all repeats; the out-of-fold
  probabilities the card reports use, for each fold, a temperature fitted on the
  other folds only;
- confident threshold: the lowest confidence at which out-of-fold answers are right at
  least ``CONFIDENT_ACCURACY`` (plus a margin) of the time; its coverage and accuracy
  are reported with each fold's threshold chosen on the other folds;
- penguin gate: logistic regression on the same embeddings (every penguin photo
  against every non-penguin photo), mixed with each backbone's ImageNet king-penguin
  log-probability by a small logistic regression on out-of-fold gate logits; its
  threshold is placed on the out-of-fold scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from penguin_api.training.heads import (
    Linear,
    fit_binary,
    fit_softmax,
    fit_temperature,
    pick_threshold,
    sigmoid,
    softmax,
)
from penguin_api.training.metrics import (
    ece_sampling_noise,
    expected_calibration_error,
    species_metrics,
)

log = logging.getLogger(__name__)

#: L2 strengths tried for the species head (on standardised embeddings; at 0.1 and
#: above cross-validated top-1 fell by a point or more).
L2_GRID = (1e-3, 3e-3, 1e-2)
#: For the gate, 0.03 let 1.1 % of non-penguins through out of fold against 1.7 % at
#: 0.001, for the same share of penguins passed (Lite0 + Lite1 at 320 px).
GATE_L2 = 3e-2
#: Answers at or above the confident threshold must be right this often (out of fold).
CONFIDENT_ACCURACY = 0.95
#: The threshold is chosen where the pooled out-of-fold answers are right this much more
#: often: one chosen on the very answers it is judged on reads optimistic (aimed at 0.95
#: on four folds, it delivered 0.948 on the fifth).
CONFIDENT_MARGIN = 0.01


@dataclass(frozen=True)
class Standardiser:
    """Per-feature mean and spread of the training rows; folded into a head for export."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        return cls(x.mean(axis=0), x.std(axis=0) + 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def fold_into(self, head: Linear) -> Linear:
        """The same head taking raw embeddings: ``head(std(x)) == folded(x)``."""
        weight = head.weight / self.std
        return Linear(weight, head.bias - weight @ self.mean)


@dataclass
class Fitted:
    """Everything the graph needs, how it was chosen, and the out-of-fold figures."""

    species: Linear
    gate: Linear
    gate_mix: tuple[float, ...]
    temperature: float
    thresholds: dict[str, float]
    chosen: dict = field(default_factory=dict)
    cv: list[dict] = field(default_factory=list)
    out_of_fold: dict = field(default_factory=dict)
    #: Out-of-fold calibrated probabilities of the first repeat, per labelled photo.
    first_probs: np.ndarray | None = None


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


def service_view(views: np.ndarray, mirror: bool) -> np.ndarray:
    """What the exported graph embeds: view 0, or the mean of view 0 and its mirror."""
    return (views[0] + views[1]) / 2 if mirror else views[0]


def fit_species(
    views: np.ndarray, y: np.ndarray, n_classes: int, l2: float, balance: float
) -> tuple[Linear, Standardiser]:
    """Species head on all views of the given photos, and the standardiser it expects."""
    x, yy = stack_views(views, y)
    std = Standardiser.fit(x)
    return fit_softmax(std(x), yy, n_classes, l2, balance), std


def out_of_fold_logits(
    views: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: np.ndarray,
    *,
    l2: float,
    balance: float,
    mirror: bool,
) -> np.ndarray:
    """[N, C] species logits, each photo's from a head fitted on the other folds."""
    out = np.empty((len(y), n_classes))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        head, std = fit_species(views[:, tr], y[tr], n_classes, l2, balance)
        out[te] = head(std(service_view(views[:, te], mirror)))
    return out


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


def confident_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float = CONFIDENT_ACCURACY
) -> float:
    """The lowest confidence t such that answers at or above t are right >= ``target``.

    Scanning from the most confident answer down, t is the confidence of the last answer
    at which the running accuracy still meets the target; 1.0 when none does.
    """
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    meets = np.flatnonzero(running >= target)
    if not len(meets):
        return 1.0
    # Ties: a threshold between two equal confidences cannot separate them.
    return float(confidence[order][meets[-1]])


def coverage_at(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """Share of photos answered with confidence, and accuracy above and below ``threshold``."""
    conf, correct = probs.max(1), probs.argmax(1) == y
    sure = conf >= threshold
    return {
        "coverage": float(sure.mean()),
        "accuracy_confident": float(correct[sure].mean()) if sure.any() else float("nan"),
        "accuracy_not_sure": float(correct[~sure].mean()) if (~sure).any() else float("nan"),
    }


def cross_validated_coverage(probs: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict:
    """:func:`coverage_at` with each fold's threshold chosen on the other folds' answers."""
    thresholds = np.empty(len(y))
    for f in np.unique(folds):
        te = folds == f
        conf, correct = probs[~te].max(1), probs[~te].argmax(1) == y[~te]
        thresholds[te] = confident_threshold(conf, correct, CONFIDENT_ACCURACY + CONFIDENT_MARGIN)
    conf, correct = probs.max(1), probs.argmax(1) == y
    sure = conf >= thresholds
    return {
        "coverage": float(sure.mean()),
        "accuracy_confident": float(correct[sure].mean()) if sure.any() else float("nan"),
        "accuracy_not_sure": float(correct[~sure].mean()) if (~sure).any() else float("nan"),
    }


def choose_l2(
    views: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: np.ndarray,
    *,
    grid: tuple[float, ...],
    balance: float,
    mirror: bool,
) -> tuple[float, list[dict], np.ndarray]:
    """The L2 strength with the best out-of-fold top-1 (then NLL); the table; its logits."""
    rows, logits_by_l2 = [], []
    for l2 in grid:
        logits = out_of_fold_logits(
            views, y, n_classes, folds, l2=l2, balance=balance, mirror=mirror
        )
        z = logits - logits.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        row = {
            "l2": l2,
            "balance": balance,
            "top1": round(float((logits.argmax(1) == y).mean()), 4),
            "nll": round(float(-logp[np.arange(len(y)), y].mean()), 4),
        }
        log.info("  cv %s", row)
        rows.append(row)
        logits_by_l2.append(logits)
    best = max(range(len(rows)), key=lambda i: (rows[i]["top1"], -rows[i]["nll"]))
    return grid[best], rows, logits_by_l2[best]


def fit_gate(
    views: np.ndarray,
    kings: np.ndarray,
    is_penguin: np.ndarray,
    k: int,
    seed: int,
    mirror: bool,
) -> tuple[Linear, tuple[float, ...], np.ndarray]:
    """Penguin-vs-not head, its mix with the backbones' king-penguin log-probs, and the
    out-of-fold mixed gate logits of every photo.

    ``views`` [V, N, D] embeddings, ``kings`` [V, N, B] king-penguin log-probs.
    """
    y = is_penguin.astype(np.int64)
    folds = stratified_folds(y, k, seed)
    oof = np.empty(len(y))
    for f in range(k):
        tr, te = folds != f, folds == f
        x, yy = stack_views(views[:, tr], y[tr])
        std = Standardiser.fit(x)
        head = fit_binary(std(x), yy, GATE_L2)
        oof[te] = head(std(service_view(views[:, te], mirror)))[:, 0]
    king = service_view(kings, mirror)
    mix = fit_binary(np.column_stack([oof, king]), y, l2=1e-4)
    weights = (float(w) for w in mix.weight[0])
    gate_mix = (*weights, float(mix.bias[0]))
    mixed = np.column_stack([oof, king]) @ np.array(gate_mix[:-1]) + gate_mix[-1]
    x, yy = stack_views(views, y)
    std = Standardiser.fit(x)
    gate = std.fold_into(fit_binary(std(x), yy, GATE_L2))
    return gate, gate_mix, mixed


def fit_all(
    *,
    views: np.ndarray,
    y: np.ndarray,
    gate_views: np.ndarray,
    gate_kings: np.ndarray,
    gate_y: np.ndarray,
    labels: list[str],
    folds: int,
    repeats: int,
    seed: int,
    balance: float,
    mirror: bool,
    grid: tuple[float, ...] = L2_GRID,
) -> Fitted:
    """The whole recipe in this module's docstring.

    ``views`` [V, N, D]: embeddings of the species-labelled photos (view 0 is what the
    service sees, view 1 its mirror); ``gate_views`` / ``gate_kings`` the same for every
    photo the gate learns from, with ``gate_y`` True for penguins.
    """
    n_classes = len(labels)
    fold_sets = [stratified_folds(y, folds, seed + r) for r in range(repeats)]
    log.info("choosing the L2 strength on %d photos, %d folds", len(y), folds)
    l2, cv, first = choose_l2(
        views, y, n_classes, fold_sets[0], grid=grid, balance=balance, mirror=mirror
    )
    logits = [first]
    for r in range(1, repeats):
        log.info("cross-validation repeat %d of %d", r + 1, repeats)
        logits.append(
            out_of_fold_logits(
                views, y, n_classes, fold_sets[r], l2=l2, balance=balance, mirror=mirror
            )
        )
    temperature = fit_temperature(np.concatenate(logits), np.tile(y, repeats))
    probs = [cross_validated_probs(lg, y, fs) for lg, fs in zip(logits, fold_sets, strict=True)]
    pooled = np.concatenate(probs)
    aim = CONFIDENT_ACCURACY + CONFIDENT_MARGIN
    confident = confident_threshold(pooled.max(1), pooled.argmax(1) == np.tile(y, repeats), aim)
    log.info("temperature %.3f, confident threshold %.3f", temperature, confident)
    head, std = fit_species(views, y, n_classes, l2, balance)
    gate, gate_mix, gate_oof = fit_gate(gate_views, gate_kings, gate_y, folds, seed, mirror)
    penguin_threshold = pick_threshold(sigmoid(gate_oof[gate_y]), sigmoid(gate_oof[~gate_y]))
    out_of_fold = summarise(
        probs, logits, y, fold_sets, labels, gate_oof, gate_y, penguin_threshold
    )
    return Fitted(
        species=std.fold_into(head),
        gate=gate,
        gate_mix=gate_mix,
        temperature=temperature,
        thresholds={"penguin_score": penguin_threshold, "confident": confident},
        chosen={"l2": l2, "balance": balance},
        cv=cv,
        out_of_fold=out_of_fold,
        first_probs=probs[0],
    )


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(values)), 4),
        "min": round(float(np.min(values)), 4),
        "max": round(float(np.max(values)), 4),
    }


def summarise(
    probs: list[np.ndarray],
    logits: list[np.ndarray],
    y: np.ndarray,
    fold_sets: list[np.ndarray],
    labels: list[str],
    gate_logits: np.ndarray,
    gate_y: np.ndarray,
    penguin_threshold: float,
) -> dict:
    """The card's out-of-fold figures: the mean over repeats with its spread, per-species
    figures and confusion counts of the first repeat, the confident coverage and the gate."""
    per_repeat = [species_metrics(p, y, labels) for p in probs]
    first = {k: v for k, v in per_repeat[0].items() if k != "reliability"}
    coverage = [cross_validated_coverage(p, y, fs) for p, fs in zip(probs, fold_sets, strict=True)]
    recalls = {
        name: _spread([m["per_species"][name]["recall"] for m in per_repeat])
        for name in per_repeat[0]["per_species"]
    }
    gate_scores = sigmoid(gate_logits)
    pair_counts: dict[tuple[str, str], int] = {}
    for p in probs:
        for truth, answer in zip(y, p.argmax(1), strict=True):
            if truth != answer:
                pair = tuple(sorted((labels[truth], labels[answer])))
                pair_counts[pair] = pair_counts.get(pair, 0) + 1
    pairs = sorted(pair_counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "photos": len(y),
        "folds": int(fold_sets[0].max()) + 1,
        "repeats": len(probs),
        "top1": _spread([m["top1"] for m in per_repeat]),
        "ece": _spread([m["ece"] for m in per_repeat]),
        "ece_if_perfectly_calibrated": ece_sampling_noise(probs[0].max(1)),
        "nll": _spread([m["nll"] for m in per_repeat]),
        "uncalibrated_top1": _spread([float((lg.argmax(1) == y).mean()) for lg in logits]),
        "recall": recalls,
        "confident": {
            key: _spread([c[key] for c in coverage])
            for key in ("coverage", "accuracy_confident", "accuracy_not_sure")
        },
        "confused_pairs": [
            {"species": list(pair), "per_repeat": round(count / len(probs), 2)}
            for pair, count in pairs[:15]
        ],
        "first_repeat": first,
        "gate": {
            "penguins": int(gate_y.sum()),
            "negatives": int((~gate_y).sum()),
            "penguin_pass_rate": round(float((gate_scores[gate_y] >= penguin_threshold).mean()), 4),
            "negative_false_pass_rate": round(
                float((gate_scores[~gate_y] >= penguin_threshold).mean()), 4
            ),
        },
    }
