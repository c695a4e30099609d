"""loadtests/report.py on recorded rows: percentiles, cold/warm split, instances, charts.

Expected percentiles are computed here with the standard library, statistics.quantiles with
method="inclusive" — the same definition report.py documents (linear interpolation between
closest ranks, Hyndman-Fan type 7) but an independent implementation.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from loadtests import report

T0 = 1_790_000_000.0


def row(
    t: float,
    latency_ms: float,
    *,
    instance: str | None = "a",
    cold: bool = False,
    status: int = 200,
    timing: dict | None = None,
) -> dict:
    """One recorded request as the locustfile writes it."""
    return {
        "t": T0 + t,
        "latency_ms": latency_ms,
        "status": status,
        "ok": 200 <= status < 400,
        "bytes": 250,
        "instance": instance,
        "cold": cold,
        "timing": timing or {},
        "users": 2,
    }


def pct(values: list[float], q: int) -> float:
    """The q-th percentile by the inclusive (type 7) method of the statistics module."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def two_instance_rows() -> list[dict]:
    """60 s of traffic: instance a all along, b from 30 s; each instance's first answer is cold."""
    rng = random.Random(7)
    rows = [row(0.0, 2400.0, instance="a", cold=True)]
    rows += [row(0.5 * i, rng.uniform(20, 80), instance="a") for i in range(1, 120)]
    rows.append(row(30.2, 1900.0, instance="b", cold=True))
    rows += [row(30.25 + 0.5 * i, rng.uniform(25, 90), instance="b") for i in range(1, 60)]
    return rows


def test_percentiles_match_an_independent_computation() -> None:
    rng = random.Random(1)
    latencies = [rng.lognormvariate(4, 0.6) for _ in range(997)]
    rows = [row(i * 0.05, lat) for i, lat in enumerate(latencies)]
    summary = report.summarize(rows)
    for q in (50, 95, 99):
        assert summary["latency_ms"]["all"][f"p{q}"] == pytest.approx(pct(latencies, q), abs=0.01)
    assert summary["latency_ms"]["all"]["max"] == pytest.approx(max(latencies), abs=0.01)
    assert summary["latency_ms"]["all"]["count"] == 997


def test_cold_and_warm_requests_are_split_by_the_cold_start_flag() -> None:
    rows = two_instance_rows()
    summary = report.summarize(rows)
    cold = [r["latency_ms"] for r in rows if r["cold"]]
    warm = [r["latency_ms"] for r in rows if not r["cold"]]
    lat = summary["latency_ms"]
    assert summary["cold_starts"] == 2
    assert lat["cold"]["count"] == 2 and lat["warm"]["count"] == len(rows) - 2
    assert lat["cold"]["p50"] == pytest.approx(statistics.median(cold), abs=0.01)
    assert lat["cold"]["p99"] == pytest.approx(pct(cold, 99), abs=0.01)
    assert lat["warm"]["p95"] == pytest.approx(pct(warm, 95), abs=0.01)
    assert lat["all"]["p99"] == pytest.approx(pct(cold + warm, 99), abs=0.01)


def test_instances_are_counted_overall_and_per_time_bucket() -> None:
    summary = report.summarize(two_instance_rows())
    assert summary["instances"]["distinct"] == 2
    assert summary["instances"]["ids"] == ["a", "b"]
    assert summary["instances"]["max_per_bucket"] == 2
    width = summary["bucket_s"]
    per_bucket = {b["t"]: b["instances"] for b in summary["over_time"]}
    assert all(n == 1 for t, n in per_bucket.items() if t + width <= 30)
    assert all(n == 2 for t, n in per_bucket.items() if t >= 31)
    assert sum(b["requests"] for b in summary["over_time"]) == summary["requests"] == 180
    assert sum(b["cold_starts"] for b in summary["over_time"]) == 2


def test_failures_are_counted_and_kept_out_of_latency_percentiles() -> None:
    rows = [row(i, 50.0 + i) for i in range(10)]
    rows += [row(10.0, 0.4, status=0, instance=None), row(11.0, 30000.0, status=503)]
    summary = report.summarize(rows)
    assert summary["requests"] == 12
    assert summary["failures"] == 2
    assert summary["failure_rate"] == pytest.approx(2 / 12, abs=1e-4)
    assert summary["status_counts"] == {"0": 1, "200": 10, "503": 1}
    assert summary["latency_ms"]["all"]["count"] == 10
    assert summary["latency_ms"]["all"]["max"] == 59.0


def test_rps_is_requests_over_the_span_from_first_start_to_last_answer() -> None:
    rows = [row(i * 0.25, 100.0) for i in range(81)]  # 0 .. 20 s, last answer at 20.1 s
    summary = report.summarize(rows)
    assert summary["duration_s"] == pytest.approx(20.1, abs=1e-3)
    assert summary["rps"] == pytest.approx(81 / 20.1, abs=1e-3)
    assert summary["rps_peak"] == pytest.approx(4.0, abs=1e-3)


def test_server_timing_stages_get_their_own_percentiles() -> None:
    rows = [row(i, 40.0, timing={"decode": float(i), "infer": 10.0 + i}) for i in range(1, 21)]
    stages = report.summarize(rows)["server_timing_ms"]
    assert set(stages) == {"decode", "infer"}
    assert stages["decode"]["p50"] == pytest.approx(pct([float(i) for i in range(1, 21)], 50))
    assert stages["infer"]["p95"] == pytest.approx(pct([10.0 + i for i in range(1, 21)], 95))


def test_no_rows_give_an_empty_summary_not_a_crash() -> None:
    assert report.summarize([])["requests"] == 0


def test_cli_writes_summary_json_and_three_png_charts(tmp_path: Path) -> None:
    rows = two_instance_rows()
    rows.append(row(61.0, 5.0, status=0, instance=None))
    rows_path = tmp_path / "requests.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    out = tmp_path / "report"
    assert report.main([str(rows_path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == len(rows) and summary["failures"] == 1
    assert summary["started_at"].startswith("2026-")
    for name in ("latency.png", "throughput.png", "cold_vs_warm.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, name  # a drawn chart, not an empty canvas
    assert sorted(summary["charts"]) == ["cold_vs_warm.png", "latency.png", "throughput.png"]


def test_a_slow_request_counts_in_the_second_its_answer_came_back() -> None:
    rows = [row(0.0, 50.0), row(0.2, 3500.0), row(1.0, 50.0), row(4.0, 50.0)]
    buckets = {b["t"]: b["requests"] for b in report.summarize(rows)["over_time"]}
    assert buckets == {0: 1, 1: 1, 2: 0, 3: 1, 4: 1}


def test_a_run_where_every_request_failed_still_gets_its_report(tmp_path: Path) -> None:
    rows = [row(i * 0.5, 2.0, status=0, instance=None) for i in range(6)]
    rows_path = tmp_path / "requests.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = report.write_report(rows_path, tmp_path)
    assert summary["failures"] == 6 and summary["failure_rate"] == 1.0
    assert summary["latency_ms"]["all"] == {
        "count": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "mean": None,
        "max": None,
    }
    assert summary["instances"]["distinct"] == 0
    assert len(summary["charts"]) == 3 and all((tmp_path / c).is_file() for c in summary["charts"])
