"""The two evaluation figures: confusion matrix and reliability diagram (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    """Row-normalised confusion matrix with the raw counts written in the cells."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = max(6.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true species")
    for i, j in zip(*np.nonzero(matrix), strict=True):
        ax.text(
            j,
            i,
            str(matrix[i, j]),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if share[i, j] > 0.5 else "black",
        )
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} photos)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(
    bins: list[dict], ece: float, path: Path, ece_if_calibrated: float | None = None
) -> None:
    """Accuracy against confidence per bin, bar width = bin, with photo counts; the title
    also gives the ECE a perfectly calibrated model would show on as many photos."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for b in bins:
        if not b["count"]:
            continue
        width = b["upper"] - b["lower"]
        ax.bar(
            b["lower"],
            b["accuracy"],
            width=width,
            align="edge",
            color="tab:blue",
            edgecolor="black",
            alpha=0.8,
        )
        ax.plot(b["confidence"], b["accuracy"], "o", color="tab:red", markersize=4)
        # Counts sit just above the frame, where no bar can hide them.
        ax.text(b["lower"] + width / 2, 1.01, str(b["count"]), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top species)")
    ax.set_ylabel("accuracy")
    title = f"Reliability (ECE {ece:.3f}); numbers = photos per bin"
    if ece_if_calibrated is not None:
        title += f"\na perfectly calibrated model averages ECE {ece_if_calibrated:.3f} here"
    ax.set_title(title, pad=14, fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
