"""The API as a client sees it: real Gunicorn (2 workers), real HTTP, the shipped model."""

from __future__ import annotations

import io
import json
import re

import pytest
import requests
from PIL import Image

from tests.server import CARD_FILE

TIMING = re.compile(r"^(\w+;dur=\d+(\.\d+)?)(, \w+;dur=\d+(\.\d+)?)*$")


def post_photo(server, data: bytes, name: str = "photo.jpg", **kwargs) -> requests.Response:
    return requests.post(server.url("/predict"), files={"file": (name, data)}, timeout=30, **kwargs)


def timings(response: requests.Response) -> dict[str, float]:
    header = response.headers["Server-Timing"]
    assert TIMING.match(header), header
    return {part.split(";")[0]: float(part.split("=")[1]) for part in header.split(", ")}


def test_predict_answers_species_and_confidence_at_the_top_level(server, small_jpeg, model_dir):
    response = post_photo(server, small_jpeg)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert list(body) == [
        "species", "confidence", "uncertain", "is_penguin", "penguin_score", "top_k", "model",
    ]  # fmt: skip
    assert body["model"] == {"name": card["name"], "version": card["version"]}
    assert len(body["top_k"]) == min(3, len(card["labels"]))
    assert body["is_penguin"] == (body["species"] is not None)
    assert (body["confidence"] is None) == (body["species"] is None)


def test_a_real_penguin_photo_gets_a_species(server, penguin_photo, model_dir):
    response = post_photo(server, penguin_photo.read_bytes(), penguin_photo.name)
    body = response.json()
    assert response.status_code == 200
    assert body["is_penguin"] is True
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert body["species"] in card["labels"]
    assert 0 < body["confidence"] <= 1
    # The shipped card decides: without thresholds.confident no answer is uncertain.
    threshold = card["thresholds"].get("confident")
    assert body["uncertain"] is (threshold is not None and body["confidence"] < threshold)


def test_a_photo_without_penguins_says_so_plainly(server, shared_data):
    photos = sorted((shared_data / "not_penguin" / "val").glob("*.jp*g"))[:8]
    if not photos:
        pytest.skip("no not_penguin photos in the shared validation split")
    answers = [post_photo(server, p.read_bytes(), p.name).json() for p in photos]
    refused = [a for a in answers if a["is_penguin"] is False]
    assert refused, "the gate let every non-penguin photo through"
    for answer in refused:
        assert answer["species"] is None and answer["confidence"] is None
        assert answer["uncertain"] is None, "no species answer, nothing to be unsure of"
        assert answer["top_k"], "best guesses are listed even without a penguin"


def test_same_photo_same_answer_from_either_worker(server, small_jpeg):
    answers = {json.dumps(post_photo(server, small_jpeg).json(), sort_keys=True) for _ in range(6)}
    assert len(answers) == 1


def test_batch_answers_each_file_in_order_and_a_bad_file_gets_its_own_error(server, small_jpeg):
    other = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 200, 30)).save(other, "PNG")
    files = [
        ("file", ("first.jpg", small_jpeg, "image/jpeg")),
        ("file", ("broken.jpg", small_jpeg[: len(small_jpeg) // 3], "image/jpeg")),
        ("file", ("second.png", other.getvalue(), "image/png")),
    ]
    response = requests.post(server.url("/predict/batch"), files=files, timeout=30)
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [r["filename"] for r in results] == ["first.jpg", "broken.jpg", "second.png"]
    assert (body["succeeded"], body["failed"]) == (2, 1)
    assert results[1]["error"]["status"] == 415
    assert results[1]["error"]["type"] == "/problems/unsupported-image"
    single = post_photo(server, small_jpeg).json()
    assert {k: v for k, v in results[0].items() if k != "filename"} == single
    assert "error" not in results[2] and "species" in results[2]
    assert set(timings(response)) == {"decode", "infer", "total"}


def test_batch_of_one_equals_predict(server, small_jpeg):
    files = [("file", ("only.jpg", small_jpeg))]
    batch = requests.post(server.url("/predict/batch"), files=files, timeout=30).json()
    assert batch["results"][0] == {"filename": "only.jpg", **post_photo(server, small_jpeg).json()}


def test_health_answers_ok(server):
    response = requests.get(server.url("/health"), timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_ready_names_the_model(server, model_dir):
    card = json.loads((model_dir / CARD_FILE).read_text())
    response = requests.get(server.url("/ready"), timeout=5)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "model": {"name": card["name"], "version": card["version"]},
    }


def test_model_endpoint_serves_the_shipped_card(server, model_dir):
    response = requests.get(server.url("/model"), timeout=5)
    assert response.status_code == 200
    assert response.json() == json.loads((model_dir / CARD_FILE).read_text())


def test_metrics_are_prometheus_text(server, small_jpeg):
    post_photo(server, small_jpeg)
    response = requests.get(server.url("/metrics"), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    for name in (
        "penguin_http_requests_total",
        "penguin_http_request_duration_seconds_bucket",
        "penguin_stage_duration_seconds_bucket",
        "penguin_model_load_duration_seconds_count",
        "penguin_model_info",
    ):
        assert name in response.text


def test_openapi_document_describes_every_endpoint(server):
    response = requests.get(server.url("/openapi.json"), timeout=5)
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    expected = {
        ("/predict", "post"), ("/predict/batch", "post"), ("/health", "get"),
        ("/ready", "get"), ("/model", "get"), ("/metrics", "get"),
        ("/openapi.json", "get"), ("/", "get"), ("/problems/{slug}", "get"),
    }  # fmt: skip
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == expected


def test_upload_page_is_served_at_the_root(server):
    response = requests.get(server.url("/"), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/ready"), ("GET", "/model"), ("GET", "/metrics"),
     ("GET", "/openapi.json"), ("GET", "/"), ("GET", "/no/such/page"), ("DELETE", "/predict"),
     ("POST", "/predict")],
)  # fmt: skip
def test_every_response_carries_request_id_timing_and_instance(server, method, path):
    response = requests.request(method, server.url(path), timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert "total" in timings(response)
    assert response.headers["X-Instance-Id"]


def test_prediction_timing_has_decode_infer_and_total(server, small_jpeg):
    stages = timings(post_photo(server, small_jpeg))
    assert set(stages) == {"decode", "infer", "total"}
    assert stages["total"] >= stages["decode"] + stages["infer"] - 0.2


def test_callers_request_id_is_echoed_and_a_bad_one_replaced(server, small_jpeg):
    mine = post_photo(server, small_jpeg, headers={"X-Request-Id": "client-42.retry:1"})
    assert mine.headers["X-Request-Id"] == "client-42.retry:1"
    bad = requests.get(server.url("/health"), headers={"X-Request-Id": "a b\tc"}, timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-Id"])
    problem = requests.get(server.url("/nope"), headers={"X-Request-Id": "abc-1"}, timeout=5)
    assert problem.headers["X-Request-Id"] == "abc-1"
    assert problem.json()["request_id"] == "abc-1"


def test_instance_id_is_one_per_worker_and_stable(server, small_jpeg):
    by_instance: dict[str, int] = {}
    for _ in range(40):
        instance = requests.get(server.url("/health"), timeout=5).headers["X-Instance-Id"]
        by_instance[instance] = by_instance.get(instance, 0) + 1
    assert 1 <= len(by_instance) <= 2  # two workers, never more ids than workers
    pids = {int(i.rsplit("-", 1)[1]) for i in by_instance}
    assert pids <= set(server.worker_pids())
