"""Every error a client can cause: problem+json with a stable type, and no harm done.

A real Gunicorn with small limits; after each bad request the same workers are alive
and a good photo gets exactly the answer it got before.
"""

from __future__ import annotations

import io
import json
import os

import pytest
import requests
from PIL import Image

from penguin_api.errors import PROBLEMS
from tests.server import running_server

LIMITS = {"MAX_UPLOAD_MB": "1", "MAX_IMAGE_PIXELS": "4000000", "MAX_BATCH_FILES": "3"}


@pytest.fixture(scope="module")
def limited(model_dir):
    with running_server(workers=2, model_dir=model_dir, env=LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(limited, small_jpeg):
    """The answer for the sample photo before any bad request was sent."""
    response = requests.post(limited.url("/predict"), files={"file": small_jpeg}, timeout=30)
    assert response.status_code == 200
    return response.json()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def assert_problem(response: requests.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] == PROBLEMS[slug].title
    assert body["detail"] and "Traceback" not in body["detail"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


def assert_no_harm(server, pids, small_jpeg, reference) -> None:
    """Same workers alive, and the good photo still gets the same answer from each."""
    assert sorted(server.worker_pids()) == sorted(pids)
    for _ in range(4):
        again = requests.post(server.url("/predict"), files={"file": small_jpeg}, timeout=30)
        assert again.status_code == 200 and again.json() == reference


def post(server, path="/predict", **kwargs) -> requests.Response:
    return requests.post(server.url(path), timeout=30, **kwargs)


def truncated_jpeg(small_jpeg: bytes) -> bytes:
    return small_jpeg[: len(small_jpeg) // 2]


CASES = {
    "no file field": (
        lambda jpg: post_kwargs(files={"photo": ("a.jpg", jpg)}), 400, "missing-file"),
    "text field named file": (
        lambda jpg: post_kwargs(files={"file": (None, "hello")}), 400, "missing-file"),
    "urlencoded form": (
        lambda jpg: post_kwargs(data={"file": "hello"}), 415, "unsupported-content-type"),
    "empty file": (lambda jpg: post_kwargs(files={"file": ("empty.jpg", b"")}), 400, "empty-file"),
    "two files to /predict": (
        lambda jpg: post_kwargs(files=[("file", ("a.jpg", jpg)), ("file", ("b.jpg", jpg))]),
        400, "too-many-files"),
    "text file": (
        lambda jpg: post_kwargs(files={"file": ("notes.txt", b"just some words")}),
        415, "unsupported-image"),
    "truncated JPEG": (
        lambda jpg: post_kwargs(files={"file": ("cut.jpg", truncated_jpeg(jpg))}),
        415, "unsupported-image"),
    "PPM (decodable, not accepted)": (
        lambda jpg: post_kwargs(files={"file": ("x.ppm", b"P6\n2 2\n255\n" + b"\x80" * 12)}),
        415, "unsupported-image"),
    "JSON body": (lambda jpg: post_kwargs(json={"file": "x"}), 415, "unsupported-content-type"),
    "raw JPEG body": (
        lambda jpg: post_kwargs(data=jpg, headers={"Content-Type": "image/jpeg"}),
        415, "unsupported-content-type"),
    "upload over MAX_UPLOAD_MB": (
        lambda jpg: post_kwargs(files={"file": ("big.jpg", os.urandom(1_600_000))}),
        413, "upload-too-large"),
    "image over MAX_IMAGE_PIXELS": (
        lambda jpg: post_kwargs(files={"file": ("huge.png", png(2500, 2000))}),
        413, "image-too-large"),
    "malformed multipart": (
        lambda jpg: post_kwargs(
            data=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"}),
        400, "missing-file"),
}  # fmt: skip


def post_kwargs(**kwargs):
    return kwargs


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_gets_its_problem_and_worker_survives(limited, reference, small_jpeg, case):
    make, status, slug = CASES[case]
    pids = limited.worker_pids()
    assert_problem(post(limited, **make(small_jpeg)), status, slug)
    assert_no_harm(limited, pids, small_jpeg, reference)


def test_unsupported_image_says_which_formats_are_accepted(limited):
    body = assert_problem(
        post(limited, files={"file": ("notes.txt", b"words")}), 415, "unsupported-image"
    )
    for name in ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF", "HEIC", "AVIF"):
        assert name in body["detail"]


def test_upload_limit_is_named_in_the_413(limited):
    response = post(limited, files={"file": ("big.bin", os.urandom(1_300_000))})
    assert "1 MB" in assert_problem(response, 413, "upload-too-large")["detail"]


def test_form_with_too_many_parts_gets_413_naming_the_part_limit_not_the_size(
    limited, small_jpeg, reference
):
    pids = limited.worker_pids()
    notes = [("note", ("n.txt", b"x", "text/plain"))] * 1200  # a few kB, far under 1 MB
    response = post(limited, files=[("file", ("p.jpg", small_jpeg, "image/jpeg")), *notes])
    detail = assert_problem(response, 413, "too-many-parts")["detail"]
    assert "1,000 parts" in detail and "MB" not in detail
    assert_no_harm(limited, pids, small_jpeg, reference)


def test_large_text_field_within_the_upload_limit_is_not_a_413(limited, small_jpeg, reference):
    # Text fields count towards MAX_UPLOAD_MB only; no smaller limit of its own.
    note = ("note", (None, "x" * 600_000))
    response = post(limited, files=[("file", ("p.jpg", small_jpeg, "image/jpeg")), note])
    assert response.status_code == 200 and response.json() == reference


def test_pixel_limit_is_named_in_the_413(limited):
    body = assert_problem(post(limited, files={"file": png(2500, 2000)}), 413, "image-too-large")
    assert "4,000,000" in body["detail"]


def test_batch_over_the_file_limit_is_refused(limited, small_jpeg, reference):
    pids = limited.worker_pids()
    files = [("file", (f"{i}.jpg", small_jpeg)) for i in range(4)]
    body = assert_problem(post(limited, "/predict/batch", files=files), 400, "too-many-files")
    assert "3" in body["detail"]
    assert_no_harm(limited, pids, small_jpeg, reference)


def test_batch_where_every_file_is_bad_answers_each(limited):
    files = [("file", ("a.txt", b"text")), ("file", ("b.png", png(2500, 2000)))]
    body = post(limited, "/predict/batch", files=files).json()
    assert [r["error"]["status"] for r in body["results"]] == [415, 413]
    assert (body["succeeded"], body["failed"]) == (0, 2)


def test_batch_empty_file_entry_is_a_400_entry(limited, small_jpeg):
    files = [("file", ("ok.jpg", small_jpeg)), ("file", ("empty.jpg", b""))]
    body = post(limited, "/predict/batch", files=files).json()
    assert body["results"][1]["error"]["type"] == "/problems/empty-file"
    assert "species" in body["results"][0]


def test_unknown_path_is_a_json_404(limited):
    assert_problem(requests.get(limited.url("/penguins/all"), timeout=5), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/predict", "OPTIONS, POST"), ("PUT", "/predict/batch", "OPTIONS, POST"),
     ("POST", "/health", "GET, HEAD, OPTIONS"), ("DELETE", "/model", "GET, HEAD, OPTIONS")],
)  # fmt: skip
def test_wrong_method_is_a_json_405_with_allow(limited, method, path, allowed):
    response = requests.request(method, limited.url(path), timeout=5)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["Allow"] == allowed


@pytest.mark.parametrize("slug", sorted(PROBLEMS))
def test_every_problem_type_uri_is_documented(limited, slug):
    response = requests.get(limited.url(f"/problems/{slug}"), timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == PROBLEMS[slug].status


def test_unknown_problem_type_is_a_404(limited):
    assert_problem(requests.get(limited.url("/problems/nope"), timeout=5), 404, "not-found")


def test_many_bad_requests_in_a_row_change_nothing(limited, reference, small_jpeg):
    pids = limited.worker_pids()
    for case in CASES.values():
        make, status, _ = case
        assert post(limited, **make(small_jpeg)).status_code == status
    assert_no_harm(limited, pids, small_jpeg, reference)
    assert json.dumps(reference)  # the reference itself is still a full answer
