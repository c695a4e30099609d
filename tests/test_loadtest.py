"""Load tests: the shapes, the photo pool, the recording, and `make loadtest` / coldstart
run for real against Gunicorn on loopback (marker `loadtest`, ~15 s of traffic each)."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from loadtests import shapes
from loadtests.images import GENERATED_SIZES, PhotoPool, find_images, generated_photos
from loadtests.launch import accepting
from loadtests.recording import parse_server_timing
from tests.server import REPO_ROOT, Server, running_server


# --- shapes -----------------------------------------------------------------------------
def users_over(shape, step: float = 0.5) -> list[tuple[float, int]]:
    t, out = 0.0, []
    while (n := shape.users_at(t)) is not None:
        out.append((t, n))
        t += step
    return out


def test_steady_holds_the_base_users_until_the_duration_then_stops() -> None:
    plan = users_over(shapes.build("steady", users=10, duration=60))
    assert {n for _, n in plan} == {10}
    assert plan[-1][0] == 59.5


def test_ramp10x_climbs_without_dropping_to_ten_times_the_base_and_holds() -> None:
    plan = users_over(shapes.build("ramp10x", users=10, duration=100))
    counts = [n for _, n in plan]
    assert counts[0] == 10 and counts == sorted(counts)
    assert all(n == 100 for t, n in plan if t >= 75)
    assert 40 <= dict(plan)[37.5] <= 60  # halfway up the climb


def test_spike_jumps_tenfold_in_the_middle_and_returns_to_base() -> None:
    plan = dict(users_over(shapes.build("spike", users=5, duration=100)))
    assert plan[39.5] == 5 and plan[40.0] == 50  # no ramp: the burst arrives at once
    assert plan[59.5] == 50 and plan[60.0] == 5 and plan[99.5] == 5


def test_idle_gaps_go_to_zero_users_for_longer_than_the_given_gap() -> None:
    shape = shapes.build("idle-gaps", users=4, duration=3000, idle_gap=960, burst=60)
    plan = users_over(shape, step=1.0)
    idle_runs, run = [], 0
    for _, n in plan:
        if n == 0:
            run += 1
        elif run:
            idle_runs.append(run)
            run = 0
    assert idle_runs == [960, 960]  # Cloud Run scales an instance idle ~15 min to zero
    assert {n for _, n in plan} == {0, 4}
    assert shape.bursts == 3


def test_default_idle_gap_outlasts_cloud_runs_fifteen_minute_scale_down() -> None:
    assert shapes.DEFAULT_IDLE_GAP_S > 15 * 60


def test_unknown_shape_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="steady, ramp10x, spike, idle-gaps"):
        shapes.build("surge", users=1, duration=10)


# --- photos and recording ---------------------------------------------------------------
def test_generated_photos_are_jpegs_from_point3_to_12_megapixels() -> None:
    photos = generated_photos()
    pixels = []
    for photo in photos:
        with Image.open(io.BytesIO(photo.data)) as img:
            assert img.format == "JPEG"
            pixels.append(img.width * img.height)
    assert min(pixels) == 640 * 480 and max(pixels) == 4032 * 3024
    assert len(photos) == len(GENERATED_SIZES)
    # Compresses like a photo, not like a flat colour: about 2 bits a pixel or more.
    assert all(len(p.data) * 8 / n > 1.5 for p, n in zip(photos, pixels, strict=True))


def test_image_folder_is_searched_recursively_for_image_files_only(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("top.JPG", "a/mid.png", "a/b/deep.webp"):
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    (tmp_path / "a" / "notes.txt").write_text("not a photo")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/deep.webp", "a/mid.png", "top.JPG"]
    pool = PhotoPool.from_folder(tmp_path)
    names = {pool.pick(random.Random(i)).name for i in range(30)}
    assert names == {"deep.webp", "mid.png", "top.JPG"}


def test_a_folder_without_images_is_an_error_not_an_empty_test(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        PhotoPool.from_folder(tmp_path)


def test_shared_photo_set_is_found_in_its_nested_folders(shared_data: Path) -> None:
    pool = PhotoPool.from_folder(shared_data)
    assert len(pool) >= 100


def test_server_timing_header_is_parsed_into_stage_durations() -> None:
    header = 'decode;dur=3.1, infer;dur=5.2;desc="onnx", total;dur=9.0, cache, bad;dur=x'
    assert parse_server_timing(header) == {"decode": 3.1, "infer": 5.2, "total": 9.0}
    assert parse_server_timing(None) == {}


# --- against the real service -----------------------------------------------------------
def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.loadtest
def test_make_loadtest_runs_locust_against_gunicorn_and_writes_the_report(
    server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    cmd = [
        "make",
        "--no-print-directory",
        "loadtest",
        f"HOST={server.base_url}",
        "USERS=3",
        "DURATION=15s",
        "SHAPE=steady",
        f"OUT={out}",
        f"PYTHON={sys.executable}",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    rows = read_rows(out / "requests.jsonl")
    assert summary["failures"] == 0, summary["status_counts"]
    assert summary["requests"] == len(rows) >= 5
    assert summary["status_counts"] == {"200": len(rows)}
    assert sum(b["requests"] for b in summary["over_time"]) == len(rows)
    assert summary["latency_ms"]["all"]["count"] == len(rows)
    cold = [r for r in rows if r["cold"]]
    assert summary["cold_starts"] == len(cold)
    assert summary["latency_ms"]["cold"]["count"] + summary["latency_ms"]["warm"]["count"] == len(
        rows
    )
    # Every answer names its worker; a cold start is only ever a worker's first answer.
    workers = {r["instance"] for r in rows}
    assert None not in workers and 1 <= len(workers) <= 2
    assert summary["instances"]["distinct"] == len(workers)
    for r in cold:
        assert r is next(x for x in rows if x["instance"] == r["instance"])
    assert "total" in summary["server_timing_ms"] and "infer" in summary["server_timing_ms"]
    assert all(r["upload_bytes"] > 0 and r["bytes"] > 0 for r in rows)
    for name in ("latency.png", "throughput.png", "cold_vs_warm.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


@pytest.mark.loadtest
def test_coldstart_url_mode_flags_the_first_request_a_fresh_worker_serves(
    model_dir: Path, tmp_path: Path
) -> None:
    # One worker, and no readiness probe: the first request it sees is ours.
    with running_server(workers=1, model_dir=model_dir, wait_ready=False) as srv:
        srv.wait_for(lambda: accepting(srv.port), 60, "listening")
        cmd = [
            sys.executable,
            "-m",
            "loadtests.coldstart",
            "--target",
            srv.base_url,
            "-n",
            "2",
            "--idle",
            "0.5",
            "--out",
            str(tmp_path),
        ]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "coldstart.json").read_text())
    first, second = result["samples"]
    assert first["first"]["status"] == 200 and first["first"]["cold"] is True
    assert first["warm"]["cold"] is False and second["first"]["cold"] is False
    assert first["first"]["instance"] == second["first"]["instance"]
    assert result["summary"]["first_cold_flagged"] == 1
    assert (tmp_path / "coldstart.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.loadtest
def test_coldstart_local_mode_times_launch_to_first_prediction(
    model_dir: Path, tmp_path: Path
) -> None:
    start = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "loadtests.coldstart",
        "--target",
        "local",
        "-n",
        "1",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "MODEL_DIR": str(model_dir)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sample,) = json.loads((tmp_path / "coldstart.json").read_text())["samples"]
    assert sample["first"]["status"] == 200 and sample["first"]["cold"] is True
    assert 0 < sample["listen_s"] <= sample["first_prediction_s"] < elapsed
    assert sample["warm"]["status"] == 200
    assert (tmp_path / "coldstart.png").read_bytes()[:4] == b"\x89PNG"
