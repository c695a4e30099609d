"""The upload page over plain HTTP: security headers, static files, markup a screen reader needs.

These need no browser; tests/test_web_browser.py drives the page in Chromium.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import requests

from tests.server import Server


class _Markup(HTMLParser):
    """Collects the tags of a page with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


@pytest.fixture(scope="module")
def page(server: Server) -> requests.Response:
    """GET / from the running service."""
    response = requests.get(server.url("/"), timeout=10)
    assert response.status_code == 200
    return response


@pytest.fixture(scope="module")
def markup(page: requests.Response) -> _Markup:
    parser = _Markup()
    parser.feed(page.text)
    return parser


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


def test_page_is_html_with_a_same_origin_only_content_security_policy(page):
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    policy = _directives(page.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    for sources in policy.values():
        assert set(sources) <= {"'self'", "'none'"}, policy  # no inline, eval, data: or hosts


def test_page_has_no_inline_script_or_style_and_loads_only_its_own_files(markup, page):
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page.text, re.IGNORECASE)
    scripts = markup.find("script")
    assert scripts and all(s.get("src", "").startswith("/") for s in scripts)
    links = [*markup.find("link", rel="stylesheet"), *markup.find("link", rel="icon")]
    assert len(links) == 2 and all(link["href"].startswith("/") for link in links)
    assert "http://" not in page.text and "https://" not in page.text


def test_static_files_are_served_with_their_types_and_nosniff(markup, server):
    expected = {"script": "text/javascript", "stylesheet": "text/css", "icon": "image/svg+xml"}
    refs = {
        "script": markup.find("script")[0]["src"],
        "stylesheet": markup.find("link", rel="stylesheet")[0]["href"],
        "icon": markup.find("link", rel="icon")[0]["href"],
    }
    for kind, ref in refs.items():
        response = requests.get(server.url(ref), timeout=10)
        assert response.status_code == 200, ref
        assert response.headers["Content-Type"].startswith(expected[kind]), ref
        assert response.headers["X-Content-Type-Options"] == "nosniff", ref


def test_file_input_is_labelled_and_the_result_region_is_live(markup):
    (file_input,) = markup.find("input", type="file")
    assert file_input["name"] == "file"
    assert markup.find("label", **{"for": file_input["id"]})
    (region,) = markup.find("section", id="result")
    assert region["aria-live"] == "polite"


def test_form_posts_the_photo_to_predict_without_javascript(markup):
    (form,) = markup.find("form")
    assert form["action"] == "/predict"
    assert form["method"] == "post"
    assert form["enctype"] == "multipart/form-data"
