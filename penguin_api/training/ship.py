"""Last steps of training: export, int8 or not, score the shipped file, write the card."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from penguin_api.training import card as card_mod
from penguin_api.training import photolist
from penguin_api.training.dataset import Sample
from penguin_api.training.export import build_net, export_onnx, quantize_int8

log = logging.getLogger(__name__)

#: int8 ships only if its top species matches fp32's on at least this share of the
#: labelled photos, and its gate decision on at least ``INT8_MIN_GATE_AGREEMENT`` of all.
INT8_MIN_SPECIES_AGREEMENT = 0.98
INT8_MIN_GATE_AGREEMENT = 0.99
#: More photos give steadier activation ranges: calibrated on penguins alone, int8 agreed
#: with fp32 on 95 % of val photos with 64 and on 96 % with 160.
CALIBRATION_PHOTOS = 160
#: Non-penguin photos mixed into calibration. The service is sent those too, and with
#: penguins alone their activations fell outside the calibrated ranges: the int8 penguin
#: score then strayed from fp32's by 2.6 logits on average (up to 14), against 0.3 with them.
CALIBRATION_NEGATIVES = 80


def ship(args: argparse.Namespace, data, backbones: list, fitted, started: float) -> None:
    """Export the candidates, choose one, score it as the service would, write the card."""
    from penguin_api.training.evaluate import figures, score_photos

    net = build_net(backbones, fitted, args.mirror)
    # The list is written first and scored in its own order, so the card's figures are
    # computed exactly as `penguin-api evaluate --photos` recomputes them.
    photo_list = args.out / photolist.PHOTOS_FILE
    photos, negatives = recorded_photos(data)
    entries = photos + [(p, photolist.NOT_PENGUIN) for p in negatives]
    list_sha256 = photolist.write_photo_list(entries, photo_list, args.data)
    found = photolist.resolve(photolist.read_photo_list(photo_list), args.data)
    photos = [(p, label) for p, label in found if label != photolist.NOT_PENGUIN]
    negatives = [p for p, label in found if label == photolist.NOT_PENGUIN]
    calibrated_on = "none (no int8 candidate)"
    with tempfile.TemporaryDirectory(prefix="penguin-train-") as tmp:
        candidates = {"fp32": Path(tmp) / "fp32.onnx"}
        export_onnx(net, candidates["fp32"], args.size)
        if args.quantize != "fp32":
            penguins, others = calibration_sample(
                data.train + data.val, [s for s in data.gate_train if not s.is_penguin], args.seed
            )
            calib = calibration_batches(penguins + others, args.seed, args.size)
            calibrated_on = (
                f"{len(penguins)} labelled penguin photos and {len(others)} non-penguins"
            )
            candidates["int8"] = Path(tmp) / "int8.onnx"
            quantize_int8(candidates["fp32"], candidates["int8"], calib)
        scored = {
            kind: score_photos(path, data.labels, args.size, photos, negatives, args.threads)
            for kind, path in candidates.items()
        }
        results = {
            kind: {
                "latency_ms": _latency(path, args.size),
                **_agreement(scored["fp32"], scored[kind]),
            }
            for kind, path in candidates.items()
        }
        for kind, result in results.items():
            log.info("%s: %s", kind, result)
        chosen = choose_variant(args.quantize, results)
        shipped = _install(candidates[chosen], args.out, card_mod.MODEL_FILE)
    # The date says when; the checksum prefix tells apart two models built the same day.
    digest = card_mod.sha256_file(shipped)[:8]
    version = args.version or f"{dt.date.today():%Y.%m.%d}+{digest}"
    shipped_figures = figures(scored[chosen], fitted.thresholds["penguin_score"])
    for key in ("predictions", "negatives"):
        shipped_figures.pop(key)
    shipped_figures["species"].pop("reliability")
    card = card_mod.build_card(
        version=version,
        model_path=shipped,
        labels=data.labels,
        excluded=data.excluded,
        size=args.size,
        backbones=list(args.backbones),
        thresholds=fitted.thresholds,
        temperature=fitted.temperature,
        quantization=chosen,
        metrics={
            "out_of_fold": fitted.out_of_fold,
            "shipped_file": shipped_figures,
            "latency_ms_1_thread": {k: v["latency_ms"] for k, v in results.items()},
            "notes": NOTES,
        },
        training=_training_record(args, data, fitted, results, calibrated_on),
        counts=data.counts,
        sources=card_mod.read_sources(args.data),
    )
    card["evaluation"] = {
        "photos_file": photo_list.name,
        "photos_sha256": list_sha256,
        "photos": len(entries),
        "meaning": "every photo the model learnt from, by SHA-256: metrics.out_of_fold "
        "judged each by heads fitted without it; metrics.shipped_file are the shipped "
        f"file's own answers on them (`penguin-api evaluate --photos model/{photo_list.name} "
        "--data ../shared/data` reproduces them)",
    }
    card["training"]["duration_s"] = round(time.monotonic() - started, 1)
    card_mod.write_card(card, args.out)
    log.info(
        "wrote %s (%s; out-of-fold top-1 %.4f) in %.0f s",
        shipped,
        chosen,
        fitted.out_of_fold["top1"]["mean"],
        card["training"]["duration_s"],
    )


NOTES = (
    "out_of_fold: every labelled photo judged by heads fitted on the other folds, over "
    "repeated stratified cross-validation (mean, min and max across repeats); each "
    "fold's temperature and confident threshold were chosen on the other folds. These are "
    "the model's figures. shipped_file: the shipped file on the photos it learnt from "
    "(not a measure of accuracy on new photos; it pins the file to its card). The gate's "
    "out-of-fold rates use a threshold placed on those same scores."
)


def recorded_photos(data) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Every photo the model learnt from: penguins labelled by species (or as penguins of
    no covered species) and the non-penguins."""
    everything = data.gate_train + data.gate_val
    photos = [
        (s.path, data.labels[s.label] if s.label >= 0 else photolist.PENGUIN)
        for s in everything
        if s.is_penguin
    ]
    return photos, [s.path for s in everything if not s.is_penguin]


