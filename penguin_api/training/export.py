"""Turn the fitted heads into the one shipped ONNX graph, and optionally int8 it.

Contract (../shared/docs/DESIGN.md): input ``image`` uint8 NHWC [N,S,S,3] RGB (S in the card);
outputs ``species_probs`` float32 [N,C] and ``penguin_score`` float32 [N].
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from penguin_api.training.heads import Linear

log = logging.getLogger(__name__)

INPUT = "image"
OUTPUTS = ("species_probs", "penguin_score")
OPSET = 17


def build_net(backbones: list, fitted, mirror: bool):
    """The torch module of the whole model (every backbone, heads filled in), in eval mode."""
    import torch

    from penguin_api.training.backbone import PenguinNet

    def to_layer(head: Linear) -> torch.nn.Linear:
        layer = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(head.weight.astype(np.float32)))
            layer.bias.copy_(torch.from_numpy(head.bias.astype(np.float32)))
        return layer

    net = PenguinNet(
        backbones,
        to_layer(fitted.species),
        to_layer(fitted.gate),
        fitted.gate_mix,
        fitted.temperature,
        mirror=mirror,
    )
    return net.eval()


def export_onnx(net, path: Path, size: int) -> None:
    """Write ``net`` as ONNX with a dynamic batch axis and check it against torch."""
    import onnx
    import torch

    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_axes={INPUT: {0: "n"}, OUTPUTS[0]: {0: "n"}, OUTPUTS[1]: {0: "n"}},
        opset_version=OPSET,
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(probe))]
    got = run_onnx(path, probe)
    for name, w, g in zip(OUTPUTS, want, got, strict=True):
        if not np.allclose(w, g, atol=1e-4):
            raise RuntimeError(f"ONNX output {name} differs from torch by {np.abs(w - g).max()}")


def run_onnx(path: Path, images: np.ndarray, threads: int = 2) -> list[np.ndarray]:
    """Run an ONNX model file on a uint8 batch (one-off use; not for loops)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUTS), {INPUT: images})


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> None:
    """Static int8 quantisation (QDQ, per-channel weights, MinMax) calibrated on ``calibration``.

    Quantised: the convolutions, the residual adds and the ReLU6 ``Clip`` after each
    convolution. The Clip matters most: left in float it keeps ~35 dequantise/quantise
    pairs between the convolutions, which made int8 slower than fp32 and cost ~4 points
    of val top-1; quantised, ONNX Runtime folds it into the convolution's output range.
    Left in float: each backbone's stem convolution, and the small pooling and heads with
    softmax/sigmoid (GeM's Pow/ReduceMean, Gemm), which carry the calibrated
    probabilities and cost nothing.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Folds the exported padding arithmetic into the convolutions first.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
        # Each backbone's stem convolution stays float (it sees the raw image).
        stems = [name for name in convs if "_conv_stem" in name] or convs[:1]
        heads = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            # QDQ rather than QOperator: ONNX Runtime fuses it into the same int8 kernels
            # (as fast in our timings), and the float graph stays readable out of it.
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "Add", "Clip"],
            nodes_to_exclude=[*stems, *heads],
            calibrate_method=CalibrationMethod.MinMax,
        )
    log.info("int8 model written to %s", out_path)
