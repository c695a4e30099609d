"""Rebuild the float graph from an int8 QDQ model, to time fp32 when only int8 is shipped.

A QDQ model is the float graph with QuantizeLinear/DequantizeLinear pairs inserted: int8
weights feed DequantizeLinear, activations pass Q -> DQ. Folding the weights back to float
initializers and dropping the activation pairs gives the same operators on float data,
which is what the fp32 export runs (weights rounded to the int8 grid, which changes the
answers slightly but not the cost).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


class NotQdqError(ValueError):
    """The model has no QDQ quantisation to fold out."""


def dequantize_qdq(src: Path, dest: Path) -> Path:
    """Write the float version of the QDQ model `src` to `dest`; returns `dest`."""
    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    folded: list[onnx.TensorProto] = []
    clips: list[onnx.NodeProto] = []

    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a quantised weight or bias: fold it to float
            folded.append(_dequantize_initializer(node, inits))
            drop.add(id(node))
            continue
        quant = producers.get(source)
        if quant is not None and quant.op_type == "QuantizeLinear":  # an activation pair
            drop.update((id(node), id(quant)))
            before = producers.get(quant.input[0])
            kept_activation = before is not None and before.op_type in ("Clip", "Relu")
            bounds = None if kept_activation else _relu_bounds(quant, inits)
            if bounds is None:
                rename[node.output[0]] = quant.input[0]
                continue
            # The quantiser removed a ReLU/ReLU6 here and let the range do its work.
            lo, hi = (f"{node.output[0]}_clip_{k}" for k in ("min", "max"))
            folded += [numpy_helper.from_array(np.array(v, np.float32), n)
                       for v, n in zip(bounds, (lo, hi), strict=True)]  # fmt: skip
            clips.append(
                helper.make_node("Clip", [quant.input[0], lo, hi], [node.output[0]], name=lo[:-4])
            )
    if not drop:
        raise NotQdqError(f"{src} has no QuantizeLinear/DequantizeLinear nodes")

    keep = [n for n in graph.node if id(n) not in drop] + clips
    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = _resolve(name, rename)
    for out in graph.output:
        out.name = _resolve(out.name, rename)
    used = {name for node in keep for name in node.input}
    remaining = [t for t in graph.initializer if t.name in used] + folded
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(remaining)
    model.graph.ClearField("value_info")  # shapes/types of removed int8 tensors are stale
    _sort_topologically(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def _relu_bounds(quant: onnx.NodeProto, inits: dict) -> tuple[float, float] | None:
    """(0, top) when the Q range starts exactly at zero (a removed ReLU/ReLU6), else None."""
    if len(quant.input) < 3 or quant.input[2] not in inits or quant.input[1] not in inits:
        return None
    zero = numpy_helper.to_array(inits[quant.input[2]])
    scale = numpy_helper.to_array(inits[quant.input[1]])
    if zero.size != 1 or scale.size != 1:
        return None
    info = np.iinfo(zero.dtype)
    if int(zero) != info.min:
        return None
    return 0.0, float(scale) * (info.max - info.min)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (Clips were appended)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("the rebuilt graph has a cycle or a missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _resolve(name: str, rename: dict[str, str]) -> str:
    while name in rename:
        name = rename[name]
    return name


def _dequantize_initializer(node: onnx.NodeProto, inits: dict) -> onnx.TensorProto:
    """(q - zero_point) * scale, per tensor or per channel along the node's axis."""
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = (
        numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else np.zeros_like(scale)
    )
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:  # per channel: broadcast along `axis`
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    value = ((q - zero) * scale).astype(np.float32)
    return numpy_helper.from_array(value, name=node.output[0])
