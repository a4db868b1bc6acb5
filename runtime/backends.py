"""Model loading and execution: one long-lived ONNX Runtime session with explicit providers.

The model's metadata carries its feature spec, labels and fusion; a model whose spec the runtime
cannot honour, or whose input shapes contradict its spec, is refused with a one-line reason.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import BACKENDS, INPUTS, OUTPUT, Meta
from .errors import ModelError
from .spec import LABELS, FeatureSpec, SpecError

# What each backend asks ONNX Runtime for, best first. "auto" keeps whichever actually runs.
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    fusion: str
    precision: str
    labels: tuple[str, ...]
    spec: FeatureSpec
    batch: int
    metadata: dict


def read_model_info(path: Path, meta: dict, inputs: dict[str, tuple[str, list]], outputs: list[str],
                    logits_shape: list | None = None) -> ModelInfo:
    """Check a model's metadata and I/O against the contract. `inputs`: name -> (dtype, shape);
    `logits_shape`: the output's static shape where known (symbolic dims as str or None)."""
    if Meta.FEATURE_SPEC not in meta:
        raise ModelError(path, f"not a mer model (no {Meta.FEATURE_SPEC} in its metadata)")
    try:
        spec = FeatureSpec.from_json(meta[Meta.FEATURE_SPEC])
    except SpecError as exc:
        raise ModelError(path, f"feature spec this runtime cannot honour: {exc}") from None
    try:
        labels = tuple(json.loads(meta.get(Meta.LABELS, "[]")))
    except (json.JSONDecodeError, TypeError):
        raise ModelError(path, f"{Meta.LABELS} metadata is not a JSON list") from None
    if labels != LABELS:
        raise ModelError(path, f"labels {list(labels)} differ from this runtime's {list(LABELS)}")
    if set(inputs) != set(INPUTS) or outputs != [OUTPUT]:
        raise ModelError(path, f"expected inputs {', '.join(INPUTS)} and output {OUTPUT}, got {sorted(inputs)} -> {outputs}")
    (faces_type, faces_shape), (mfcc_type, mfcc_shape) = inputs["faces"], inputs["mfcc"]
    if mfcc_type != "float32":
        raise ModelError(path, f"mfcc input must be float32, got {mfcc_type}")
    batch = faces_shape[0] if isinstance(faces_shape[0], int) else 1
    if faces_type != "uint8" or list(faces_shape[1:]) != list(spec.faces_shape):
        raise ModelError(path, f"faces input {faces_type} {faces_shape} does not match its spec {spec.faces_shape}")
    if list(mfcc_shape[1:]) != list(spec.mfcc_shape):
        raise ModelError(path, f"mfcc input {mfcc_shape} does not match its feature spec {spec.mfcc_shape}")
    if logits_shape is not None:
        _check_logits_shape(path, logits_shape, len(labels))
    return ModelInfo(path, meta.get(Meta.FUSION, "?"), meta.get(Meta.PRECISION, "fp32"), labels, spec, batch, meta)


def _check_logits_shape(path: Path, shape: list, n_labels: int) -> None:
    """Refuse at load a model whose logits cannot be one score per label: otherwise it would run
    and the scores would be paired with the wrong labels (or fail deep inside the post-processing).
    A symbolic dim cannot be checked here; OnnxModel.run checks the actual shape."""
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_labels):
        raise ModelError(path, f"logits output shape {list(shape)} is not (batch, {n_labels}), one score per label")


def check_logits(path: Path, logits: np.ndarray, n_labels: int) -> np.ndarray:
    """The logits as they came, or ModelError: a wrong shape (a symbolic dim that turned out wrong)
    or a NaN/inf (which would reach the JSON output as bare NaN, which is not JSON)."""
    if logits.ndim != 2 or logits.shape[1] != n_labels:
        raise ModelError(path, f"model produced logits of shape {list(logits.shape)}, not (batch, {n_labels})")
    if not np.isfinite(logits).all():
        raise ModelError(path, "model produced non-finite logits (NaN or inf)")
    return logits


