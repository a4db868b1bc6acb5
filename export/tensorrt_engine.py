"""FP16 TensorRT engine from the exported ONNX (TensorRT 10 Python API).

UNVERIFIED HERE: the development and CI machines have no GPU and cannot install TensorRT.
Written against NVIDIA's documented TensorRT 10 API; `available()` says why it is skipped.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx

from mer.runtime.contract import Meta, Sidecar


def available() -> tuple[bool, str]:
    """(usable, reason): TensorRT importable and a CUDA GPU visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "tensorrt is not installed (pip install 'mer[tensorrt]' on a machine with an NVIDIA GPU)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible"
    except ImportError:
        return False, "torch is needed to query the GPU"
    return True, ""


def build_engine(onnx_path: Path, engine_path: Path, timing_cache: Path | None = None,
                 workspace_gib: float = 2.0) -> Path:
    """Build a fixed-shape FP16 engine and a `<engine>.json` sidecar (TensorRT version, GPU, spec)."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    # A timing cache from another GPU or TensorRT version is refused (create returns None or set
    # returns False): start an empty one rather than fail.
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    meta[Meta.PRECISION] = "fp16"  # the engine runs in FP16 whatever the ONNX file's precision
    sidecar = {
        Sidecar.TENSORRT_VERSION: trt.__version__,
        Sidecar.GPU: torch.cuda.get_device_name(0),
        Sidecar.COMPUTE_CAPABILITY: ".".join(map(str, torch.cuda.get_device_capability(0))),
        Sidecar.PRECISION: "fp16",
        Sidecar.ONNX_SHA256: hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        Sidecar.METADATA: meta,
    }
    # Engine and sidecar land together (the runtime refuses an engine without its sidecar).
    engine_path.with_suffix(engine_path.suffix + ".json").write_text(json.dumps(sidecar, indent=2))
    engine_path.write_bytes(bytes(serialized))
    if timing_cache:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return engine_path
