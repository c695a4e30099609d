"""Blue-green on Cloud Run from the Makefile: deploy-candidate, promote, rollback.

Each test runs the real `make` target with a recording fake gcloud on PATH
(tests/fake_gcloud.py); `promote` reads the service's traffic from the fake's scripted
`describe` answer.
"""

from __future__ import annotations

from tests.fake_gcloud import (
    BUILD,
    DEFAULT_DEPLOY_FLAGS,
    METRICS_SCRIPT,
    METRICS_SETUP,
    PROJECT,
    REGION,
    TAG,
    WHERE,
    needs_make,
    traffic,
    with_sidecar,
)

pytestmark = needs_make


# --- blue-green ---------------------------------------------------------------------------


def test_deploy_candidate_creates_a_tagged_revision_that_gets_no_traffic(make) -> None:
    run = make("deploy-candidate", PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG, METRICS="none")
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        BUILD,
        [
            "run",
            "deploy",
            "penguin-api",
            *WHERE,
            *DEFAULT_DEPLOY_FLAGS,
            "--no-traffic",
            "--tag=candidate",
        ],
    ]


def test_a_candidate_gets_the_metrics_sidecar_too(make) -> None:
    run = make(
        "deploy-candidate", script=METRICS_SCRIPT, PROJECT_ID=PROJECT, REGION=REGION, IMAGE_TAG=TAG
    )
    assert run.returncode == 0, run.stderr
    # --no-traffic and --tag are the service's flags: before the containers' own.
    flags = with_sidecar(DEFAULT_DEPLOY_FLAGS, "--no-traffic", "--tag=candidate")
    assert run.calls == [BUILD, *METRICS_SETUP, ["run", "deploy", "penguin-api", *WHERE, *flags]]


def test_promote_tags_the_serving_revision_previous_then_moves_all_traffic(make) -> None:
    script = traffic(
        ("penguin-api-00007-abc", 100, ""),
        ("penguin-api-00006-xyz", "", "previous"),
        ("penguin-api-00008-new", "", "candidate"),
    )
    run = make("promote", script=script, PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    describe, *changes = run.calls
    assert describe[:4] == ["run", "services", "describe", "penguin-api"]
    update = ["run", "services", "update-traffic", "penguin-api", *WHERE]
    assert changes == [
        [*update, "--update-tags=previous=penguin-api-00007-abc"],
        [*update, "--to-tags=candidate=100"],
    ]


def test_promote_in_steps_raises_the_candidate_share_in_order(make) -> None:
    script = traffic(("penguin-api-00007-abc", 100, ""), ("penguin-api-00008-new", "", "candidate"))
    run = make(
        "promote",
        script=script,
        PROJECT_ID=PROJECT,
        REGION=REGION,
        STEPS="10 50 100",
        STEP_WAIT="0",
    )
    assert run.returncode == 0, run.stderr
    moves = [c[-1] for c in run.calls if c[:3] == ["run", "services", "update-traffic"]]
    assert moves == [
        "--update-tags=previous=penguin-api-00007-abc",
        "--to-tags=candidate=10",
        "--to-tags=candidate=50",
        "--to-tags=candidate=100",
    ]


def test_resumed_promote_keeps_the_old_revision_as_previous(make) -> None:
    # Half-way through a stepped promotion the candidate already serves more than the old one.
    script = traffic(
        ("penguin-api-00007-abc", 30, ""),
        ("penguin-api-00008-new", 70, ""),
        ("penguin-api-00008-new", "", "candidate"),
    )
    run = make("promote", script=script, PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    assert run.calls[1][-1] == "--update-tags=previous=penguin-api-00007-abc"


def test_promote_without_a_candidate_changes_no_traffic(make) -> None:
    script = traffic(("penguin-api-00007-abc", 100, ""))
    run = make("promote", script=script, PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode != 0
    assert "make deploy-candidate first" in run.stderr
    assert [c[:3] for c in run.calls] == [["run", "services", "describe"]]


def test_rollback_sends_all_traffic_to_the_revision_promote_replaced(make) -> None:
    run = make("rollback", PROJECT_ID=PROJECT, REGION=REGION)
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        ["run", "services", "update-traffic", "penguin-api", *WHERE, "--to-tags=previous=100"]
    ]


def test_rollback_to_a_named_revision(make) -> None:
    run = make("rollback", PROJECT_ID=PROJECT, REGION=REGION, REVISION="penguin-api-00003-old")
    assert run.returncode == 0, run.stderr
    assert run.calls == [
        [
            "run",
            "services",
            "update-traffic",
            "penguin-api",
            *WHERE,
            "--to-revisions=penguin-api-00003-old=100",
        ]
    ]