def check_model_file(path: Path) -> None:
    """ModelError unless `path` is a readable regular file, with the reason in the OS's words
    (a permission, a too-long name or a symlink loop is not "not found")."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ModelError(path, "is a directory, not a model file")
        if not stat.S_ISREG(mode):
            raise ModelError(path, "not a regular file")
        with open(path, "rb"):  # permission to read the file itself
            pass
    except ValueError:  # an embedded NUL byte
        raise ModelError(path, "not a valid file name") from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ModelError(path, "model file not found") from None
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ModelError(path, f"cannot open model file ({reason})") from None


def _cache_dir(model: Path) -> Path:
    """Per-user, per-model-content engine cache (the bundled model's folder in site-packages may
    be read-only). ORT names cached engines by file name and graph, not weights: without the
    content hash a retrained model of the same name would silently reuse the old engine. ORT
    creates only the last folder of the path, so the parents are made here."""
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mer" / "tensorrt" / digest
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _provider_options(provider: str, path: Path) -> dict:
    """GPU provider settings (see the README's "What was verified where"). TensorRT EP builds FP16 engines once and
    caches them per user; CUDA EP searches conv algorithms once per shape."""
    if provider == "TensorrtExecutionProvider":
        cache = _cache_dir(path)
        return {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
    if provider == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}
    return {}


class OnnxModel:
    """An ONNX Runtime session made once and reused for every clip."""

    def __init__(self, path: str | Path, backend: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if backend not in BACKENDS:
            raise ModelError(path, f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        check_model_file(path)
        available = ort.get_available_providers()
        wanted = _PROVIDERS["tensorrt" if backend == "auto" else backend]
        providers = [p for p in wanted if p in available]
        if backend != "auto" and providers[:1] != wanted[:1]:
            raise ModelError(path, f"backend {backend!r} needs {wanted[0]}, which this onnxruntime lacks "
                                   f"(available: {', '.join(available)})")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.log_severity_level = 3  # errors only: a CLI's stderr is for its own messages
        # Idle ORT threads would otherwise busy-wait after each run and slow the decoder and the
        # face detector of the next clip (measured on 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            # ORT prints its provider-fallback notices to stdout, which would corrupt --json output.
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                    providers=[(p, _provider_options(p, path)) for p in providers])
        except Exception as exc:  # ORT raises several private exception types for a bad file
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(path, f"not a loadable ONNX model ({reason[:200]})") from None
        self.session.disable_fallback()  # a provider failing at run time must not silently switch
        self.info = read_model_info(
            path, dict(self.session.get_modelmeta().custom_metadata_map),
            {i.name: (_ORT_TYPES.get(i.type, i.type), i.shape) for i in self.session.get_inputs()},
            [o.name for o in self.session.get_outputs()],
            self.session.get_outputs()[0].shape)
        # The provider that actually runs, not the one asked for (ORT falls back silently).
        self.provider = self.session.get_providers()[0]
        if backend != "auto" and self.provider != wanted[0]:
            raise ModelError(path, f"backend {backend!r} requested but ONNX Runtime fell back to {self.provider}")
        # TensorRT EP runs this graph in FP16 (trt_fp16_enable), whatever the file's precision.
        # (get_providers() says which providers the session holds; TensorRT EP may still leave
        # nodes it cannot take to CUDA EP in the file's precision.)
        self.precision = "fp16" if self.provider == "TensorrtExecutionProvider" else self.info.precision

    @property
    def backend_name(self) -> str:
        return f"onnxruntime:{self.provider}"

    def run(self, faces: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
        """Logits (B, 8) for faces uint8 (B, 15, 224, 224, 3) and mfcc float32 (B, n_mfcc, T);
        ModelError for logits of the wrong shape or not finite."""
        return check_logits(self.info.path, self._run(faces, mfcc), len(self.info.labels))

    def _run(self, faces: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
        if self.provider == "CPUExecutionProvider":
            return self.session.run(["logits"], {"faces": faces, "mfcc": mfcc})[0]
        # On a GPU: IO binding hands ORT the uint8 faces (a quarter of float32's bytes) as they are,
        # for one host-to-device copy; the 8 logits come back to the host.
        binding = self.session.io_binding()
        binding.bind_cpu_input("faces", np.ascontiguousarray(faces))
        binding.bind_cpu_input("mfcc", np.ascontiguousarray(mfcc))
        binding.bind_output("logits")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def load_model(path: str | Path, backend: str = "auto", threads: int | None = None):
    """An OnnxModel, or for a `.engine` file a native TensorRT engine (backend auto or tensorrt)."""
    # Path("") is Path("."), the working directory: refuse the empty string before it becomes one.
    if not str(path).strip():
        raise ModelError(str(path), "empty model path")
    path = Path(path)
    check_model_file(path)
    if path.suffix == ".engine":
        if backend not in ("auto", "tensorrt"):
            raise ModelError(path, f"a TensorRT engine runs only with backend tensorrt, not {backend!r}")
        from .tensorrt_backend import TensorRTModel

        return TensorRTModel(path)
    return OnnxModel(path, backend, threads)
