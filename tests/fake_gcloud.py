"""Run the Makefile's deploy targets against a recording fake gcloud, for the deploy tests.

The real CLI cannot reach Google from a test, so tests/fakes/gcloud stands in for it on
PATH: it records every call and answers `describe` from a small script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKES = REPO_ROOT / "tests" / "fakes"

PROJECT = "demo-project"
REGION = "europe-west1"
TAG = "abc123def456"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/penguin-api/penguin-api:{TAG}"
WHERE = [f"--project={PROJECT}", f"--region={REGION}"]
DEFAULT_DEPLOY_FLAGS = [
    f"--image={IMAGE}",
    "--cpu=1",
    "--memory=1Gi",
    "--concurrency=1",
    "--min-instances=0",
    "--max-instances=10",
    "--cpu-boost",
    "--execution-environment=gen2",
    "--timeout=30",
    "--port=8080",
    "--set-env-vars=WEB_CONCURRENCY=1,ORT_INTRA_OP_THREADS=1,TIMEOUT=30",
    "--allow-unauthenticated",
]
# METRICS=gmp (the default): the sidecar's scrape config goes to Secret Manager first, and
# the deploy names two containers; tests answer `projects describe` with METRICS_SCRIPT.
METRICS_SECRET = "penguin-api-run-monitoring"
PROJECT_NUMBER = "123456789012"
METRICS_SCRIPT = [{"match": ["projects", "describe"], "stdout": f"{PROJECT_NUMBER}\n"}]
_IN_PROJECT = f"--project={PROJECT}"
METRICS_SETUP = [
    ["secrets", "describe", METRICS_SECRET, _IN_PROJECT],
    ["secrets", "versions", "access", "latest", f"--secret={METRICS_SECRET}", _IN_PROJECT],
    ["secrets", "versions", "add", METRICS_SECRET, _IN_PROJECT,
     "--data-file=out/run-monitoring.yaml"],
    ["projects", "describe", PROJECT, "--format=value(projectNumber)"],
    ["secrets", "add-iam-policy-binding", METRICS_SECRET, _IN_PROJECT,
     f"--member=serviceAccount:{PROJECT_NUMBER}-compute@developer.gserviceaccount.com",
     "--role=roles/secretmanager.secretAccessor"],
]  # fmt: skip
SIDECAR_IMAGE = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
)
_CONTAINER_FLAGS = ("--image=", "--cpu=", "--memory=", "--port=", "--set-env-vars=")


def with_sidecar(flags: list[str], *service_flags: str) -> list[str]:
    """`flags` of a one-container deploy as gcloud needs them with the metrics sidecar."""
    own = [f for f in flags if f.startswith(_CONTAINER_FLAGS)]
    shared = [f for f in flags if not f.startswith(_CONTAINER_FLAGS)]
    return [
        *shared, *service_flags, "--container=penguin-api", *own,
        "--container=collector", f"--image={SIDECAR_IMAGE}", "--cpu=500m", "--memory=256Mi",
        "--depends-on=penguin-api",
        f"--set-secrets=/etc/rungmp/config.yaml={METRICS_SECRET}:latest",
    ]  # fmt: skip


def containers_of(call: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A deploy call's service flags, and each --container's own flags, by container name."""
    service: list[str] = []
    containers: dict[str, list[str]] = {}
    current = service
    for arg in call:
        if arg.startswith("--container="):
            current = containers.setdefault(arg.split("=", 1)[1], [])
        else:
            current.append(arg)
    return flags_of(service), {name: flags_of(args) for name, args in containers.items()}


# Every deploy test runs the real Makefile.
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

BUILD = ["builds", "submit", f"--project={PROJECT}", f"--tag={IMAGE}", "."]


@dataclass
class MakeRun:
    """What one `make` invocation did: exit code, output, and the gcloud calls it made."""

    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]


def run_make(
    tmp_path: Path,
    *args: str,
    script: list[dict] | None = None,
    extra_path: Path | None = None,
    **variables: str,
) -> MakeRun:
    """Run Makefile targets with the recording gcloud first on PATH and a clean environment.

    `script` holds the fake's answers (see tests/fakes/gcloud); `extra_path` goes first on
    PATH (other fakes); `variables` become `NAME=value` on make's command line.
    """
    log = tmp_path / "gcloud-calls.jsonl"
    log.unlink(missing_ok=True)
    # This interpreter's folder too: the fake's `python3` then starts without shims.
    interpreter = Path(sys.executable).parent
    path = [str(p) for p in (extra_path, FAKES, interpreter) if p is not None]
    env = {
        # A clean environment: a developer's exported CPU or REGION must not leak in.
        "PATH": os.pathsep.join([*path, os.environ["PATH"]]),
        "HOME": str(tmp_path),
        "FAKE_GCLOUD_LOG": str(log),
    }
    if script is not None:
        script_path = tmp_path / "gcloud-script.json"
        script_path.write_text(json.dumps(script))
        env["FAKE_GCLOUD_SCRIPT"] = str(script_path)
    cmd = ["make", "--no-print-directory", *args]
    cmd += [f"{name}={value}" for name, value in variables.items()]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return MakeRun(proc.returncode, proc.stdout, proc.stderr, calls)


def traffic(*rows: tuple[str, int | str, str]) -> list[dict]:
    """A script answering `run services describe` with these (revision, percent, tag) rows."""
    text = "".join(f"{rev}\t{pct}\t{tag}\n" for rev, pct, tag in rows)
    return [{"match": ["run", "services", "describe"], "stdout": text}]


def flags_of(call: list[str]) -> dict[str, str]:
    """--name=value and bare --name flags of one call, as a dict."""
    out = {}
    for arg in call:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            out[name] = value
    return out
