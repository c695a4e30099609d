"""The README's picture of the upload page, taken from a real run.

Starts the service on a free loopback port (the shipped model unless --model-dir), opens the
page in headless Chromium (Debian's /usr/bin/chromium through Playwright, never Playwright's
own download), uploads one real photo and saves the page once the answer is shown. The
preview of the photo is hidden before the picture is taken: the photos the model is tested
on are not ours to publish. Prints one JSON object: the photo, the page's state and the text
it shows, and the API's answer for the same photo, so the picture's caption can be checked.

Run: `make page-screenshot` or `.venv/bin/python scripts/page_screenshot.py [--photo P]
[--out PNG]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.server import DEFAULT_MODEL_DIR, running_server  # noqa: E402
from tests.webpage import ANSWER_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS  # noqa: E402

DEFAULT_PHOTO = (
    REPO.parent / "shared/data/penguins/val/Gentoo/AustinWhittaker__Streamlit-AI-and-ML__Gentoo.jpg"
)
VIEWPORT = {"width": 720, "height": 600}  # narrow enough to read at README width
ANSWERED = "#result[data-state]:not([data-state='']):not([data-state='loading'])"


def take(photo: Path, out: Path, model_dir: Path) -> dict:
    """Serve, upload `photo` on the page, save the page as `out`; what was shown and asked."""
    from playwright.sync_api import sync_playwright  # dev extra; the service never needs it

    with running_server(workers=1, model_dir=model_dir) as server:
        with photo.open("rb") as fh:
            answer = requests.post(
                server.url("/predict"), files={"file": (photo.name, fh)}, timeout=60
            ).json()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(server.url("/"))
                page.get_by_label("Choose a photo").set_input_files(photo)
                result = page.locator(ANSWERED)
                result.wait_for(timeout=ANSWER_TIMEOUT_MS)
                # The preview is drawn after the answer may arrive: wait for it, then hide it.
                page.locator("#preview:not([hidden])").wait_for(timeout=ANSWER_TIMEOUT_MS)
                page.eval_on_selector("#preview", "el => { el.hidden = true; }")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                preview_shown = page.locator("#preview").is_visible()
                state = result.get_attribute("data-state")
                shown = result.inner_text()
                footer = page.locator("#model").inner_text()
            finally:
                browser.close()
    return {
        "photo": str(photo),
        "out": str(out),
        "state": state,
        "shown": shown,
        "footer": footer,
        "preview_shown": preview_shown,
        "answer": answer,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--out", type=Path, default=REPO / "docs/img/upload-page.png")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: `make browser-deps` installs it (root)", file=sys.stderr)
        return 2
    print(json.dumps(take(args.photo, args.out, args.model_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
