"""Turn the rows a load test recorded into numbers (summary.json) and pictures (PNG charts).

Usage: python -m loadtests.report OUT/requests.jsonl --out OUT

One row per request, one JSON object per line (written by loadtests/recording.py):
    t           request start, Unix seconds
    latency_ms  client-side response time (upload + server + download)
    status      HTTP status, 0 when no response came back
    ok          whether Locust counted it a success
    bytes       response body length
    instance    X-Instance-Id, or null
    cold        X-Cold-Start was "1"
    timing      Server-Timing stages in ms, e.g. {"decode": 3.1, "infer": 5.2, "total": 9.0}

Percentiles use linear interpolation between the two closest ranks (numpy's "linear",
Hyndman & Fan type 7, the same as statistics.quantiles(..., method="inclusive")).
Latency figures cover successful requests only: a refused connection's "latency" says
nothing about how fast the service answers; failures are counted separately.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

PERCENTILES = (50, 95, 99)
PERCENTILE_METHOD = "linear interpolation between closest ranks (Hyndman-Fan type 7)"
# Bucket widths tried in turn so a chart has at most ~120 points whatever the duration.
_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600)


def load_rows(path: Path | str) -> list[dict]:
    """Read a JSONL file of request rows, oldest first; blank lines are skipped."""
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    rows.sort(key=lambda r: r["t"])
    return rows


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation, or None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def latency_stats(values: Sequence[float]) -> dict:
    """Count, p50/p95/p99, mean and max of a list of latencies in ms (None when empty)."""
    stats: dict = {"count": len(values)}
    for q in PERCENTILES:
        stats[f"p{q}"] = _round(percentile(values, q))
    stats["mean"] = _round(float(np.mean(values))) if len(values) else None
    stats["max"] = _round(float(np.max(values))) if len(values) else None
    return stats


def bucket_width(duration_s: float) -> int:
    """Seconds per time bucket: the smallest width giving at most ~120 buckets."""
    for width in _BUCKETS_S:
        if duration_s / width <= 120:
            return width
    return _BUCKETS_S[-1]


def time_buckets(rows: Sequence[dict], width: int) -> list[dict]:
    """Per bucket of `width` s from the first request: requests, failures, rps, instances.

    A request counts in the bucket where its answer came back (as Locust's own req/s does),
    so at saturation the rate shows what the service serves, not what clients ask for.
    `instances` counts the distinct X-Instance-Id values that answered in that bucket. Rates
    are over the full width, so a last bucket the run only partly covered reads low, not high.
    """
    if not rows:
        return []
    t0 = rows[0]["t"]
    end = _end_time(rows)
    n = max(1, math.ceil((end - t0) / width))
    buckets = [
        {"t": i * width, "requests": 0, "failures": 0, "cold_starts": 0, "ids": set()}
        for i in range(n)
    ]
    for row in rows:
        b = buckets[min(n - 1, int((_end_time([row]) - t0) // width))]
        b["requests"] += 1
        b["failures"] += 0 if row["ok"] else 1
        b["cold_starts"] += 1 if row.get("cold") else 0
        if row.get("instance"):
            b["ids"].add(row["instance"])
    span = min(width, end - t0)  # a run shorter than one bucket is its own span
    for b in buckets:
        b["rps"] = round(b["requests"] / max(span, 1e-9), 3)
        b["instances"] = len(b.pop("ids"))
    return buckets


def summarize(rows: Sequence[dict], source: str | None = None) -> dict:
    """The numbers a reader wants from one load test run (see the module docstring)."""
    if not rows:
        return {"source": source, "requests": 0, "failures": 0, "rps": 0.0}
    t0 = rows[0]["t"]
    duration = max(_end_time(rows) - t0, 1e-9)
    ok = [r for r in rows if r["ok"]]
    failures = len(rows) - len(ok)
    width = bucket_width(duration)
    buckets = time_buckets(rows, width)
    instances = {r["instance"] for r in rows if r.get("instance")}
    stages = sorted({k for r in ok for k in (r.get("timing") or {})})
    return {
        "source": source,
        "started_at": datetime.fromtimestamp(t0, UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration, 3),
        "requests": len(rows),
        "failures": failures,
        "failure_rate": round(failures / len(rows), 5),
        "status_counts": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "rps": round(len(rows) / duration, 3),
        "rps_peak": max(b["rps"] for b in buckets),
        "percentile_method": PERCENTILE_METHOD,
        "latency_ms": {
            "all": latency_stats([r["latency_ms"] for r in ok]),
            "cold": latency_stats([r["latency_ms"] for r in ok if r.get("cold")]),
            "warm": latency_stats([r["latency_ms"] for r in ok if not r.get("cold")]),
        },
        "server_timing_ms": {
            stage: latency_stats([r["timing"][stage] for r in ok if stage in (r["timing"] or {})])
            for stage in stages
        },
        "cold_starts": sum(1 for r in rows if r.get("cold")),
        "instances": {
            "distinct": len(instances),
            "max_per_bucket": max(b["instances"] for b in buckets),
            "ids": sorted(instances),
        },
        "bucket_s": width,
        "over_time": buckets,
    }


def write_report(rows_path: Path, out_dir: Path, charts: bool = True) -> dict:
    """Write out_dir/summary.json (and the PNG charts); return the summary."""
    rows = load_rows(rows_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, source=rows_path.name)
    if charts and rows:
        from loadtests import charts as charts_mod  # matplotlib only when drawing

        summary["charts"] = [p.name for p in charts_mod.draw_all(rows, summary, out_dir)]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: the headline figures of summary.json."""
    if not summary.get("requests"):
        return "no requests recorded"
    lat = summary["latency_ms"]

    def line(name: str, s: dict) -> str:
        if not s["count"]:
            return f"  {name:<5} n=0"
        return f"  {name:<5} n={s['count']:<6} p50={s['p50']} p95={s['p95']} p99={s['p99']} ms"

    return "\n".join(
        [
            f"{summary['requests']} requests in {summary['duration_s']:.1f} s "
            f"({summary['rps']:.2f} req/s, peak {summary['rps_peak']:.2f}), "
            f"{summary['failures']} failed",
            line("all", lat["all"]),
            line("warm", lat["warm"]),
            line("cold", lat["cold"]),
            f"  cold starts: {summary['cold_starts']}, instances: "
            f"{summary['instances']['distinct']} distinct, "
            f"at most {summary['instances']['max_per_bucket']} per {summary['bucket_s']} s",
        ]
    )


def _end_time(rows: Iterable[dict]) -> float:
    return max(r["t"] + r["latency_ms"] / 1000.0 for r in rows)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="requests.jsonl written by the locustfile")
    parser.add_argument("--out", type=Path, help="output folder (default: the rows' folder)")
    parser.add_argument("--no-charts", action="store_true", help="write summary.json only")
    args = parser.parse_args(argv)
    summary = write_report(args.rows, args.out or args.rows.parent, charts=not args.no_charts)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
