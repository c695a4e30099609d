"""Small models on top of the frozen embeddings: species head, penguin gate, temperature.

All are (multinomial) logistic regressions fitted full-batch with L-BFGS, which is
deterministic and takes seconds on a few thousand 1280-d rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Linear:
    """Weights ``[out, in]`` and bias ``[out]`` of a fitted linear layer."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l2: float,
    balanced: bool | float = False,
    max_iter: int = 200,
) -> Linear:
    """Multinomial logistic regression; ``l2`` is the weight-decay per row-mean loss.

    ``balanced`` weights each class by the inverse of its frequency, so a species
    with 6 photos counts as much as one with 60; a number between 0 and 1 is the
    power of that inverse (0.5: a species with 6 photos counts a third of one with 60).
    """
    torch.manual_seed(0)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    power = float(balanced)
    if power:
        freq = np.bincount(y, minlength=n_classes).astype(np.float64)
        w = np.where(freq > 0, (len(y) / (n_classes * np.maximum(freq, 1))) ** power, 0.0)
        class_weight = torch.tensor(w, dtype=torch.float32)
    else:
        class_weight = None
    layer = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(
        layer.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(layer(xt), yt) + 0.5 * l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Linear(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy())


def fit_binary(x: np.ndarray, y: np.ndarray, l2: float, balanced: bool = True) -> Linear:
    """Binary logistic regression as a one-output ``Linear`` (logit of class 1)."""
    two = fit_softmax(x, y.astype(np.int64), 2, l2, balanced=balanced)
    # softmax over two logits == sigmoid of their difference.
    return Linear((two.weight[1] - two.weight[0])[None, :], np.array([two.bias[1] - two.bias[0]]))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` (grid + refine)."""

    def nll(t: float) -> float:
        p = softmax(logits / t)
        return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(10.0), 200))
    best = min(grid, key=nll)
    fine = np.linspace(best * 0.95, best * 1.05, 41)
    return float(min(fine, key=nll))


def pick_threshold(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Threshold maximising (pass rate on penguins - pass rate on negatives).

    Among equally good cuts the middle of the widest gap (in logit space) wins,
    so the threshold sits as far as the data allow from either side.
    """
    eps = 1e-7
    pos = np.log(np.clip(pos_scores, eps, 1 - eps) / np.clip(1 - pos_scores, eps, 1))
    neg = np.log(np.clip(neg_scores, eps, 1 - eps) / np.clip(1 - neg_scores, eps, 1))
    points = np.unique(np.concatenate([pos, neg, [-20.0, 20.0]]))
    cuts = (points[:-1] + points[1:]) / 2
    gaps = points[1:] - points[:-1]
    score = np.array([(pos >= c).mean() - (neg >= c).mean() for c in cuts])
    best = np.flatnonzero(score >= score.max() - 1e-12)
    cut = cuts[best[np.argmax(gaps[best])]]
    return float(sigmoid(np.array(cut)))
