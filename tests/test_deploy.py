"""The Makefile's Cloud Run targets issue exactly the right gcloud calls.

Each test runs the real `make` target with a recording fake gcloud on PATH
(tests/fake_gcloud.py) and compares the recorded calls with what a Cloud Run user needs.
Blue-green (deploy-candidate, promote, rollback) is in test_deploy_bluegreen.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fake_gcloud import (
    BUILD,
    DEFAULT_DEPLOY_FLAGS,
    FAKES,
    IMAGE,
    METRICS_SCRIPT,
    METRICS_SECRET,
    METRICS_SETUP,
    PROJECT,
    REGION,
    REPO_ROOT,
    SIDECAR_IMAGE,
    TAG,
    WHERE,
    containers_of,
    flags_of,
    needs_make,
    with_sidecar,
)

pytestmark = needs_make


# --- deploy -----------------------------------------------------------------------------


def deploy_call(calls: list[list[str]]) -> list[str]:
    """The `gcloud run deploy` among a run's calls."""
    return next(c for c in calls if c[:2] == ["run", "deploy"])


def test_deploy_builds_the_commit_image_then_deploys_it_with_every_setting(make) -> None:
    run = make("deploy", script=METRICS_SCRIPT, PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG)
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        BUILD,
        *METRICS_SETUP,
        ["run", "deploy", "penguin-api", *WHERE, *with_sidecar(DEFAULT_DEPLOY_FLAGS)],
        ["run", "services", "update-traffic", "penguin-api", *WHERE, "--to-latest"],
    ]


def test_metrics_none_deploys_the_service_alone(make) -> None:
    run = make("deploy", PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG, METRICS="none")
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        BUILD,
        ["run", "deploy", "penguin-api", *WHERE, *DEFAULT_DEPLOY_FLAGS],
        ["run", "services", "update-traffic", "penguin-api", *WHERE, "--to-latest"],
    ]


def test_every_deploy_setting_follows_its_make_variable(make) -> None:
    run = make(
        "deploy",
        PROJECT_ID=PROJECT,
        REGION=REGION,
        IMAGE_TAG=TAG,
        SERVICE="penguins-eu",
        CPU="2",
        MEMORY="2Gi",
        WORKERS="2",
        ORT_THREADS="1",
        MIN_INSTANCES="1",
        MAX_INSTANCES="4",
        CPU_BOOST="false",
        EXECUTION_ENV="gen1",
        REQUEST_TIMEOUT="60",
        CONTAINER_PORT="9000",
        PUBLIC="false",
        ENV_VARS="LOG_LEVEL=DEBUG",
        METRICS="none",
    )
    assert run.returncode == 0, run.stderr
    assert run.calls[1] == [
        "run",
        "deploy",
        "penguins-eu",
        *WHERE,
        f"--image={IMAGE}",
        "--cpu=2",
        "--memory=2Gi",
        # concurrency follows the worker count unless set on its own
        "--concurrency=2",
        "--min-instances=1",
        "--max-instances=4",
        "--no-cpu-boost",
        "--execution-environment=gen1",
        "--timeout=60",
        "--port=9000",
        "--set-env-vars=WEB_CONCURRENCY=2,ORT_INTRA_OP_THREADS=1,TIMEOUT=60,LOG_LEVEL=DEBUG",
        "--no-allow-unauthenticated",
    ]


def test_concurrency_can_be_set_apart_from_workers(make) -> None:
    run = make("deploy", PROJECT_ID=PROJECT, IMAGE_TAG=TAG, WORKERS="2", CONCURRENCY="3")
    assert run.returncode == 0, run.stderr
    service, containers = containers_of(deploy_call(run.calls))
    assert service["concurrency"] == "3"
    assert containers["penguin-api"]["set-env-vars"].startswith("WEB_CONCURRENCY=2,")


