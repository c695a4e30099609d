"""/openapi.json tells the truth: real answers, errors included, match its schemas."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def schema(server):
    doc = requests.get(server.url("/openapi.json"), timeout=5).json()
    return schemathesis.openapi.from_dict(doc)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (240, 240), (10, 80, 160)).save(buf, "PNG")
    return buf.getvalue()


def _requests(small_jpeg: bytes):
    """(path template, method, kwargs for requests) covering answers and errors."""
    photo = {"file": ("p.jpg", small_jpeg, "image/jpeg")}
    return [
        ("/predict", "POST", {"files": photo}),
        ("/predict", "POST", {"files": {"other": ("p.jpg", small_jpeg)}}),
        ("/predict", "POST", {"files": {"file": ("e.jpg", b"")}}),
        ("/predict", "POST", {"files": {"file": ("t.txt", b"text")}}),
        ("/predict", "POST", {"json": {"file": 1}}),
        ("/predict/batch", "POST", {"files": [("file", ("a.jpg", small_jpeg)),
                                              ("file", ("b.png", _png())),
                                              ("file", ("c.txt", b"text"))]}),
        ("/predict/batch", "POST", {"data": {"x": "1"}}),
        ("/health", "GET", {}),
        ("/ready", "GET", {}),
        ("/model", "GET", {}),
        ("/metrics", "GET", {}),
        ("/openapi.json", "GET", {}),
        ("/", "GET", {}),
        ("/problems/{slug}", "GET", {"slug": "not-ready"}),
        ("/problems/{slug}", "GET", {"slug": "no-such-problem"}),
    ]  # fmt: skip


def test_every_answer_matches_its_documented_schema(server, schema, small_jpeg):
    checked = set()
    for template, method, kwargs in _requests(small_jpeg):
        path = template.replace("{slug}", kwargs.pop("slug", ""))
        response = requests.request(method, server.url(path), timeout=30, **kwargs)
        operation = schema[template][method]
        operation.validate_response(response)
        checked.add((template, method, response.status_code))
    statuses = {status for _, _, status in checked}
    assert {200, 400, 404, 415} <= statuses


def test_every_documented_response_carries_the_common_headers(schema):
    for path, methods in schema.raw_schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response.get("headers", {}), (path, method, status)


def test_every_route_of_the_app_is_documented(server, schema):
    from penguin_api import create_app
    from penguin_api.config import Settings

    app = create_app(Settings(), load_model=False)
    documented = set(schema.raw_schema["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "web.static"):
            continue
        path = rule.rule.replace("<slug>", "{slug}")
        assert path in documented, f"{path} is served but not in /openapi.json"
