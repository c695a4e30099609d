"""The upload page says "Not sure" for an uncertain answer, in real headless Chromium.

A copy of the shipped model gets a card threshold (thresholds.confident) halfway between
the confidences the shipped model gives a sample of validation penguins, so some of them
fall below it and some above, whatever the model. Below it the page must read
"Not sure — most likely X (36%)" with the alternatives; above it, exactly as a sure answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server import Server, copy_model_with_thresholds, running_server
from tests.webpage import (
    DESKTOP,
    PERCENT,
    PHONE,
    PageProblems,
    ask_api,
    chromium,
    open_page,
    percent_of,
    photos,
    wait_for_state,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def confidences(server: Server, shared_data: Path) -> dict[Path, float]:
    """A spread of validation penguins the gate passes, with the shipped model's confidence."""
    sample = photos(shared_data / "penguins" / "val", "*/*")[::6][:18]
    answers = {photo: ask_api(server, photo) for photo in sample}
    return {photo: a["confidence"] for photo, a in answers.items() if a["is_penguin"]}


@pytest.fixture(scope="module")
def threshold(confidences: dict[Path, float]) -> float:
    """Halfway between the two middle confidences: about half the sample falls below it."""
    values = sorted(set(confidences.values()))
    if len(values) < 2:
        pytest.fail(f"too few distinct confidences to put a threshold between: {values}")
    middle = len(values) // 2
    return round((values[middle - 1] + values[middle]) / 2, 6)


@pytest.fixture(scope="module")
def unsure_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory, threshold: float
) -> Iterator[Server]:
    """The shipped model, its card given thresholds.confident = `threshold`."""
    model = copy_model_with_thresholds(
        tmp_path_factory.mktemp("model"), model_dir, confident=threshold
    )
    with running_server(workers=1, model_dir=model) as srv:
        yield srv


def _answered(server: Server, photo: Path, uncertain: bool) -> dict[str, Any]:
    answer = ask_api(server, photo)
    assert answer["is_penguin"] and answer["uncertain"] is uncertain, answer
    return answer


@pytest.fixture(scope="module")
def unsure(unsure_server, confidences, threshold) -> tuple[Path, dict[str, Any]]:
    """The photo with the lowest confidence, and the API's uncertain answer for it."""
    photo = min(confidences, key=confidences.get)
    assert confidences[photo] < threshold
    return photo, _answered(unsure_server, photo, uncertain=True)


@pytest.fixture(scope="module")
def sure(unsure_server, confidences, threshold) -> tuple[Path, dict[str, Any]]:
    """The photo with the highest confidence, and the API's sure answer for it."""
    photo = max(confidences, key=confidences.get)
    assert confidences[photo] >= threshold
    return photo, _answered(unsure_server, photo, uncertain=False)


@pytest.fixture
def desktop(browser, unsure_server) -> Iterator[tuple[Any, PageProblems]]:
    context, page, problems = open_page(browser, unsure_server, DESKTOP)
    yield page, problems
    context.close()


@pytest.fixture
def phone(browser, unsure_server) -> Iterator[tuple[Any, PageProblems]]:
    context, page, problems = open_page(
        browser, unsure_server, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    yield page, problems
    context.close()


def test_uncertain_answer_reads_not_sure_with_the_likely_species_and_the_alternatives(
    desktop, unsure, threshold, tmp_path
):
    page, problems = desktop
    photo, answer = unsure

    page.get_by_label("Choose a photo").set_input_files(photo)
    result = wait_for_state(page, "unsure")
    page.screenshot(path=tmp_path / "unsure-desktop.png", full_page=True)

    verdict = result.locator(".verdict")
    text = verdict.inner_text()
    pattern = f"Not sure — most likely {re.escape(answer['species'])} \\(({PERCENT})\\)"
    assert re.fullmatch(pattern, text), text
    assert percent_of(text) == pytest.approx(answer["confidence"], abs=0.001)
    # A sentence, not the bold species name of a sure answer, and no "… confident" line.
    assert int(verdict.evaluate("v => getComputedStyle(v).fontWeight")) < 700
    assert result.locator(".confidence").count() == 0
    explain = result.locator(".explain").inner_text()
    assert percent_of(explain) == pytest.approx(threshold, abs=0.001)
    assert result.locator(".topk-heading").inner_text() == "Possible species"
    names = result.locator(".guess-name").all_inner_texts()
    assert names == [guess["species"] for guess in answer["top_k"]]
    assert result.get_attribute("aria-live") == "polite"
    assert problems.exceptions == []
    assert problems.console_errors == []


def test_sure_answer_under_the_same_threshold_looks_as_it_always_did(desktop, sure, tmp_path):
    page, problems = desktop
    photo, answer = sure

    page.get_by_label("Choose a photo").set_input_files(photo)
    result = wait_for_state(page, "penguin")
    page.screenshot(path=tmp_path / "sure-desktop.png", full_page=True)

    assert result.locator(".verdict").inner_text() == answer["species"]
    verdict_weight = result.locator(".verdict").evaluate("v => getComputedStyle(v).fontWeight")
    assert int(verdict_weight) >= 700
    assert re.fullmatch(PERCENT + " confident", result.locator(".confidence").inner_text())
    assert "Not sure" not in result.inner_text()
    assert problems.exceptions == []
    assert problems.console_errors == []


def test_a_sure_answer_after_an_unsure_one_replaces_it(desktop, unsure, sure):
    page, problems = desktop
    page.get_by_label("Choose a photo").set_input_files(unsure[0])
    wait_for_state(page, "unsure")

    page.get_by_label("Choose another photo").set_input_files(sure[0])
    result = wait_for_state(page, "penguin")
    assert "Not sure" not in result.inner_text()
    assert result.locator(".verdict").inner_text() == sure[1]["species"]
    assert problems.exceptions == []


def test_uncertain_answer_fits_a_narrow_phone(phone, unsure, tmp_path):
    page, problems = phone
    page.get_by_label("Choose a photo").set_input_files(unsure[0])
    result = wait_for_state(page, "unsure")
    page.screenshot(path=tmp_path / "unsure-phone.png", full_page=True)

    assert result.locator(".verdict").inner_text().startswith("Not sure — most likely ")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1]
    assert problems.exceptions == []
