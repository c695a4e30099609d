"""`penguin-api train` and `penguin-api evaluate` end to end, and the pieces they count with."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from penguin_api.training.dataset import load_training_data
from penguin_api.training.fit import cross_validated_ece, stratified_folds
from penguin_api.training.heads import fit_temperature, pick_threshold, softmax
from penguin_api.training.metrics import expected_calibration_error, species_metrics
from penguin_api.training.ship import choose_variant
from tests.server import REPO_ROOT

SUBSET_SPECIES = {"Adelie": (6, 2), "Gentoo": (6, 2), "King": (6, 2), "Snares": (3, 0)}


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "penguin_api.cli", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def _link_photos(src: Path, dest: Path, n: int) -> None:
    """Symlink the first ``n`` decodable-looking photos of ``src`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for photo in photos[:n]:
        (dest / photo.name).symlink_to(photo)


@pytest.fixture(scope="module")
def subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data tree of links into ../shared/data (nothing copied)."""
    root = tmp_path_factory.mktemp("subset")
    for species, (n_train, n_val) in SUBSET_SPECIES.items():
        _link_photos(
            shared_data / "penguins/train" / species, root / "penguins/train" / species, n_train
        )
        if n_val:
            _link_photos(
                shared_data / "penguins/val" / species, root / "penguins/val" / species, n_val
            )
    _link_photos(shared_data / "penguin_unspecified", root / "penguin_unspecified", 6)
    _link_photos(shared_data / "not_penguin/train", root / "not_penguin/train", 10)
    _link_photos(shared_data / "not_penguin/val", root / "not_penguin/val", 5)
    return root


@pytest.mark.slow
def test_short_training_run_produces_a_loadable_model_with_a_true_card(
    subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    result = _cli(
        "train", "--data", str(subset), "--out", str(out), "--cache", str(tmp_path / "cache"),
        "--report", str(tmp_path / "report"), "--backbones", "lite0", "--size", "224",
        "--views", "2", "--folds", "2", "--repeats", "2", "--quick",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "model-card.json").read_text())
    onnx_path = out / card["file"]
    assert card["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    # Two builds on one day differ in version whenever their files differ.
    assert card["version"].endswith("+" + card["sha256"][:8])
    assert card["labels"] == ["Adelie", "Gentoo", "King"]
    assert "Snares" in card["species_excluded"]
    assert 0 < card["thresholds"]["confident"] <= 1
    session = ort.InferenceSession(str(onnx_path))
    probs, score = session.run(None, {"image": np.zeros((2, 224, 224, 3), np.uint8)})
    assert probs.shape == (2, 3) and score.shape == (2,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Every labelled photo (train and val) trained it and was judged out of fold, twice.
    oof = card["metrics"]["out_of_fold"]
    assert (oof["photos"], oof["folds"], oof["repeats"]) == (24, 2, 2)
    assert oof["top1"]["min"] <= oof["top1"]["mean"] <= oof["top1"]["max"]
    assert card["metrics"]["shipped_file"]["species"]["n"] == 24
    listed = (out / card["evaluation"]["photos_file"]).read_text().splitlines()
    assert len(listed) - 1 == card["evaluation"]["photos"] == 24 + 3 + 6 + 15
    # Where it fails goes to the report folder, never into the model folder.
    answers = (tmp_path / "report" / "out-of-fold.csv").read_text().splitlines()
    assert len(answers) - 1 == 24
    misses = sum(line.endswith(",0") for line in answers[1:])
    assert misses == round(24 * (1 - oof["first_repeat"]["top1"]))
    assert (tmp_path / "report" / "worst-misses.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert sorted(p.name for p in out.iterdir()) == [
        "evaluation-photos.csv", "model-card.json", "penguin-classifier.onnx",
    ]  # fmt: skip

    # The shipped file's figures in the card come back from `penguin-api evaluate` on the
    # photos the card lists.
    report_dir = tmp_path / "report"
    result = _cli(
        "evaluate", "--photos", str(out / card["evaluation"]["photos_file"]),
        "--data", str(subset), "--out", str(report_dir), "--model-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((report_dir / "metrics.json").read_text())
    assert report["species"]["top1"] == card["metrics"]["shipped_file"]["species"]["top1"]
    assert report["gate"] == card["metrics"]["shipped_file"]["gate"]


def test_evaluate_refuses_a_model_whose_checksum_does_not_match(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(REPO_ROOT / "model", model)
    card = json.loads((model / "model-card.json").read_text())
    card["sha256"] = "0" * 64
    (model / "model-card.json").write_text(json.dumps(card))
    (tmp_path / "tree" / "Adelie").mkdir(parents=True)
    result = _cli(
        "evaluate", "--data", str(tmp_path / "tree"), "--out", str(tmp_path / "r"),
        "--model-dir", str(model),
    )  # fmt: skip
    assert result.returncode == 2
    assert "SHA-256" in result.stderr


def test_species_with_too_few_training_photos_are_excluded(subset: Path) -> None:
    data = load_training_data(subset)
    assert data.labels == ["Adelie", "Gentoo", "King"]
    assert data.excluded == {"Snares": 3}
    # Their photos still teach the gate what a penguin looks like.
    snares = {p.name for p in (subset / "penguins/train/Snares").iterdir()}
    gate_penguins = {s.path.name for s in data.gate_train if s.is_penguin}
    assert snares <= gate_penguins
    assert not any(s.is_penguin for s in data.gate_train if "not_penguin" in str(s.path))


def test_perfectly_calibrated_predictions_have_zero_ece() -> None:
    conf = np.array([0.75] * 4 + [0.95] * 20)
    correct = np.array([1, 1, 1, 0] + [1] * 19 + [0])
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0, abs=1e-9)
    overconfident = np.array([0.99] * 10)
    assert expected_calibration_error(overconfident, np.array([1] * 5 + [0] * 5)) == (
        pytest.approx(0.49)
    )


def test_species_metrics_count_precision_and_recall_per_species() -> None:
    labels = ["A", "B", "C"]
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = species_metrics(probs, y, labels)
    assert m["top1"] == 0.8
    assert m["per_species"]["A"] == {"support": 2, "precision": 1.0, "recall": 0.5, "f1": 0.6667}
    assert m["per_species"]["B"]["precision"] == pytest.approx(0.6667)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_temperature_softens_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(0, 1, (400, 3))
    logits[np.arange(400), y] += 1.0  # informative, but far less than the x8 claims
    t = fit_temperature(logits * 8, y)
    assert t > 3
    before = softmax(logits * 8).max(1).mean()
    after = softmax(logits * 8 / t).max(1).mean()
    assert after < before


def test_gate_threshold_separates_separable_scores() -> None:
    pos = np.array([0.9, 0.95, 0.8, 0.99])
    neg = np.array([0.1, 0.3, 0.05])
    t = pick_threshold(pos, neg)
    assert 0.3 < t < 0.8


def _candidate(agreement: float, gate_p95: float, cpu_ms: float) -> dict:
    return {
        "species_agreement": agreement,
        "gate_logit_difference_p95": gate_p95,
        "latency_ms": {"cpu_median": cpu_ms},
    }


def test_int8_ships_only_when_it_answers_as_fp32_does_and_is_faster() -> None:
    fp32 = _candidate(1.0, 0.0, 8.6)
    assert choose_variant("auto", {"fp32": fp32, "int8": _candidate(0.99, 0.4, 5.1)}) == "int8"
    # Other species on more than 2 % of the photos, or a drifting penguin score: no.
    assert choose_variant("auto", {"fp32": fp32, "int8": _candidate(0.97, 0.4, 5.1)}) == "fp32"
    assert choose_variant("auto", {"fp32": fp32, "int8": _candidate(0.99, 1.5, 5.1)}) == "fp32"
    # Slower buys nothing.
    assert choose_variant("auto", {"fp32": fp32, "int8": _candidate(1.0, 0.1, 9.5)}) == "fp32"
    # An explicit choice is obeyed.
    assert choose_variant("int8", {"fp32": fp32, "int8": _candidate(0.5, 9.0, 20.0)}) == "int8"
    assert choose_variant("auto", {"fp32": fp32}) == "fp32"


def test_cross_validated_ece_is_low_for_calibrated_and_high_for_overconfident_logits() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), y] += 1.5
    folds = stratified_folds(y, 5, 0)
    # Each fold's temperature is refitted on the others, so scaling the logits barely matters.
    assert cross_validated_ece(logits * 8, y, folds) < 0.06
    raw = softmax(logits * 8)
    assert expected_calibration_error(raw.max(1), raw.argmax(1) == y) > 0.2


def _blobs(per_class: int, n_classes: int = 4, dim: int = 16, seed: int = 0):
    """Two noisy views of Gaussian blobs: few photos per class make a noisy head."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    base = centres[y] + rng.normal(0, 1.6, (len(y), dim))
    views = np.stack([base, base + rng.normal(0, 0.3, base.shape)]).astype(np.float32)
    return views, y


def test_learning_curve_rises_with_the_number_of_training_photos() -> None:
    from penguin_api.training.curve import learning_curve

    views, y = _blobs(per_class=40)
    rows = learning_curve(views, y, 4, fractions=(0.1, 1.0), l2_grid=(1e-2,), folds=4, repeats=3)
    small, full = rows
    assert small["train_photos"] < full["train_photos"] == 120
    assert len(small["top1_per_draw"]) == 3 and len(full["top1_per_draw"]) == 1
    assert full["top1"] > small["top1"] + 0.05


@pytest.mark.slow
def test_learning_curve_command_reports_each_fraction(subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    result = _cli(
        "learning-curve", "--data", str(subset), "--cache", str(tmp_path / "cache"),
        "--backbones", "lite0", "--size", "224", "--views", "2", "--folds", "2",
        "--fractions", "0.5,1", "--repeats", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["fraction"] for r in report["rows"]] == [0.5, 1.0]
    assert report["rows"][0]["train_photos"] < report["rows"][1]["train_photos"]
    assert all(0 <= r["top1"] <= 1 for r in report["rows"])
    assert "top-1" in result.stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--fractions", "0.5,1.5", "fractions must lie in (0, 1]"),
        ("--fractions", "half", "not a list of numbers"),
        ("--repeats", "0", "must be at least 1"),
        ("--folds", "1", "must be at least 2"),
    ],
)
def test_learning_curve_refuses_options_it_cannot_use(
    option: str, value: str, message: str
) -> None:
    result = _cli("learning-curve", "--data", "x", option, value)
    assert result.returncode == 2
    assert message in result.stderr


def test_ece_of_a_perfect_model_is_sampling_noise_that_shrinks_with_more_photos() -> None:
    from penguin_api.training.metrics import ece_sampling_noise

    rng = np.random.default_rng(3)
    few = ece_sampling_noise(rng.uniform(0.5, 1.0, 100))
    many = ece_sampling_noise(rng.uniform(0.5, 1.0, 3000))
    assert few["mean"] > 0.04 and few["p95"] > few["mean"]
    assert many["mean"] < 0.02
    # Certain answers leave nothing to chance.
    assert ece_sampling_noise(np.ones(50)) == {"mean": 0.0, "p95": 0.0}


def test_ece_sampling_noise_bins_photos_as_the_ece_itself_does() -> None:
    from penguin_api.training.metrics import ECE_NOISE_DRAWS, ece_sampling_noise

    conf = np.random.default_rng(5).uniform(0.0, 1.0, 60).astype(np.float32)
    conf[:3] = [0.0, 0.1, 1.0]  # bin edges
    draws = np.random.default_rng(0).random((ECE_NOISE_DRAWS, len(conf))) < conf
    direct = [expected_calibration_error(conf, d) for d in draws]
    got = ece_sampling_noise(conf)
    assert got["mean"] == pytest.approx(np.mean(direct), abs=1e-4)
    assert got["p95"] == pytest.approx(np.percentile(direct, 95), abs=1e-4)


def _sample_photos(folder: Path, n: int, is_penguin: bool) -> list:
    from PIL import Image

    from penguin_api.training.dataset import Sample

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (300 + i, 240), (i * 20 % 256, 90, 160)).save(path)
        out.append(Sample(path, 0 if is_penguin else -1, is_penguin))
    return out


def test_int8_calibration_mixes_penguins_and_non_penguins(tmp_path: Path) -> None:
    from penguin_api.training.ship import (
        CALIBRATION_NEGATIVES,
        CALIBRATION_PHOTOS,
        calibration_batches,
        calibration_sample,
    )

    few_penguins = _sample_photos(tmp_path / "p", 5, True)
    few_others = _sample_photos(tmp_path / "n", 4, False)
    penguins, others = calibration_sample(few_penguins, few_others, seed=0)
    assert (len(penguins), len(others)) == (5, 4)  # all of them when there are few
    batches = calibration_batches(penguins + others, seed=0, size=240)
    assert [b.shape for b in batches] == [(8, 240, 240, 3), (1, 240, 240, 3)]
    assert all(b.dtype == np.uint8 for b in batches)

    many_penguins = [few_penguins[0]] * (CALIBRATION_PHOTOS + 40)
    many_others = [few_others[0]] * (CALIBRATION_NEGATIVES + 40)
    penguins, others = calibration_sample(many_penguins, many_others, seed=0)
    assert (len(penguins), len(others)) == (CALIBRATION_PHOTOS, CALIBRATION_NEGATIVES)
    assert all(s.is_penguin for s in penguins) and not any(s.is_penguin for s in others)


def test_recorded_photos_are_found_by_content_after_the_folders_move(
    subset: Path, tmp_path: Path
) -> None:
    from penguin_api.training import photolist

    adelie = sorted((subset / "penguins/train/Adelie").iterdir())[:2]
    negative = sorted((subset / "not_penguin/train").iterdir())[0]
    entries = [(adelie[0], "Adelie"), (adelie[1], "Adelie"), (negative, photolist.NOT_PENGUIN)]
    listed = tmp_path / "photos.csv"
    digest = photolist.write_photo_list(entries, listed, subset)
    assert digest == hashlib.sha256(listed.read_bytes()).hexdigest()
    # The same photos under other names and folders, beside photos added since.
    moved = tmp_path / "reorganised"
    for i, (path, _) in enumerate(entries):
        (moved / f"group{i}").mkdir(parents=True)
        (moved / f"group{i}" / f"renamed{i}.jpg").symlink_to(path.resolve())
    (moved / "new").mkdir()
    (moved / "new" / "added.jpg").symlink_to(sorted((subset / "penguins/train/King").iterdir())[0])
    found = photolist.resolve(photolist.read_photo_list(listed), moved)
    assert sorted((p.name, label) for p, label in found) == [
        ("renamed0.jpg", "Adelie"), ("renamed1.jpg", "Adelie"),
        ("renamed2.jpg", photolist.NOT_PENGUIN),
    ]  # fmt: skip


def test_evaluate_names_recorded_photos_it_cannot_find(subset: Path, tmp_path: Path) -> None:
    from penguin_api.training import photolist

    photo = sorted((subset / "penguins/train/Adelie").iterdir())[0]
    listed = tmp_path / "photos.csv"
    photolist.write_photo_list([(photo, "Adelie")], listed, subset)
    (tmp_path / "empty").mkdir()
    result = _cli(
        "evaluate", "--photos", str(listed), "--data", str(tmp_path / "empty"),
        "--out", str(tmp_path / "r"), "--model-dir", str(REPO_ROOT / "model"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "1 of 1 recorded photos are not under" in result.stderr
    assert "penguins/train/Adelie/" in result.stderr


def test_worst_misses_are_the_most_confident_wrong_answers() -> None:
    from penguin_api.training.misses import worst_misses

    y = np.array([0, 0, 1, 1, 2])
    probs = np.array(
        [[0.9, 0.1, 0.0], [0.3, 0.6, 0.1], [0.05, 0.05, 0.9], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]]
    )
    assert worst_misses(y, probs, 10) == [2, 1, 4]
    assert worst_misses(y, probs, 2) == [2, 1]
