"""FP16 ONNX: weights and activations in half precision, the uint8/float32 I/O kept as is."""
from __future__ import annotations

from pathlib import Path

import onnx

from mer.runtime.contract import Meta, set_metadata


def convert_fp16(src: Path, dst: Path) -> Path:
    # ONNX Runtime's own converter (ships inside the onnxruntime wheel); keep_io_types leaves the
    # graph's inputs and outputs in their original types, so the runtime feeds both alike.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    _sort_topologically(half.graph)  # the converter appends its input casts after their users
    set_metadata(half, {Meta.PRECISION: "fp16"})
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(dst))
    return dst


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder graph.node so that every node comes after the producers of its inputs."""
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
            raise ValueError("graph has a cycle or an input no node produces")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
