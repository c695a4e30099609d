"""The Makefile's batch targets: the exact gcloud calls (recording fake gcloud, as the deploy
tests), and batch-merge for real on parts written by real tasks."""

from __future__ import annotations

import sys

from tests.batch_support import cli, cli_env, read_rows
from tests.fake_gcloud import BUILD, IMAGE, PROJECT, REGION, TAG, WHERE, flags_of, needs_make

pytestmark = needs_make

INPUT, OUTPUT = "gs://survey-2026/photos", "gs://survey-2026/results"
PREDICT = f"--args=-m,penguin_api.cli,predict,{INPUT},--out,{OUTPUT}"


def test_batch_job_builds_deploys_the_job_and_runs_it_to_the_end(make) -> None:
    run = make("batch-job", PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG, INPUT=INPUT,
               OUTPUT=OUTPUT, TASKS="20")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        BUILD,
        ["run", "jobs", "deploy", "penguin-batch", *WHERE, f"--image={IMAGE}", "--tasks=20",
         "--parallelism=20", "--task-timeout=3600s", "--max-retries=3", "--cpu=1",
         "--memory=1Gi", "--command=python", PREDICT],
        ["run", "jobs", "execute", "penguin-batch", *WHERE, "--wait"],
    ]  # fmt: skip


def test_every_job_setting_follows_its_make_variable(make) -> None:
    run = make("batch-job", PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG, INPUT=INPUT,
               OUTPUT=OUTPUT, JOB="survey", TASKS="50", PARALLELISM="10", CPU="4",
               MEMORY="4Gi", TASK_TIMEOUT="2h", MAX_RETRIES="1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    deploy = run.calls[1]
    assert deploy[:4] == ["run", "jobs", "deploy", "survey"]
    assert flags_of(deploy) == {
        "project": PROJECT, "region": REGION, "image": IMAGE, "tasks": "50",
        "parallelism": "10", "task-timeout": "2h", "max-retries": "1", "cpu": "4",
        "memory": "4Gi", "command": "python", "args": PREDICT.removeprefix("--args="),
    }  # fmt: skip
    assert run.calls[2] == ["run", "jobs", "execute", "survey", *WHERE, "--wait"]


def test_batch_job_without_buckets_or_project_stops_before_calling_gcloud(make) -> None:
    for variables, message in (
        ({"INPUT": INPUT, "OUTPUT": OUTPUT}, "PROJECT_ID is not set"),
        ({"PROJECT_ID": PROJECT, "OUTPUT": OUTPUT}, "INPUT must be gs://bucket/prefix"),
        ({"PROJECT_ID": PROJECT, "INPUT": INPUT, "OUTPUT": "results"},
         "OUTPUT must be gs://bucket/folder"),
    ):  # fmt: skip
        run = make("batch-job", IMAGE_TAG=TAG, **variables)
        assert run.returncode != 0
        assert message in run.stderr
        assert run.calls == []


def test_batch_status_and_logs_ask_about_the_job(make) -> None:
    status = make("batch-status", PROJECT_ID=PROJECT, REGION=REGION, JOB="survey")
    assert status.returncode == 0, status.stderr
    assert status.calls == [
        ["run", "jobs", "executions", "list", "--job=survey", *WHERE, "--limit=5"]
    ]
    logs = make("batch-logs", PROJECT_ID=PROJECT, REGION=REGION, JOB="survey", LOG_LIMIT="50")
    assert logs.returncode == 0, logs.stderr
    assert logs.calls == [["run", "jobs", "logs", "read", "survey", *WHERE, "--limit=50"]]


def test_batch_merge_joins_parts_that_real_tasks_wrote(make, shared_data, model_dir, tmp_path):
    parts = tmp_path / "results"
    folder = str(shared_data / "not_penguin" / "val")
    for index in range(2):
        part = parts / f"part-{index:05d}-of-00002.jsonl"
        env = cli_env(CLOUD_RUN_TASK_INDEX=str(index), CLOUD_RUN_TASK_COUNT="2")
        run = cli("predict", folder, "--out", str(part), "--model-dir", str(model_dir), env=env)
        assert run.returncode == 0, run.stderr
    merged = tmp_path / "merged.csv"
    run = make("batch-merge", PYTHON=sys.executable, OUTPUT=str(parts), MERGED=str(merged))
    assert run.returncode == 0, run.stderr
    whole = cli("predict", folder, "--out", str(tmp_path / "one-run.csv"), "--model-dir",
                str(model_dir))  # fmt: skip
    assert merged.read_text() == (tmp_path / "one-run.csv").read_text()
    assert len(read_rows(merged)) > 0

    (parts / "part-00001-of-00002.jsonl").unlink()
    run = make("batch-merge", PYTHON=sys.executable, OUTPUT=str(parts), MERGED=str(merged))
    assert run.returncode != 0
    assert "part-00001-of-00002.jsonl" in run.stderr
    assert whole.returncode == 0
