"""`penguin-api predict` as a batch tool on local folders, run as a user runs it.

Real photos (../shared/data, read in place) plus broken files; the real CLI in its own
process, stopped for real (SIGKILL, Ctrl-C, SIGTERM, a file-size limit for a full disk).
Labels, sizes and versions come from the model card and the answers, never from here.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.batch_support import (
    alive,
    card,
    children,
    cli,
    held_photo,
    kill_group,
    line_count,
    make_collection,
    read_rows,
    start_cli,
    wait_for,
)

#: Rows the interrupted runs must have written before they are stopped ("midway"). They
#: are held on a named pipe after the collection's penguins, so they cannot finish first.
MIDWAY = 40


@pytest.fixture(scope="module")
def collection(shared_data, tmp_path_factory):
    return make_collection(shared_data, tmp_path_factory.mktemp("collection"))


def _reference(collection, model_dir, folder: Path, name: str):
    out = folder / name
    run = cli("predict", *collection.paths, "--out", str(out), "--model-dir", str(model_dir))
    assert run.returncode == 1, run.stderr  # the broken files could not be read
    return out, run


@pytest.fixture(scope="module")
def reference_jsonl(collection, model_dir, tmp_path_factory):
    """An uninterrupted run to JSONL: (results file, the finished process)."""
    return _reference(collection, model_dir, tmp_path_factory.mktemp("ref"), "results.jsonl")


@pytest.fixture(scope="module")
def reference_csv(collection, model_dir, tmp_path_factory):
    """An uninterrupted run to CSV: (results file, the finished process)."""
    return _reference(collection, model_dir, tmp_path_factory.mktemp("ref"), "results.csv")


# --- what a run writes ------------------------------------------------------------------------


def test_every_photo_gets_one_row_in_input_order(reference_jsonl, collection, model_dir):
    path, _ = reference_jsonl
    rows = read_rows(path)
    assert [r["file"] for r in rows] == collection.keys
    model = card(model_dir)
    by_file = {r["file"]: r for r in rows}
    for key in [*collection.penguins, *collection.others]:
        row = by_file[key]
        assert "error" not in row, row
        assert row["model"] == {"name": model["name"], "version": model["version"]}
        assert all(guess["species"] in model["labels"] for guess in row["top_k"])
        assert row["species"] is None or row["species"] in model["labels"]
        assert row["is_penguin"] == (row["species"] is not None)
        assert 0.0 <= row["penguin_score"] <= 1.0
    for key in collection.broken:
        error = by_file[key]["error"]
        assert error["type"] == "/problems/unsupported-image" and error["detail"], error
    assert any(by_file[k]["species"] is None for k in collection.others), "no non-penguin found"


def test_rows_without_out_are_the_same_json_lines_on_stdout(reference_jsonl, collection, model_dir):
    path, _ = reference_jsonl
    run = cli("predict", *collection.paths, "--model-dir", str(model_dir))
    assert run.returncode == 1, run.stderr
    assert run.stdout == path.read_text()


def test_csv_holds_the_same_answers_as_jsonl(reference_csv, reference_jsonl):
    records, rows = read_rows(reference_csv[0]), read_rows(reference_jsonl[0])
    assert len(records) == len(rows)
    for record, row in zip(records, rows, strict=True):
        assert record["file"] == row["file"]
        if "error" in row:
            assert record["error_type"] == row["error"]["type"]
            assert record["error_detail"] == row["error"]["detail"]
            assert record["species"] == ""
            continue
        assert record["species"] == (row["species"] or "")
        assert record["is_penguin"] == ("true" if row["is_penguin"] else "false")
        assert float(record["penguin_score"]) == row["penguin_score"]
        assert record["model_version"] == row["model"]["version"]
        guesses = [g.rsplit(":", 1) for g in record["top_k"].split(";")]
        assert [(s, float(c)) for s, c in guesses] == [
            (g["species"], g["confidence"]) for g in row["top_k"]
        ]
        assert record["error_type"] == ""


def test_summary_on_stderr_counts_every_row(reference_jsonl, collection):
    path, run = reference_jsonl
    rows = read_rows(path)
    species = Counter(r["species"] for r in rows if r.get("species"))
    no_penguin = sum(1 for r in rows if "error" not in r and r["species"] is None)
    answered = len(rows) - len(collection.broken)
    assert f"{path}: {len(rows):,} photos, {answered:,} answered" in run.stderr
    for name, count in species.items():
        assert f"{name} {count:,}" in run.stderr
    assert f"no penguin: {no_penguin:,}" in run.stderr
    assert f"could not be read: {len(collection.broken)} (unsupported-image" in run.stderr
    assert re.search(r"classified [\d,]+ photos in [\d.]+ s \([\d.]+ photos/s", run.stderr)
    assert run.stdout == ""


def test_exit_status_is_0_when_every_photo_is_answered(shared_data, model_dir, tmp_path):
    folder = next(p for p in sorted((shared_data / "penguins" / "val").iterdir()) if p.is_dir())
    run = cli("predict", str(folder), "--out", str(tmp_path / "r.csv"), "--model-dir",
              str(model_dir))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(read_rows(tmp_path / "r.csv")) == len([p for p in folder.iterdir() if p.is_file()])


def test_a_missing_photo_gets_an_unreadable_row(model_dir, tmp_path):
    missing = tmp_path / "gone.jpg"
    run = cli("predict", str(missing), "--model-dir", str(model_dir))
    assert run.returncode == 1
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["file"] == str(missing)
    assert row["error"]["type"] == "/problems/unreadable-file"


# --- stopping and resuming ----------------------------------------------------------------


def start_held_midway(collection, held, out, model_dir, workers: int) -> subprocess.Popen:
    """`predict` on the collection with `held` between its penguins and the rest, returned
    once it has written more than MIDWAY rows: it is still running, stuck at `held`."""
    paths = [collection.paths[0], str(held.path), *collection.paths[1:]]
    proc = start_cli("predict", *paths, "--out", str(out), "--model-dir", str(model_dir),
                     "--workers", str(workers))  # fmt: skip
    wait_for(lambda: line_count(out) > MIDWAY or proc.poll() is not None, 120, "rows")
    assert proc.poll() is None, "the run ended before it reached the held photo"
    return proc


def test_resume_after_sigkill_gives_the_same_file(reference_csv, collection, model_dir, tmp_path):
    out = tmp_path / "results.csv"
    args = ("predict", *collection.paths, "--out", str(out), "--model-dir", str(model_dir))
    with held_photo(tmp_path) as held:
        proc = start_held_midway(collection, held, out, model_dir, workers=1)
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as the OOM killer does
        proc.communicate(timeout=30)
    wait_for(lambda: not any(alive(p) for p in workers), 30, "orphaned workers to exit")
    assert MIDWAY < line_count(out) < len(collection.keys) + 1
    again = cli(*args)
    assert again.returncode == 1, again.stderr
    assert "already holds" in again.stderr
    assert out.read_bytes() == reference_csv[0].read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_row_cut_short_is_redone(fmt, reference_jsonl, reference_csv, collection, model_dir,
                                   tmp_path):  # fmt: skip
    reference = (reference_jsonl if fmt == "jsonl" else reference_csv)[0].read_bytes()
    lines = reference.splitlines(keepends=True)
    out = tmp_path / f"results.{fmt}"
    out.write_bytes(b"".join(lines[:50]) + lines[50][: len(lines[50]) // 2])
    run = cli("predict", *collection.paths, "--out", str(out), "--model-dir", str(model_dir))
    assert run.returncode == 1, run.stderr
    assert "cut short" in run.stderr
    assert out.read_bytes() == reference


def test_a_full_disk_stops_with_a_clear_message_and_a_rerun_finishes(
    reference_csv, collection, model_dir, tmp_path
):
    out = tmp_path / "results.csv"
    limit = len(reference_csv[0].read_bytes()) // 3

    def small_disk() -> None:  # writes past `limit` bytes fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = ("predict", *collection.paths, "--out", str(out), "--model-dir", str(model_dir))
    full = cli(*args, preexec_fn=small_disk)
    assert full.returncode == 2
    assert f"cannot write {out}" in full.stderr and "run the same command again" in full.stderr
    assert "Traceback" not in full.stderr
    assert out.stat().st_size <= limit
    again = cli(*args)
    assert again.returncode == 1, again.stderr
    assert out.read_bytes() == reference_csv[0].read_bytes()


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_signal_ends_promptly_with_a_valid_file(
    sig, whole_group, reference_jsonl, collection, model_dir, tmp_path
):
    out = tmp_path / "results.jsonl"
    args = ("predict", *collection.paths, "--out", str(out), "--model-dir", str(model_dir))
    with held_photo(tmp_path) as held:
        proc = start_held_midway(collection, held, out, model_dir, workers=1)
        workers = children(proc.pid)
        if whole_group:  # Ctrl-C in a terminal reaches the whole foreground process group
            kill_group(proc, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped:" in stderr and "Run the same command again to finish." in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert MIDWAY < len(rows) < len(collection.keys)
    assert [r["file"] for r in rows] == collection.keys[: len(rows)]
    wait_for(lambda: not any(alive(p) for p in workers), 30, "the workers to exit")
    again = cli(*args)
    assert again.returncode == 1, again.stderr
    assert out.read_bytes() == reference_jsonl[0].read_bytes()


def test_a_worker_killed_midway_does_not_stop_the_run(reference_jsonl, collection, model_dir,
                                                      tmp_path):  # fmt: skip
    out = tmp_path / "results.jsonl"
    with held_photo(tmp_path) as held:
        proc = start_held_midway(collection, held, out, model_dir, workers=2)
        os.kill(children(proc.pid)[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    rows = out.read_text().splitlines(keepends=True)
    (held_row,) = [r for r in rows if json.loads(r)["file"] == str(held.path)]
    assert json.loads(held_row)["error"]["type"]  # it was read as the empty file it became
    rows.remove(held_row)
    assert "".join(rows).encode() == reference_jsonl[0].read_bytes()


def test_answers_of_another_model_are_not_mixed_into_a_file(reference_csv, collection,
                                                            model_dir, tmp_path):  # fmt: skip
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    model = card(other)
    model["version"] = model["version"] + "-other"
    (other / "model-card.json").write_text(json.dumps(model))
    out = tmp_path / "results.csv"
    shutil.copy(reference_csv[0], out)
    run = cli("predict", *collection.paths, "--out", str(out), "--model-dir", str(other))
    assert run.returncode == 2
    assert card(model_dir)["version"] in run.stderr and model["version"] in run.stderr
    assert out.read_bytes() == reference_csv[0].read_bytes()


# --- progress -----------------------------------------------------------------------------


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(shared_data, model_dir):
    folder = shared_data / "not_penguin" / "val"
    run = cli("predict", str(folder), "--model-dir", str(model_dir), "--progress-every", "0")
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if "photos (" in line]
    assert progress, run.stderr
    assert re.fullmatch(
        r"penguin-api predict: [\d,]+/[\d,]+ photos \(\d+%\), [\d.]+ photos/s, about .+ left",
        progress[0],
    )
    assert "\r" not in run.stderr  # no bar drawn into a log


def test_progress_bar_on_a_terminal(shared_data, model_dir, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    folder = shared_data / "not_penguin" / "val"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = start_cli("predict", str(folder), "--model-dir", str(model_dir), "--out",
                     str(tmp_path / "r.jsonl"), stderr=slave)  # fmt: skip
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        screen += chunk
    proc.wait(timeout=120)
    os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    total = len(read_rows(tmp_path / "r.jsonl"))
    assert f"{total}/{total}" in text and "100%" in text and "photo/s" in text, text


def test_a_reader_that_stops_early_ends_the_run_without_a_traceback(shared_data, model_dir):
    # `penguin-api predict FOLDER | head -1`
    proc = start_cli("predict", str(shared_data / "not_penguin" / "val"), "--model-dir",
                     str(model_dir), "--workers", "1")  # fmt: skip
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert json.loads(first)["file"]
    assert proc.returncode == 2
    assert "standard output was closed" in stderr and "Traceback" not in stderr


def test_answers_below_the_cards_confident_threshold_are_counted_as_not_sure(
    shared_data, model_dir, tmp_path
):
    from tests.server import copy_model_with_thresholds

    # Every confidence is below 1.0, so every species answer is marked uncertain.
    model = copy_model_with_thresholds(tmp_path / "model", model_dir, confident=1.0)
    folder = next(p for p in sorted((shared_data / "penguins" / "val").iterdir()) if p.is_dir())
    out = tmp_path / "r.csv"
    run = cli("predict", str(folder), "--out", str(out), "--model-dir", str(model))
    assert run.returncode == 0, run.stderr
    records = read_rows(out)
    answered = [r for r in records if r["species"]]
    assert answered and all(r["uncertain"] == "true" for r in answered)
    assert all(r["uncertain"] == "" for r in records if not r["species"])
    assert f"not sure (below the model's confidence threshold): {len(answered)}" in run.stderr
