"""Schemathesis against GET /openapi.json on a live server: no 5xx, every answer as documented.

Schemathesis reads the service's own OpenAPI document (built by penguin_api.openapi when
the tests are collected; the first test checks that the live server serves exactly that
document) and generates requests for every operation, valid and invalid: wrong types,
missing fields, random bytes as images. Each answer must not be a server error and must
match the document: status code, content type, headers and body schema.
``SCHEMA_EXAMPLES=<n>`` sets the examples per operation (``make fuzz`` raises it).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from penguin_api.openapi import document
from tests.server import Server

EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest):
    """Count answers by status over the module and print them at the end."""
    counts: Counter = Counter()
    yield counts
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        total = sum(counts.values())
        print(f"\nschemathesis: {total} cases, answers by status {dict(sorted(counts.items()))}")


def test_live_server_serves_the_document_under_test(server: Server) -> None:
    response = requests.get(server.url("/openapi.json"), timeout=30)
    assert response.status_code == 200
    assert response.json() == document()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_answer_matches_the_openapi_document(
    case: schemathesis.Case, server: Server, tally: Counter
) -> None:
    response = case.call_and_validate(base_url=server.base_url, checks=CHECKS, timeout=60)
    tally[response.status_code] += 1
