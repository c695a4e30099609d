"""`make page-screenshot`: the README's picture of the page comes from a real run.

scripts/page_screenshot.py serves the shipped model, uploads a real photo in headless
Chromium and saves the page; here into tmp_path, never over docs/img.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.server import DEFAULT_MODEL_DIR, REPO_ROOT
from tests.webpage import CHROMIUM

pytestmark = pytest.mark.browser


def test_screenshot_shows_the_answer_the_api_gives_without_the_photo(
    penguin_photo: Path, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (run `make browser-deps` as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    out = tmp_path / "page.png"
    run = subprocess.run(
        [sys.executable, "scripts/page_screenshot.py", "--photo", str(penguin_photo),
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    taken = json.loads(run.stdout)

    answer = taken["answer"]
    if answer["is_penguin"]:
        assert taken["state"] == ("unsure" if answer["uncertain"] else "penguin")
        assert answer["species"] in taken["shown"]
    else:
        assert taken["state"] == "no-penguin"
    card = json.loads((DEFAULT_MODEL_DIR / "model-card.json").read_text())
    assert card["version"] in taken["footer"]
    assert not taken["preview_shown"]
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width == 720
