"""What operators see: metrics summed over workers, JSON log lines with traces, clean 500s."""

from __future__ import annotations

import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from penguin_api import create_app
from penguin_api.config import Settings
from tests.server import running_server, sample

PROJECT = "penguin-test-project"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def observed(model_dir, tmp_path_factory):
    metrics_dir = tmp_path_factory.mktemp("metrics")
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_server(workers=2, model_dir=model_dir, env=env) as srv:
        srv.metrics_dir = metrics_dir
        yield srv


def metrics_text(server) -> str:
    response = requests.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200
    return response.text


def test_metrics_sum_over_both_workers(observed, small_jpeg):
    before = metrics_text(observed)
    status_key = {"endpoint": "/predict", "method": "POST", "status": "200"}
    count_before = sample(before, "penguin_http_requests_total", **status_key)
    decode_before = sample(before, "penguin_stage_duration_seconds_count", stage="decode")

    def one(_):
        return requests.post(observed.url("/predict"), files={"file": small_jpeg}, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(30)))
    assert all(r.status_code == 200 for r in responses)
    instances = {r.headers["X-Instance-Id"] for r in responses}
    assert len(instances) == 2, "both workers should have answered some of 30 parallel requests"

    after = metrics_text(observed)
    assert sample(after, "penguin_http_requests_total", **status_key) == count_before + 30
    assert sample(after, "penguin_stage_duration_seconds_count", stage="decode") == (
        decode_before + 30
    )
    body = responses[0].json()
    if body["is_penguin"]:
        assert sample(after, "penguin_predictions_total", species=body["species"]) >= 30
    else:
        assert sample(after, "penguin_non_penguin_predictions_total") >= 30
    assert sample(after, "penguin_model_load_duration_seconds_count") == 2  # one per worker


def test_errors_are_counted_by_endpoint_and_status(observed):
    before = sample(metrics_text(observed), "penguin_http_requests_total",
                    endpoint="unmatched", method="GET", status="404")  # fmt: skip
    for _ in range(3):
        requests.get(observed.url("/no-such-thing"), timeout=5)
    after = sample(metrics_text(observed), "penguin_http_requests_total",
                   endpoint="unmatched", method="GET", status="404")  # fmt: skip
    assert after == before + 3


def test_refused_images_are_counted_by_problem(observed):
    text = metrics_text(observed)
    before = sample(text, "penguin_image_errors_total", problem="unsupported-image")
    requests.post(observed.url("/predict"), files={"file": b"not an image"}, timeout=10)
    after = sample(
        metrics_text(observed), "penguin_image_errors_total", problem="unsupported-image"
    )
    assert after == before + 1


def test_every_log_line_is_a_json_object_with_severity_and_message(observed, small_jpeg):
    requests.post(observed.url("/predict"), files={"file": small_jpeg}, timeout=30)
    lines = [line for line in observed.logs().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert record["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert isinstance(record["message"], str)


def test_access_log_line_carries_request_id_and_cloud_trace(observed, small_jpeg):
    headers = {"X-Cloud-Trace-Context": f"{TRACE_ID}/123;o=1", "X-Request-Id": "trace-me-1"}
    response = requests.post(
        observed.url("/predict"), files={"file": small_jpeg}, headers=headers, timeout=30
    )
    assert response.status_code == 200
    observed.wait_for(
        lambda: any(r.get("request_id") == "trace-me-1" for r in observed.log_records()),
        10,
        "access log written",
    )
    line = next(r for r in observed.log_records() if r.get("request_id") == "trace-me-1")
    assert line["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert line["logging.googleapis.com/trace_sampled"] is True
    assert line["httpRequest"]["status"] == 200
    assert line["httpRequest"]["requestMethod"] == "POST"
    assert line["httpRequest"]["requestUrl"] == "/predict"
    assert re.fullmatch(r"\d+\.\d{6}s", line["httpRequest"]["latency"])


def test_w3c_traceparent_is_used_when_there_is_no_cloud_trace_header(observed):
    headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "X-Request-Id": "w3c-1"}
    requests.get(observed.url("/health"), headers=headers, timeout=5)
    observed.wait_for(
        lambda: any(r.get("request_id") == "w3c-1" for r in observed.log_records()), 10, "logged"
    )
    line = next(r for r in observed.log_records() if r.get("request_id") == "w3c-1")
    assert line["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"


def test_a_server_fault_is_a_500_problem_without_traceback_and_logged_with_it(observed):
    # A damaged metrics file is a real fault on the server's side, not the client's.
    broken = observed.metrics_dir / "counter_999999.db"
    broken.write_bytes(b"\x00garbage that is not a metrics file" * 10)
    try:
        response = requests.get(
            observed.url("/metrics"), headers={"X-Request-Id": "fault-1"}, timeout=10
        )
    finally:
        broken.unlink()
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/internal-error" and body["request_id"] == "fault-1"
    assert "Traceback" not in response.text and 'File "' not in response.text
    observed.wait_for(
        lambda: any(
            r.get("request_id") == "fault-1" and "exception" in r for r in observed.log_records()
        ),
        10,
        "fault logged",
    )
    assert requests.get(observed.url("/metrics"), timeout=10).status_code == 200
    assert requests.get(observed.url("/ready"), timeout=5).status_code == 200


def test_unexpected_exception_in_a_view_is_a_clean_500(model_dir):
    app = create_app(Settings(model_dir=model_dir), load_model=False)

    def explode():
        raise RuntimeError("secret internal detail")

    app.add_url_rule("/explode", view_func=explode)
    response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.json["type"] == "/problems/internal-error"
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert response.headers["X-Request-Id"] and response.headers["Server-Timing"]


def test_model_info_names_the_served_model(observed, model_dir):
    card = json.loads((model_dir / "model-card.json").read_text())
    labels = {"name": card["name"], "version": card["version"], "sha256": card["sha256"]}
    assert sample(metrics_text(observed), "penguin_model_info", **labels) == 1


def test_metrics_dir_given_by_the_operator_is_used(observed):
    assert any(observed.metrics_dir.glob("*.db"))


def test_metrics_dir_made_by_the_server_is_removed_on_exit(model_dir):
    with running_server(workers=1, model_dir=model_dir) as srv:
        line = next(r for r in srv.log_records() if "metrics directory" in r["message"])
        path = Path(line["message"].rsplit(" ", 1)[1])
        assert path.is_dir() and any(path.glob("*.db"))
    assert not path.exists()


def test_live_workers_are_counted_and_a_replaced_worker_is_not_counted_twice(model_dir):
    # penguin_workers is the denominator of the busy share the saturation alert reads.
    with running_server(workers=2, model_dir=model_dir) as srv:
        srv.wait_for(lambda: sample(metrics_text(srv), "penguin_workers") == 2, 60, "2 workers")
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        srv.wait_for(
            lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2,
            60,
            "the killed worker replaced",
        )
        srv.wait_for(
            lambda: sample(metrics_text(srv), "penguin_model_load_duration_seconds_count") == 3,
            60,
            "the new worker's model loaded",
        )
        assert sample(metrics_text(srv), "penguin_workers") == 2
