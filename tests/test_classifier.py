"""classifier: the model contract, checksum and card checks, and what predict returns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from penguin_api import imaging
from penguin_api.classifier import CARD_FILE, MODEL_FILE, Classifier, ModelError
from tests.server import copy_model, copy_model_with_thresholds


@pytest.fixture(scope="module")
def classifier(model_dir: Path) -> Classifier:
    return Classifier.load(model_dir, top_k=3)


@pytest.fixture(scope="module")
def size(classifier: Classifier) -> int:
    """The side of the shipped model's input, as its card gives it."""
    return classifier.input_size


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _rewrite_card(model: Path, **changes) -> None:
    card = json.loads((model / CARD_FILE).read_text())
    card.update(changes)
    (model / CARD_FILE).write_text(json.dumps(card))


def test_card_matches_the_onnx_file_it_ships_with(model_dir):
    import onnxruntime as ort

    card = json.loads((model_dir / CARD_FILE).read_text())
    path = model_dir / card.get("file", MODEL_FILE)
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    (graph_input,) = ort.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    ).get_inputs()
    size = card["input"]["size"]
    assert graph_input.name == card["input"]["name"] == "image"
    assert graph_input.shape[1:] == card["input"]["shape"][1:] == [size, size, 3]


def test_one_prediction_per_image_in_order(classifier, size):
    images = _images(3, size)
    batch = classifier.predict(images)
    singles = [classifier.predict(images[i : i + 1])[0] for i in range(3)]
    assert len(batch) == 3
    for together, alone in zip(batch, singles, strict=True):
        assert together.top_k[0][0] == alone.top_k[0][0]
        assert together.penguin_score == pytest.approx(alone.penguin_score, abs=2e-3)


def test_prediction_follows_the_api_contract(classifier, size):
    labels = classifier.card.labels
    for prediction in classifier.predict(_images(4, size, seed=1)):
        body = prediction.as_dict()
        assert list(body) == [
            "species", "confidence", "uncertain", "is_penguin", "penguin_score", "top_k", "model",
        ]  # fmt: skip
        assert len(body["top_k"]) == min(3, len(labels))
        confidences = [g["confidence"] for g in body["top_k"]]
        assert confidences == sorted(confidences, reverse=True)
        assert all(0 <= c <= 1 for c in confidences) and sum(confidences) <= 1.0001
        assert all(g["species"] in labels for g in body["top_k"])
        assert 0 <= body["penguin_score"] <= 1
        assert body["is_penguin"] == (body["penguin_score"] >= classifier.card.penguin_threshold)
        if body["is_penguin"]:
            assert body["species"] == body["top_k"][0]["species"]
            assert body["confidence"] == body["top_k"][0]["confidence"]
            threshold = classifier.card.confident_threshold
            assert body["uncertain"] is (threshold is not None and body["confidence"] < threshold)
        else:
            assert body["species"] is None and body["confidence"] is None
            assert body["uncertain"] is None
        assert body["model"] == {"name": classifier.card.name, "version": classifier.card.version}


def test_species_probabilities_sum_to_one(model_dir, size):
    every = Classifier.load(model_dir, top_k=1000)
    for prediction in every.predict(_images(2, size, seed=2)):
        assert len(prediction.top_k) == len(every.card.labels)
        assert sum(c for _, c in prediction.top_k) == pytest.approx(1.0, abs=5e-3)


def test_an_empty_batch_gives_no_predictions(classifier, size):
    assert classifier.predict(np.zeros((0, size, size, 3), np.uint8)) == []


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        (lambda n: (1, n, n, 3), np.float32),
        (lambda n: (n, n, 3), np.uint8),
        (lambda n: (1, n - 24, n - 24, 3), np.uint8),
        (lambda n: (1, n + 96, n + 96, 3), np.uint8),
        (lambda n: (1, n, n, 4), np.uint8),
    ],
    ids=["float32", "no-batch-axis", "smaller", "larger", "four-channels"],
)
def test_wrong_input_arrays_are_refused(classifier, size, shape, dtype):
    with pytest.raises(ValueError, match=f"expected uint8 \\[N, {size}, {size}, 3\\]"):
        classifier.predict(np.zeros(shape(size), dtype))


def test_a_real_penguin_photo_is_recognised(classifier, penguin_photo):
    array = imaging.prepare(
        penguin_photo.read_bytes(), max_pixels=50_000_000, size=classifier.input_size
    )
    prediction = classifier.predict(array[None])[0]
    assert prediction.is_penguin
    assert prediction.species in classifier.card.labels


