"""PyTorch -> ONNX: fixed shapes, one file, mer metadata, checked with full shape inference."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from mer.runtime.contract import CONDITIONS, INPUTS, OUTPUT, Meta, set_metadata
from mer.runtime.spec import LABELS, FeatureSpec
from mer.train.fusion import MerModel

VERSION = "0.1.0"


def example_inputs(spec: FeatureSpec, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    faces = torch.randint(0, 256, (batch, *spec.faces_shape), dtype=torch.uint8, generator=g)
    mfcc = torch.randn((batch, *spec.mfcc_shape), generator=g) * 40
    return faces, mfcc


def metadata(model: MerModel, spec: FeatureSpec, precision: str, trained_on: str) -> dict[str, str]:
    return {
        Meta.LABELS: json.dumps(list(LABELS)),
        Meta.FUSION: model.fusion,
        Meta.FEATURE_SPEC: spec.to_json(),
        Meta.VERSION: VERSION,
        Meta.PRECISION: precision,
        Meta.TRAINED_ON: trained_on,
        Meta.MODEL_CONFIG: json.dumps(model.config(), sort_keys=True),
        # The calibration inside the graph, per modality condition: logits / temperature + class bias
        # (1 and 0: uncalibrated).
        Meta.TEMPERATURE: json.dumps(dict(zip(CONDITIONS, (round(float(t), 6) for t in model.temperature)))),
        Meta.CLASS_BIAS: json.dumps({c: dict(zip(LABELS, (round(float(v), 6) for v in row)))
                                     for c, row in zip(CONDITIONS, model.class_bias)}),
    }


def export_onnx(model: MerModel, spec: FeatureSpec, path: Path, trained_on: str, batch: int = 1) -> Path:
    """Trace `model` to a single-file ONNX at `path` with fixed (batch, ...) shapes."""
    model = model.eval()
    faces, mfcc = example_inputs(spec, batch)
    tmp = path.with_suffix(".tmp.onnx")
    # The exporter logs a line per torchvision operator it could not register; this graph has none
    # of them, and a user should not read four warnings about a package they need not install.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (faces, mfcc), str(tmp), input_names=list(INPUTS),
                              output_names=[OUTPUT], dynamo=True, external_data=False, optimize=True,
                              verbose=False)
    finally:
        registration.setLevel(level)
    proto = onnx.load(str(tmp))
    set_metadata(proto, metadata(model, spec, "fp32", trained_on))
    proto.doc_string = f"mer {model.fusion} fusion: faces uint8 (B,15,224,224,3) RGB + mfcc -> logits over {', '.join(LABELS)}"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    tmp.unlink()
    return path


def max_abs_diff_vs_torch(model: MerModel, onnx_path: Path, faces: np.ndarray, mfcc: np.ndarray) -> float:
    """Largest |logit difference| between PyTorch eager and ONNX Runtime (CPU) on the same inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(["logits"], {"faces": faces, "mfcc": mfcc})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(faces), torch.from_numpy(mfcc)).numpy()
    return float(np.abs(ours.astype(np.float64) - ref).max())