def test_image_is_tagged_with_the_git_commit_by_default(make) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        pytest.skip("not a git checkout")
    run = make("deploy", PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    image = flags_of(run.calls[0])["tag"]
    repo, _, tag = image.rpartition(":")
    assert repo == f"{REGION}-docker.pkg.dev/{PROJECT}/penguin-api/penguin-api"
    assert tag in (commit.stdout.strip(), commit.stdout.strip() + "-dirty")
    assert containers_of(deploy_call(run.calls))[1]["penguin-api"]["image"] == image


def test_deploy_without_project_id_stops_before_calling_gcloud(make) -> None:
    run = make("deploy", IMAGE_TAG=TAG)
    assert run.returncode != 0
    assert "PROJECT_ID is not set" in run.stderr
    assert run.calls == []


def test_a_setting_that_is_not_true_or_false_is_refused(make) -> None:
    run = make("deploy", PROJECT_ID=PROJECT, IMAGE_TAG=TAG, PUBLIC="yes")
    assert run.returncode != 0
    assert "PUBLIC=yes: must be true or false" in run.stderr
    assert run.calls == []


def test_an_unknown_metrics_choice_is_refused(make) -> None:
    run = make("deploy", PROJECT_ID=PROJECT, IMAGE_TAG=TAG, METRICS="prometheus")
    assert run.returncode != 0
    assert "METRICS=prometheus: must be gmp or none" in run.stderr
    assert run.calls == []


# --- the metrics sidecar's scrape config ---------------------------------------------------


def test_metrics_config_creates_the_secret_when_the_project_has_none(make) -> None:
    script = [{"match": ["secrets", "describe"], "exit": 1}, *METRICS_SCRIPT]
    run = make("metrics-config", script=script, PROJECT_ID=PROJECT)
    assert run.returncode == 0, run.stderr
    create = ["secrets", "create", METRICS_SECRET, f"--project={PROJECT}"]
    assert run.calls == [
        METRICS_SETUP[0],
        [*create, "--replication-policy=automatic"],
        *METRICS_SETUP[1:],
    ]


def test_metrics_config_adds_a_version_only_when_the_config_changed(make) -> None:
    # The secret's latest version already holds this config (for port 9000).
    first = make("metrics-config", script=METRICS_SCRIPT, PROJECT_ID=PROJECT, CONTAINER_PORT="9000")
    rendered = (REPO_ROOT / "out" / "run-monitoring.yaml").read_text()
    script = [
        {"match": ["secrets", "versions", "access"], "stdout": rendered},
        *METRICS_SCRIPT,
    ]
    again = make("metrics-config", script=script, PROJECT_ID=PROJECT, CONTAINER_PORT="9000")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert ["secrets", "versions", "add"] in [c[:3] for c in first.calls]
    assert ["secrets", "versions", "add"] not in [c[:3] for c in again.calls]
    config = yaml.safe_load(rendered)
    assert config["kind"] == "RunMonitoring"
    assert config["spec"]["endpoints"][0]["port"] == 9000  # the service's CONTAINER_PORT
    assert config["spec"]["endpoints"][0]["path"] == "/metrics"


def test_metrics_config_lets_a_named_runtime_account_read_the_secret(make) -> None:
    account = "penguins@demo-project.iam.gserviceaccount.com"
    run = make("metrics-config", PROJECT_ID=PROJECT, RUNTIME_SA=account)
    assert run.returncode == 0, run.stderr
    assert ["projects", "describe"] not in [c[:2] for c in run.calls]
    assert run.calls[-1] == [
        "secrets",
        "add-iam-policy-binding",
        METRICS_SECRET,
        f"--project={PROJECT}",
        f"--member=serviceAccount:{account}",
        "--role=roles/secretmanager.secretAccessor",
    ]


def test_a_failed_cloud_build_deploys_nothing(make) -> None:
    script = [{"match": ["builds", "submit"], "stderr": "BUILD FAILURE\n", "exit": 1}]
    run = make("deploy", script=script, PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG)
    assert run.returncode != 0
    assert run.calls == [BUILD]


def test_registry_creates_the_docker_repository_in_the_region(make) -> None:
    run = make("registry", PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        [
            "artifacts",
            "repositories",
            "create",
            "penguin-api",
            f"--project={PROJECT}",
            f"--location={REGION}",
            "--repository-format=docker",
        ]
    ]


# --- url, logs, manifest ------------------------------------------------------------------


def test_url_prints_the_service_url(make) -> None:
    script = [
        {"match": ["run", "services", "describe"], "stdout": "https://penguin-api-x.a.run.app\n"}
    ]
    run = make("url", script=script, PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "https://penguin-api-x.a.run.app"
    assert run.calls == [
        ["run", "services", "describe", "penguin-api", *WHERE, "--format=value(status.url)"]
    ]


def test_url_of_a_tag_filters_the_traffic_targets(make) -> None:
    run = make("url", PROJECT_ID=PROJECT, REGION=REGION, TAG="candidate")
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        [
            "run",
            "services",
            "describe",
            "penguin-api",
            *WHERE,
            "--flatten=status.traffic",
            "--filter=status.traffic.tag=candidate",
            "--format=value(status.traffic.url)",
        ]
    ]


def test_logs_reads_the_latest_service_logs(make) -> None:
    run = make("logs", PROJECT_ID=PROJECT, REGION=REGION, LOG_LIMIT="20")
    assert run.returncode == 0, run.stderr
    assert run.calls == [["run", "services", "logs", "read", "penguin-api", *WHERE, "--limit=20"]]


def test_deploy_yaml_replaces_the_service_with_this_commits_image(make) -> None:
    run = make(
        "deploy-yaml", script=METRICS_SCRIPT, PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG
    )
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        BUILD,
        *METRICS_SETUP,
        ["run", "services", "replace", "out/service.yaml", *WHERE],
        [
            "run",
            "services",
            "add-iam-policy-binding",
            "penguin-api",
            *WHERE,
            "--member=allUsers",
            "--role=roles/run.invoker",
        ],
    ]
    rendered = yaml.safe_load((REPO_ROOT / "out" / "service.yaml").read_text())
    app, sidecar = rendered["spec"]["template"]["spec"]["containers"]
    assert (app["image"], sidecar["image"]) == (IMAGE, SIDECAR_IMAGE)