def _agreement(reference, candidate) -> dict[str, float]:
    """Share of photos where ``candidate`` answers as ``reference`` does (species; gate)."""
    n = len(reference.y)
    species = reference.probs[:n].argmax(1) == candidate.probs[:n].argmax(1)
    ref = np.concatenate([reference.scores, reference.negative_scores])
    cand = np.concatenate([candidate.scores, candidate.negative_scores])
    logit = _logit(ref) - _logit(cand)
    return {
        "species_agreement": round(float(species.mean()), 4),
        "gate_logit_difference_mean": round(float(np.abs(logit).mean()), 3),
        "gate_logit_difference_p95": round(float(np.percentile(np.abs(logit), 95)), 3),
    }


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def choose_variant(mode: str, results: dict) -> str:
    """The variant to ship: as asked, or (``auto``) int8 when its answers match fp32's
    (species on ``INT8_MIN_SPECIES_AGREEMENT`` of the photos, gate logits within a logit
    for 95 % of them) AND it is faster (CPU-time median; steadier than wall time on
    shared cores). A slower int8 buys nothing, whatever its accuracy."""
    if mode != "auto" or "int8" not in results:
        return mode if mode in results else "fp32"
    int8, fp32 = results["int8"], results["fp32"]
    same = (
        int8["species_agreement"] >= INT8_MIN_SPECIES_AGREEMENT
        and int8["gate_logit_difference_p95"] <= 1.0
    )
    faster = int8["latency_ms"]["cpu_median"] < fp32["latency_ms"]["cpu_median"]
    return "int8" if same and faster else "fp32"