def test_altered_model_is_refused_naming_both_checksums(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    data = bytearray((model / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / MODEL_FILE).write_bytes(bytes(data))
    expected = json.loads((model / CARD_FILE).read_text())["sha256"]
    with pytest.raises(ModelError, match="sha256") as info:
        Classifier.load(model)
    assert expected in str(info.value)
    assert hashlib.sha256(bytes(data)).hexdigest() in str(info.value)


def test_truncated_model_is_refused_by_its_checksum(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    data = (model / MODEL_FILE).read_bytes()
    (model / MODEL_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="checksum"):
        Classifier.load(model)


def test_missing_model_file_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    (model / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="model file not found"):
        Classifier.load(model)


def test_missing_card_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    (model / CARD_FILE).unlink()
    with pytest.raises(ModelError, match="model card not found"):
        Classifier.load(model)


def test_card_that_is_not_json_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    (model / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        Classifier.load(model)


def test_card_without_a_threshold_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    _rewrite_card(model, thresholds={})
    with pytest.raises(ModelError, match="penguin_score"):
        Classifier.load(model)


def _real_penguin(photo: Path, size: int) -> np.ndarray:
    return imaging.prepare(photo.read_bytes(), max_pixels=50_000_000, size=size)[None]


def test_the_same_photo_is_uncertain_below_a_high_threshold_and_sure_above_a_low_one(
    model_dir, tmp_path, penguin_photo, size
):
    answers = {}
    for name, value in (("high", 1.0), ("low", 0.01)):
        model = copy_model_with_thresholds(tmp_path / name, model_dir, confident=value)
        answers[name] = Classifier.load(model, warmup_runs=0).predict(
            _real_penguin(penguin_photo, size)
        )
    high, low = answers["high"][0], answers["low"][0]
    assert high.is_penguin and 0.01 <= high.confidence < 1.0
    assert (high.uncertain, low.uncertain) == (True, False)
    # Only the flag changes: the answer itself stays as it was.
    assert (high.species, high.confidence, high.top_k) == (low.species, low.confidence, low.top_k)


def test_a_card_without_a_confident_threshold_marks_no_answer_uncertain(
    model_dir, tmp_path, penguin_photo, size
):
    # With the gate wide open every image gets a species answer, the noise unsure ones.
    model = copy_model_with_thresholds(tmp_path / "m", model_dir, penguin_score=0.0)
    card = json.loads((model / CARD_FILE).read_text())
    card["thresholds"].pop("confident", None)
    (model / CARD_FILE).write_text(json.dumps(card))
    classifier = Classifier.load(model, warmup_runs=0)
    images = np.concatenate([_images(6, size, seed=3), _real_penguin(penguin_photo, size)])
    predictions = classifier.predict(images)
    assert classifier.card.confident_threshold is None
    assert all(p.is_penguin for p in predictions)
    assert min(p.confidence for p in predictions) < 0.95  # any sensible threshold would bite
    assert [p.uncertain for p in predictions] == [False] * len(predictions)


@pytest.mark.parametrize(
    "value",
    [0, -0.2, 1.5, "0.9", None, True, [0.9], {"value": 0.9}, float("nan"), float("inf")],
    ids=["zero", "negative", "over-one", "string", "null", "bool", "list", "object", "nan",
         "inf"],
)  # fmt: skip
def test_a_card_with_an_invalid_confident_threshold_is_refused(model_dir, tmp_path, value):
    model = copy_model_with_thresholds(tmp_path / "m", model_dir, confident=value)
    with pytest.raises(ModelError, match=r"thresholds\.confident must be a probability") as info:
        Classifier.load(model)
    assert "\n" not in str(info.value)


def test_the_confident_threshold_may_be_one(model_dir, tmp_path):
    model = copy_model_with_thresholds(tmp_path / "m", model_dir, confident=1)
    assert Classifier.load(model, warmup_runs=0).card.confident_threshold == 1.0


def test_card_with_a_label_too_few_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    labels = json.loads((model / CARD_FILE).read_text())["labels"]
    _rewrite_card(model, labels=labels[:-1])
    with pytest.raises(ModelError, match="labels"):
        Classifier.load(model)


def test_file_that_onnx_runtime_cannot_load_is_refused(model_dir, tmp_path):
    model = copy_model(tmp_path / "m", model_dir)
    junk = b"this is not an onnx graph" * 100
    (model / MODEL_FILE).write_bytes(junk)
    _rewrite_card(model, sha256=hashlib.sha256(junk).hexdigest())
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        Classifier.load(model)


def test_load_time_is_recorded(classifier):
    assert classifier.load_seconds > 0


# --- graphs that break the contract -------------------------------------------------------
#: The tiny graphs' input side: not the shipped model's, so nothing can pass by assuming it.
GRAPH_SIZE = 72
_CARD_SIZE = object()  # the card says what the graph takes


def _graph_model(tmp_path: Path, *, input_name="image", dtype="uint8", layout="NHWC",
                 outputs=("species_probs", "penguin_score"), labels=3, size=GRAPH_SIZE,
                 card_input=_CARD_SIZE) -> Path:  # fmt: skip
    """A tiny ONNX model plus a matching card; the arguments choose what it gets wrong.

    `card_input` replaces the card's `input` object (the key is dropped when it is None).
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    elem = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}[dtype]
    shape = ["N", size, size, 3] if layout == "NHWC" else ["N", 3, size, size]
    axes = [1, 2] if layout == "NHWC" else [2, 3]
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),  # [N, 3]
        helper.make_node("Softmax", ["mean"], ["species_probs"], axis=1),
        helper.make_node("ReduceMax", ["species_probs", "one"], ["penguin_score"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "contract-test",
        [helper.make_tensor_value_info(input_name, elem, shape)],
        [
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["N", "C"] if name == "species_probs" else ["N"]
            )
            for name in outputs
        ],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [2], axes),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    folder = tmp_path / "graph"
    folder.mkdir()
    data = model.SerializeToString()
    onnx.checker.check_model(model)
    (folder / MODEL_FILE).write_bytes(data)
    card = {
        "name": "contract-test", "version": "0", "file": MODEL_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "labels": [f"species-{i}" for i in range(labels)],
        "input": {"name": "image", "size": size}, "thresholds": {"penguin_score": 0.5},
    }  # fmt: skip
    if card_input is None:
        del card["input"]
    elif card_input is not _CARD_SIZE:
        card["input"] = card_input
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


def test_a_graph_that_keeps_the_contract_loads(tmp_path):
    classifier = Classifier.load(_graph_model(tmp_path))
    assert classifier.input_size == GRAPH_SIZE
    assert len(classifier.predict(_images(2, GRAPH_SIZE))) == 2


@pytest.mark.parametrize("size", [32, 300])
def test_the_input_size_comes_from_the_card_whatever_it_is(tmp_path, size):
    classifier = Classifier.load(_graph_model(tmp_path, size=size))
    assert classifier.input_size == size
    assert len(classifier.predict(_images(1, size))) == 1
    with pytest.raises(ValueError, match=f"\\[N, {size}, {size}, 3\\]"):
        classifier.predict(_images(1, GRAPH_SIZE))


def test_a_card_whose_input_size_the_graph_does_not_take_is_refused(tmp_path):
    card_input = {"name": "image", "size": GRAPH_SIZE + 8}
    with pytest.raises(ModelError, match=f"is not \\[N, {GRAPH_SIZE + 8}, {GRAPH_SIZE + 8}, 3\\]"):
        Classifier.load(_graph_model(tmp_path, card_input=card_input))


@pytest.mark.parametrize(
    "card_input",
    [None, {"name": "image"}, {"size": 0}, {"size": -5}, {"size": 72.0}, {"size": "72"},
     {"size": True}, {"size": None}, [72]],
    ids=["no-input", "no-size", "zero", "negative", "float", "string", "bool", "null", "list"],
)  # fmt: skip
def test_a_card_without_a_valid_input_size_is_refused(tmp_path, card_input):
    with pytest.raises(ModelError, match=r"input\.size .* must be a positive whole number"):
        Classifier.load(_graph_model(tmp_path, card_input=card_input))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"input_name": "pixels"}, "named 'image'"),
        ({"dtype": "float32"}, "uint8"),
        ({"layout": "NCHW"}, "NHWC"),
        ({"outputs": ("species_probs",)}, "penguin_score"),
        ({"labels": 4}, "labels"),
    ],
    ids=["input-name", "input-dtype", "layout", "missing-output", "label-count"],
)
def test_a_graph_that_breaks_the_contract_is_refused(tmp_path, options, says):
    with pytest.raises(ModelError, match=says):
        Classifier.load(_graph_model(tmp_path, **options))
