"""Turn measured samples into the report's figures, check the targets, print the table."""

from __future__ import annotations

import re

import numpy as np

from .loadgen import LoadResult

#: The issue's targets: figure path in the report, comparison, bound.
TARGETS = (
    ("service throughput / floor", ("service", "ratio_to_floor"), ">=", 0.85),
    ("batch tool throughput / floor", ("batch", "ratio_to_floor"), ">=", 0.9),
    ("p99 / p50 at 5 req/s", ("service", "open_loop", "p99_over_p50"), "<=", 2.0),
    ("12 MP: ours / FastAPI", ("ours_vs_alternative", "large"), ">=", 4.0),
    ("int8 speed-up over fp32", ("model", "int8_speedup"), ">=", 1.8),
)

_TIMING = re.compile(r"([A-Za-z0-9_-]+);(?:[^,]*?)dur=([0-9.]+)")


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50 / p90 / p99 / max in ms, rounded; None when there is nothing to measure."""
    if not samples:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(samples)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p90_ms": round(float(np.percentile(arr, 90)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
    }


def server_timing(headers: list[str]) -> dict[str, float]:
    """p50 and p99 of each Server-Timing metric (decode, infer, total) the service reported."""
    values: dict[str, list[float]] = {}
    for header in headers:
        for name, dur in _TIMING.findall(header):
            values.setdefault(name, []).append(float(dur))
    out = {}
    for name, durations in sorted(values.items()):
        out[f"{name}_p50_ms"] = round(float(np.percentile(durations, 50)), 2)
        out[f"{name}_p99_ms"] = round(float(np.percentile(durations, 99)), 2)
    return out


def load_figures(result: LoadResult) -> dict:
    """Throughput, latency percentiles, errors and the server's own timing for one load."""
    figures = {
        "throughput_rps": round(result.throughput, 2),
        "requests": result.count,
        "errors": result.errors,
        "error_statuses": result.error_statuses,
        "seconds": round(result.seconds, 1),
        **percentiles(result.latencies_ms),
    }
    if result.server_timing:
        figures["server_timing"] = server_timing(result.server_timing)
    served = result.count + result.errors
    if served and result.server_cpu_s:
        figures["server_cpu_ms_per_request"] = round(result.server_cpu_s * 1000 / served, 2)
        figures["client_cpu_ms_per_request"] = round(result.client_cpu_s * 1000 / served, 2)
    return figures


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to 2 places, None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def _lookup(report: dict, path: tuple[str, ...]):
    node = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def check_targets(report: dict) -> dict:
    """Each target with its measured figure and whether it was met (None: not measured)."""
    out = {}
    for name, path, op, bound in TARGETS:
        measured = _lookup(report, path)
        met = None
        if isinstance(measured, int | float):
            met = measured >= bound if op == ">=" else measured <= bound
        out[name] = {"figure": ".".join(path), "target": f"{op} {bound}", "measured": measured,
                     "met": met}  # fmt: skip
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def table(report: dict) -> str:
    """The human summary of a report: one line per figure, then the targets."""
    rows: list[tuple[str, str, str, str]] = []

    def load_row(label: str, figs: dict | None) -> None:
        if figs:
            rows.append((label, _fmt(figs.get("throughput_rps")), _fmt(figs.get("p50_ms")),
                         _fmt(figs.get("p99_ms"))))  # fmt: skip

    floor = report.get("floor", {})
    load_row(f"floor ({floor.get('processes')} processes, in-process)", floor)
    batch = report.get("batch")
    if batch:
        load_row(f"batch tool (predict, {batch.get('processes')} processes)", batch)
    service = report.get("service", {})
    for size in ("small", "large"):
        load_row(f"service, {size} photos, closed loop", service.get("closed_loop", {}).get(size))
    for size in ("small", "large"):
        alt = report.get("alternative", {}).get("closed_loop", {}).get(size)
        load_row(f"FastAPI baseline, {size} photos", alt)
    floor_open = floor.get("open_loop")
    if floor_open:
        rows.append((f"floor, open loop {floor_open['rate_rps']} photos/s", "-",
                     _fmt(floor_open.get("p50_ms")), _fmt(floor_open.get("p99_ms"))))  # fmt: skip
    open_loop = service.get("open_loop")
    if open_loop:
        rows.append((f"service, open loop {open_loop['rate_rps']} req/s", "-",
                     _fmt(open_loop.get("p50_ms")), _fmt(open_loop.get("p99_ms"))))  # fmt: skip
    lines = [f"{'':44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}"]
    lines += [f"{a:44} {b:>9} {c:>9} {d:>9}" for a, b, c, d in rows]

    lines.append("")
    if batch:
        lines.append(
            f"batch tool: {_fmt(batch.get('throughput_rps'))} photos/s = "
            f"{_fmt(batch.get('ratio_to_floor'))} x the floor (start-up apart: "
            f"{', '.join(f'{s} s' for s in batch.get('startup_s', []))})"
        )
    small = service.get("closed_loop", {}).get("small", {})
    if "server_cpu_ms_per_request" in small:
        lines.append(
            f"CPU per photo: floor {_fmt(floor.get('cpu_ms_per_photo'))} ms; service "
            f"{_fmt(small['server_cpu_ms_per_request'])} ms in its processes + "
            f"{_fmt(small['client_cpu_ms_per_request'])} ms in the load client "
            f"(floor/service = {_fmt(service.get('cpu_efficiency_vs_floor'))})"
        )
    if floor_open and "cpu_p50_ms" in floor_open:
        lines.append(
            f"open loop, the photos' own CPU cost in-process: p50 {floor_open['cpu_p50_ms']} ms, "
            f"p99 {floor_open['cpu_p99_ms']} ms (p99/p50 {_fmt(floor_open['cpu_p99_over_p50'])})"
        )
    if open_loop and "worker_cpu_wait_ms_per_request" in open_loop:
        lines.append(
            f"open loop, per request: workers ran {open_loop['worker_cpu_ms_per_request']} ms "
            f"and waited {open_loop['worker_cpu_wait_ms_per_request']} ms for a busy core"
        )
    for variant, figs in report.get("model", {}).get("variants", {}).items():
        lines.append(
            f"model alone, {variant:5} one core: {_fmt(figs['cpu_p50_ms'])} ms CPU/image, "
            f"{_fmt(figs['p50_ms'])} ms wall (p50)"
        )
    for figs in report.get("decode", {}).values():
        width, height = figs["pixels"]
        lines.append(
            f"decode {width}x{height} (ms CPU): full {_fmt(figs['full_decode'])} ms, draft "
            f"{_fmt(figs['draft_decode'])} ms; to model input: FastAPI way "
            f"{_fmt(figs['alternative_to_input'])} ms, service {_fmt(figs['service_to_input'])} ms"
        )
    mem = report.get("memory", {})
    for w in mem.get("service_workers", []):
        lines.append(f"service worker {w['pid']}: RSS {w['rss_mb']} MB, PSS {w['pss_mb']} MB")
    if mem.get("alternative"):
        alt = mem["alternative"]
        lines.append(f"FastAPI baseline process: RSS {alt['rss_mb']} MB, PSS {alt['pss_mb']} MB")

    lines.append("")
    for name, t in report.get("targets", {}).items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"{name:30} {_fmt(t['measured']):>8}  target {t['target']:8} {verdict}")
    return "\n".join(lines)