def calibration_sample(
    penguins: Sequence[Sample], negatives: Sequence[Sample], seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Seeded int8 calibration photos: up to ``CALIBRATION_PHOTOS`` labelled penguins and
    up to ``CALIBRATION_NEGATIVES`` non-penguins, each in file order."""
    rng = np.random.default_rng(seed)
    out = []
    for group, size in ((penguins, CALIBRATION_PHOTOS), (negatives, CALIBRATION_NEGATIVES)):
        pick = rng.choice(len(group), size=min(size, len(group)), replace=False)
        out.append([group[i] for i in sorted(pick)])
    return out[0], out[1]


def calibration_batches(samples: Sequence[Sample], seed: int, size: int) -> list[np.ndarray]:
    """What the service would feed the model for each photo, shuffled, in batches of 8."""
    from penguin_api.imaging import prepare

    order = np.random.default_rng(seed).permutation(len(samples))
    arrays = [
        prepare(samples[i].path.read_bytes(), max_pixels=200_000_000, size=size) for i in order
    ]
    return [np.stack(arrays[i : i + 8]) for i in range(0, len(arrays), 8)]


def _latency(path: Path, size: int, runs: int = 40) -> dict[str, float]:
    """Milliseconds for one image on one thread: wall-clock median and p90, and the
    median CPU time, which stays honest when other processes share the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(5):
        session.run(None, {"image": image})
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        session.run(None, {"image": image})
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return {
        "wall_median": round(float(np.median(wall)), 2),
        "wall_p90": round(float(np.percentile(wall, 90)), 2),
        "cpu_median": round(float(np.median(cpu)), 2),
    }


def _training_record(args, data, fitted, results: dict, calibrated_on: str) -> dict:
    """How the model was made, for the card's ``training`` entry."""
    return {
        "command": "penguin-api train " + " ".join(_argv(args)),
        "seed": args.seed,
        "views_per_photo": args.views,
        "mirror_averaged": args.mirror,
        "species_head": {
            "type": "multinomial logistic regression on standardised GeM-pooled (p=3) "
            f"embeddings of {', '.join(args.backbones)} side by side "
            f"({1280 * len(args.backbones)}-d)",
            **fitted.chosen,
        },
        "gate": {
            "head": "logistic regression on the same embeddings, every penguin photo "
            "against every non-penguin photo",
            "mix": {
                "gate_logit": round(fitted.gate_mix[0], 6),
                **{
                    f"king_penguin_logprob_{name}": round(w, 6)
                    for name, w in zip(args.backbones, fitted.gate_mix[1:-1], strict=True)
                },
                "bias": round(fitted.gate_mix[-1], 6),
            },
        },
        "tuned_on": {
            "species_head_l2": f"{args.folds}-fold cross-validation, first repeat",
            "species_head_weights": "every labelled photo (train + val)",
            "gate_head": "every penguin (species, unspecified, excluded) and non-penguin photo",
            "temperature": "out-of-fold species logits of every repeat",
            "confident_threshold": "out-of-fold calibrated answers of every repeat",
            "gate_threshold": "out-of-fold gate scores of every gate photo",
            "int8_calibration": calibrated_on,
        },
        "cross_validation": fitted.cv,
        "candidates": {
            k: {key: v[key] for key in v if key != "latency_ms"}
            | {"latency_ms_1_thread": v["latency_ms"]}
            for k, v in results.items()
        },
        "data_fingerprint": data.fingerprint(),
        "skipped_undecodable": [Path(p).name for p in data.skipped],
        "duration_s": None,
    }


def _argv(args: argparse.Namespace) -> list[str]:
    """The options of this run as a command line (paths as given; defaults left out)."""
    from penguin_api.training import train

    out = ["--data", str(args.data), "--out", str(args.out)]
    if tuple(args.backbones) != train.DEFAULT_BACKBONES:
        out += ["--backbones", ",".join(args.backbones)]
    if args.size != train.DEFAULT_SIZE:
        out += ["--size", str(args.size)]
    if args.views != train.DEFAULT_VIEWS:
        out += ["--views", str(args.views)]
    if args.mirror:
        out.append("--mirror")
    if args.balance != train.DEFAULT_BALANCE:
        out += ["--balance", str(args.balance)]
    if args.folds != 5:
        out += ["--folds", str(args.folds)]
    if args.repeats != train.DEFAULT_REPEATS:
        out += ["--repeats", str(args.repeats)]
    if args.seed:
        out += ["--seed", str(args.seed)]
    if args.quantize != "auto":
        out += ["--quantize", args.quantize]
    if args.quick:
        out.append("--quick")
    return out


def _install(src: Path, out: Path, name: str) -> Path:
    """Copy a finished model file into the output folder."""
    out.mkdir(parents=True, exist_ok=True)
    dest = out / name
    shutil.copyfile(src, dest)
    return dest