def test_service_yaml_describes_the_same_service_as_make_deploy(make) -> None:
    run = make("deploy", script=METRICS_SCRIPT, PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG)
    call = deploy_call(run.calls)
    deployed, containers = containers_of(call)
    manifest = yaml.safe_load((REPO_ROOT / "service.yaml").read_text())
    template = manifest["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    container, sidecar = template["spec"]["containers"]
    app = containers[container["name"]]
    deployed.update(app)  # the service's flags and its container's, as for one container
    env = ",".join(f"{e['name']}={e['value']}" for e in container["env"])

    assert manifest["metadata"]["name"] == call[2]
    assert container["resources"]["limits"] == {
        "cpu": deployed["cpu"],
        "memory": deployed["memory"],
    }
    assert str(template["spec"]["containerConcurrency"]) == deployed["concurrency"]
    assert str(template["spec"]["timeoutSeconds"]) == deployed["timeout"]
    assert annotations["autoscaling.knative.dev/minScale"] == deployed["min-instances"]
    assert annotations["autoscaling.knative.dev/maxScale"] == deployed["max-instances"]
    run_annotations = {k.split("/")[1]: v for k, v in annotations.items() if k.startswith("run.")}
    assert run_annotations["startup-cpu-boost"] == str("cpu-boost" in deployed).lower()
    assert run_annotations["execution-environment"] == deployed["execution-environment"]
    assert str(container["ports"][0]["containerPort"]) == deployed["port"]
    assert env == deployed["set-env-vars"]
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"

    # The metrics sidecar: the same image, share of the instance, start order and config.
    collector = containers[sidecar["name"]]
    assert sidecar["image"] == collector["image"]
    assert sidecar["resources"]["limits"] == {
        "cpu": collector["cpu"],
        "memory": collector["memory"],
    }
    dependencies = json.loads(annotations["run.googleapis.com/container-dependencies"])
    assert dependencies == {sidecar["name"]: collector["depends-on"].split(",")}
    (mount,) = sidecar["volumeMounts"]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    (item,) = volume["secret"]["items"]
    secret_path = f"{mount['mountPath']}/{item['path']}"
    assert (
        collector["set-secrets"] == f"{secret_path}={volume['secret']['secretName']}:{item['key']}"
    )


# --- local container targets -----------------------------------------------------------------


def test_docker_run_builds_then_runs_with_the_chosen_engine_base_and_limits(
    make, tmp_path: Path
) -> None:
    # The recording fake answers to any name: here it plays podman.
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    (engine_dir / "podman").symlink_to(FAKES / "gcloud")
    run = make(
        "docker-run",
        extra_path=engine_dir,
        CONTAINER="podman",
        IMAGE_TAG=TAG,
        BASE_IMAGE="localhost/python:3.11-slim-local",
        BUILD_FLAGS="--network=host",
        PORT="18080",
    )
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        [
            "build",
            "--network=host",
            "--build-arg",
            "BASE_IMAGE=localhost/python:3.11-slim-local",
            "-t",
            f"penguin-api:{TAG}",
            "-t",
            "penguin-api:latest",
            ".",
        ],
        [
            "run",
            "--rm",
            "-p",
            "18080:8080",
            "-e",
            "PORT=8080",
            "-e",
            "WEB_CONCURRENCY=1",
            "-e",
            "ORT_INTRA_OP_THREADS=1",
            "--cpus",
            "1",
            "--memory",
            "1g",
            f"penguin-api:{TAG}",
        ],
    ]
