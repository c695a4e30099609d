"""PNG charts of a load test run, drawn from the recorded rows and their summary.

latency.png       every request's latency over time, with p50/p95/p99 bands per time bucket
throughput.png    requests per second (ok / failed), users, distinct instances and cold starts
cold_vs_warm.png  latency distribution of cold-start requests against warm ones
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from loadtests.report import percentile

_WARM = "#1f77b4"
_COLD = "#d62728"
_FAIL = "#7f7f7f"
_BAND_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def draw_all(rows: Sequence[dict], summary: dict, out_dir: Path) -> list[Path]:
    """Draw the three charts into out_dir; return their paths."""
    return [
        latency_over_time(rows, summary, out_dir / "latency.png"),
        throughput_and_instances(rows, summary, out_dir / "throughput.png"),
        cold_vs_warm(rows, out_dir / "cold_vs_warm.png"),
    ]


def latency_over_time(rows: Sequence[dict], summary: dict, path: Path) -> Path:
    """Scatter of latencies with the per-bucket p50, p95 and p99 drawn as bands."""
    t0, width = rows[0]["t"], summary["bucket_s"]
    ok = [r for r in rows if r["ok"]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    warm = [r for r in ok if not r.get("cold")]
    cold = [r for r in ok if r.get("cold")]
    ax.scatter(_x(warm, t0), _y(warm), s=4, color=_WARM, alpha=0.25, label="request (warm)")
    if cold:
        ax.scatter(_x(cold, t0), _y(cold), s=28, marker="x", color=_COLD, label="cold start")
    # Percentiles need samples: widen the band buckets until each holds ~25 requests.
    duration = summary["duration_s"]
    width = next((w for w in _BAND_S if w >= width and len(ok) * w / duration >= 25), width)
    mids, bands = [], {50: [], 95: [], 99: []}
    for start in np.arange(0, duration, width):
        lat = [r["latency_ms"] for r in ok if start <= r["t"] - t0 < start + width]
        if lat:
            mids.append(start + width / 2)
            for q in bands:
                bands[q].append(percentile(lat, q))
    if mids:
        ax.fill_between(mids, bands[50], bands[95], color="#ff7f0e", alpha=0.25, label="p50-p95")
        ax.fill_between(mids, bands[95], bands[99], color="#ff7f0e", alpha=0.12, label="p95-p99")
        ax.plot(mids, bands[50], color="#ff7f0e", lw=1.8, label="p50")
        ax.plot(mids, bands[99], color="#ff7f0e", lw=0.8, ls="--", label="p99")
    if ok and max(_y(ok)) / max(min(_y(ok)), 1e-3) > 20:
        ax.set_yscale("log")  # cold starts are seconds, warm requests milliseconds
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Latency over time (bands per {width} s; {summary['requests']} requests)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncols=6)
    return _save(fig, path)


def throughput_and_instances(rows: Sequence[dict], summary: dict, path: Path) -> Path:
    """Requests per second (ok and failed) and users on top; instances and cold starts below."""
    buckets, width = summary["over_time"], summary["bucket_s"]
    x = np.array([b["t"] for b in buckets], dtype=float)
    rps = np.array([b["rps"] for b in buckets])
    fail_rps = np.array([b["failures"] / width for b in buckets])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 2))
    top.bar(
        x,
        rps - fail_rps,
        width=width,
        align="edge",
        color=_WARM,
        edgecolor="white",
        lw=0.4,
        label="ok req/s",
    )
    top.bar(
        x,
        fail_rps,
        bottom=rps - fail_rps,
        width=width,
        align="edge",
        color=_FAIL,
        label="failed req/s",
    )
    top.set_ylabel("answers / s")
    top.set_title(f"Throughput: {summary['rps']:.2f} req/s mean, {summary['rps_peak']:.2f} peak")
    users = [(r["t"] - rows[0]["t"], r["users"]) for r in rows if r.get("users") is not None]
    if users:
        twin = top.twinx()
        twin.step(*zip(*users, strict=True), where="post", color="#2ca02c", lw=1.2, label="users")
        twin.set_ylabel("users", color="#2ca02c")
        twin.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    inst = [b["instances"] for b in buckets]
    bottom.step(
        np.append(x, x[-1] + width),
        [*inst, inst[-1]],
        where="post",
        color="#9467bd",
        lw=1.8,
        label="distinct instances answering",
    )
    cold_x = [x[i] + width / 2 for i, b in enumerate(buckets) if b["cold_starts"]]
    cold_n = [b["cold_starts"] for b in buckets if b["cold_starts"]]
    if cold_x:
        bottom.scatter(cold_x, cold_n, marker="x", color=_COLD, zorder=3, label="cold starts")
    bottom.set_ylim(bottom=0, top=max([*inst, *cold_n, 1]) + 1)
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.set_ylabel(f"per {width} s")
    bottom.set_xlabel("seconds since start")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def cold_vs_warm(rows: Sequence[dict], path: Path) -> Path:
    """Empirical CDF of latency for cold-start and warm requests, side by side with a box plot."""
    ok = [r for r in rows if r["ok"]]
    groups = {
        "warm": sorted(r["latency_ms"] for r in ok if not r.get("cold")),
        "cold": sorted(r["latency_ms"] for r in ok if r.get("cold")),
    }
    colors = {"warm": _WARM, "cold": _COLD}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=(3, 2))
    for name, values in groups.items():
        if values:
            y = np.arange(1, len(values) + 1) / len(values)
            left.step(
                values, y, where="post", color=colors[name], label=f"{name} (n={len(values)})"
            )
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("fraction of requests at or below")
    left.set_title("Latency distribution, cold vs warm")
    left.grid(alpha=0.3, which="both")
    present = [n for n, v in groups.items() if v]
    if present:
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "no successful requests", ha="center", transform=left.transAxes)
    if present:
        box = right.boxplot(
            [groups[n] for n in present],
            tick_labels=present,
            whis=(5, 95),
            showfliers=False,
            patch_artist=True,
        )
        for patch, name in zip(box["boxes"], present, strict=True):
            patch.set_facecolor(colors[name])
            patch.set_alpha(0.35)
        for i, name in enumerate(present, start=1):  # every cold point matters; show them
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(groups[name]))
            right.scatter(i + jitter, groups[name], s=6, color=colors[name], alpha=0.5)
        right.set_yscale("log")
    right.set_ylabel("latency (ms)")
    right.set_title("box: p25-p75, whiskers p5-p95")
    right.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _x(rows: Sequence[dict], t0: float) -> list[float]:
    return [r["t"] - t0 for r in rows]


def _y(rows: Sequence[dict]) -> list[float]:
    return [r["latency_ms"] for r in rows]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
