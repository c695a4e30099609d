"""`make bench` end to end with tiny phases: it runs, and its JSON carries every figure.

No timing is asserted here (speed is what the benchmark reports, not what tests check);
what is checked is that every figure docs/performance.md quotes is produced, and that the servers
answered every request the benchmark sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import REPO_ROOT

#: Every figure the report must carry: a path into the JSON and whether it must be a number.
FIGURES = [
    ("floor", "throughput_rps"),
    ("floor", "p50_ms"),
    ("batch", "throughput_rps"),
    ("batch", "ratio_to_floor"),
    ("service", "closed_loop", "small", "throughput_rps"),
    ("service", "closed_loop", "small", "p50_ms"),
    ("service", "closed_loop", "small", "p99_ms"),
    ("service", "closed_loop", "large", "throughput_rps"),
    ("service", "ratio_to_floor"),
    ("service", "open_loop", "p50_ms"),
    ("service", "open_loop", "p99_ms"),
    ("service", "open_loop", "p99_over_p50"),
    ("alternative", "closed_loop", "small", "throughput_rps"),
    ("alternative", "closed_loop", "large", "throughput_rps"),
    ("ours_vs_alternative", "small"),
    ("ours_vs_alternative", "large"),
    ("decode", "input_size", "full_decode"),
    ("decode", "input_size", "draft_decode"),
    ("decode", "12MP", "full_decode"),
    ("decode", "12MP", "draft_decode"),
    ("decode", "12MP", "service_to_input"),
    ("decode", "12MP", "alternative_to_input"),
    ("memory", "alternative", "rss_mb"),
]


def _get(report: dict, path: tuple[str, ...]):
    node = report
    for key in path:
        assert isinstance(node, dict) and key in node, f"report lacks {'.'.join(path)}"
        node = node[key]
    return node


@pytest.fixture(scope="module")
def bench_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One benchmark run with sub-second phases; returns (JSON report, printed table)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, "-m", "bench.run", "--seconds", "0.6", "--workers", "2"]
    cmd += ["--out", str(out), "--model-dir", str(model_dir)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_report_has_every_figure_as_a_number(bench_run: tuple[dict, str]) -> None:
    report, _ = bench_run
    for path in FIGURES:
        value = _get(report, path)
        assert isinstance(value, int | float) and value > 0, f"{'.'.join(path)} = {value!r}"


def test_every_benchmark_request_was_answered(bench_run: tuple[dict, str]) -> None:
    report, _ = bench_run
    loads = [report["service"]["open_loop"]]
    loads += report["service"]["closed_loop"].values()
    loads += report["alternative"]["closed_loop"].values()
    for figures in loads:
        assert figures["errors"] == 0
        assert figures["requests"] > 0


def test_the_small_photo_is_the_model_input_size_from_the_card(
    bench_run: tuple[dict, str], model_dir: Path
) -> None:
    report, table = bench_run
    size = json.loads((model_dir / "model-card.json").read_text())["input"]["size"]
    assert report["meta"]["model"]["input_size"] == size
    assert report["decode"]["input_size"]["pixels"] == [size, size]
    assert report["meta"]["photos"]["tiny"]["size"] == [size, size]
    assert f"decode {size}x{size} (ms CPU)" in table


def test_memory_is_reported_for_each_service_worker(bench_run: tuple[dict, str]) -> None:
    report, _ = bench_run
    workers = report["memory"]["service_workers"]
    assert len(workers) == report["service"]["workers"] == 2
    assert all(w["rss_mb"] > 0 and w["pss_mb"] > 0 for w in workers)


def test_model_variants_are_timed_or_the_missing_one_is_named(bench_run: tuple[dict, str]) -> None:
    model = _get(bench_run[0], ("model",))
    assert model["shipped"] in model["variants"]
    for figures in model["variants"].values():
        assert figures["p50_ms"] > 0
    if {"fp32", "int8"} <= model["variants"].keys():
        assert model["int8_speedup"] > 0
    else:
        assert model["int8_speedup"] is None
        assert "only" in model["note"]


def test_table_states_each_target_and_its_verdict(bench_run: tuple[dict, str]) -> None:
    report, table = bench_run
    assert set(report["targets"]) == {
        "service throughput / floor",
        "batch tool throughput / floor",
        "p99 / p50 at 5 req/s",
        "12 MP: ours / FastAPI",
        "int8 speed-up over fp32",
    }
    for name, target in report["targets"].items():
        assert name in table
        assert target["met"] in (True, False, None)
