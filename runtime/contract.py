"""The model contract, in one place: what training writes, export stamps and the runtime checks.

Torch-free (the runtime imports it). A model file is a mer model when its metadata holds these
keys and its graph has these inputs and output; `backends.read_model_info` checks them,
`export.onnx_export.metadata` writes them, `train.fusion.MerModel` is built from the names.
"""
from __future__ import annotations

FUSIONS = ("lt", "it", "ia")  # late transformer, intermediate transformer, intermediate attention
DEFAULT_FUSION = "ia"
# Where a model runs: ONNX Runtime on the CPU or CUDA, or TensorRT; "auto" keeps the best that runs.
BACKENDS = ("auto", "cpu", "cuda", "tensorrt")

# What the runtime can feed, each with its own calibration (temperature and class bias): both
# modalities, speech with no face found (the trunk sees all-zero crops), a face with no audio
# (all-zero MFCC).
CONDITIONS = ("audiovisual", "audio_only", "video_only")

INPUTS = ("faces", "mfcc")  # uint8 (B, 15, 224, 224, 3) RGB crops; float32 (B, n_mfcc, frames)
OUTPUT = "logits"


class Meta:
    """ONNX metadata_props keys (copied whole into a TensorRT engine's sidecar)."""
    LABELS = "mer.labels"              # JSON list, must equal spec.LABELS
    FUSION = "mer.fusion"
    FEATURE_SPEC = "mer.feature_spec"  # spec.FeatureSpec.to_json(): how to make the inputs
    VERSION = "mer.version"
    PRECISION = "mer.precision"        # fp32 | fp16
    TRAINED_ON = "mer.trained_on"      # one line: what data trained the weights
    MODEL_CONFIG = "mer.model_config"  # JSON: MerModel's constructor arguments
    TEMPERATURE = "mer.temperature"    # JSON: condition -> temperature the graph divides by
    CLASS_BIAS = "mer.class_bias"      # JSON: condition -> {label: bias the graph adds after dividing}
    RECALIBRATED_ON = "mer.recalibrated_on"  # JSON, set by `mer-eval --calibrate`: the clips fitted on


def set_metadata(proto, props: dict[str, str]) -> None:
    """Set (add or replace) metadata_props of an onnx.ModelProto: export and `mer-eval --calibrate`."""
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value


class Sidecar:
    """Keys of `<engine>.json` beside a TensorRT engine: an engine only runs where it was built."""
    TENSORRT_VERSION = "tensorrt_version"
    GPU = "gpu"
    COMPUTE_CAPABILITY = "compute_capability"
    PRECISION = "precision"
    ONNX_SHA256 = "onnx_sha256"
    METADATA = "metadata"
