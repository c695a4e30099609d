"""Helpers for driving the upload page in headless Chromium (tests/test_web_browser.py).

Debian's /usr/bin/chromium through Playwright; Playwright's own browser download is never used.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.server import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}  # a small Android phone, in CSS pixels
ANSWER_TIMEOUT_MS = 30_000  # first requests hit cold workers on a shared, busy CPU
PERCENT = r"[<>]?\d{1,3}(?:\.\d)?\s?%"  # "<0.1%" and ">99.9%" at the ends


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium through Playwright; skips the test when either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (run `make browser-deps` as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """What the page reported while a test used it: uncaught exceptions and console errors."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []


def open_page(browser: Any, server: Server, viewport: dict[str, int], **options: Any):
    """A fresh browser context on the upload page, with its problems recorded."""
    context = browser.new_context(viewport=viewport, **options)
    page = context.new_page()
    problems = PageProblems()
    page.on("pageerror", lambda exc: problems.exceptions.append(str(exc)))
    page.on(
        "console",
        lambda msg: problems.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.goto(server.url("/"))
    # The footer shows the model once the page has talked to the service.
    page.wait_for_function(
        "document.getElementById('model-version').textContent.trim() !== '…'",
        timeout=ANSWER_TIMEOUT_MS,
    )
    return context, page, problems


def photos(folder: Path, pattern: str) -> list[Path]:
    """The JPEG photos matching `pattern` under `folder`, in a stable order."""
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in {".jpg", ".jpeg"})


def ask_api(server: Server, path: Path) -> dict[str, Any]:
    """What POST /predict says about one file."""
    with path.open("rb") as fh:
        response = requests.post(
            server.url("/predict"), files={"file": (path.name, fh)}, timeout=30
        )
    response.raise_for_status()
    return response.json()


def percent_of(text: str) -> float:
    """The number in a "93.1%" label, as a fraction."""
    match = re.search(r"(\d{1,3}(?:\.\d)?)\s?%", text)
    assert match, f"no percentage in {text!r}"
    return float(match.group(1)) / 100


def wait_for_state(page: Any, state: str) -> Any:
    """The result region once it shows `state` (penguin | unsure | no-penguin | error)."""
    region = page.locator(f"#result[data-state='{state}']")
    region.wait_for(timeout=ANSWER_TIMEOUT_MS)
    return region
