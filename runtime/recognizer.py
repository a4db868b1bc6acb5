"""`Recognizer`: clip or arrays in, emotion out. One instance holds one model session and one
face detector, reused for every input (make it once, call it many times)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .backends import load_model
from .decode import DecodedClip, Window, decode_clip, sanitise, window_for
from .errors import InputError, ModelError
from .faces import FaceCropper
from .mfcc import mfcc as compute_mfcc
from .spec import FeatureSpec

DEFAULT_FUSION = "ia"
FUSIONS = ("lt", "it", "ia")


def bundled_model(fusion: str = DEFAULT_FUSION) -> Path:
    """Path of the model of `fusion` shipped inside the package."""
    if fusion not in FUSIONS:
        raise ModelError(fusion, f"unknown fusion (choose from {', '.join(FUSIONS)})")
    path = Path(str(resources.files("mer.runtime") / "assets" / f"{fusion}.onnx"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.onnx"))
        raise ModelError(path, f"no bundled {fusion!r} model in this install "
                               f"(bundled: {', '.join(shipped) or 'none'}); pass a model file")
    return path


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


@dataclass
class Result:
    file: str | None
    label: str
    index: int
    probabilities: dict[str, float]
    faces_detected: int
    audio: bool
    window: tuple[float, float]
    timings_ms: dict[str, float]
    model: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON record of DESIGN.md (plus `warnings`, empty when nothing degraded)."""
        return {
            "file": self.file, "label": self.label, "index": self.index,
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "faces_detected": self.faces_detected, "audio": self.audio,
            "window": [round(self.window[0], 3), round(self.window[1], 3)],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "model": dict(self.model), "warnings": list(self.warnings),
        }


def clip_inputs(path: str | Path, spec: FeatureSpec, cropper: Callable[[], FaceCropper]
                ) -> tuple[np.ndarray, np.ndarray]:
    """A clip's model inputs exactly as `Recognizer.predict` builds them: faces uint8
    (15, 224, 224, 3) and MFCC float32 (n_mfcc, frames); a missing modality is zeros.
    `cropper` is called only when the clip has video."""
    clip = decode_clip(path, spec)
    faces = _faces(clip, cropper)[0]
    return (faces if faces is not None else np.zeros(spec.faces_shape, np.uint8)), _mfcc(clip.audio, spec)


def _faces(clip: DecodedClip, cropper: Callable[[], FaceCropper]) -> tuple[np.ndarray | None, int, list[str]]:
    """Face crops (None when no face was found or there is no video), faces found, and the
    clip's warnings (decoder notes and any missing modality)."""
    warnings = list(clip.warnings)
    faces, detected = None, 0
    if clip.frames is not None:
        crops = cropper()(clip.frames, clip.frame_ids)
        detected = crops.detected
        if crops.detected:
            faces = crops.faces
        else:
            warnings.append("no face found in any sampled frame: visual input absent")
        if crops.max_faces > 1:
            warnings.append(f"up to {crops.max_faces} faces in a frame: the largest was used")
    elif not clip.has_video:
        warnings.append("no video stream: visual input absent")
    if not clip.has_audio:
        warnings.append("no audio stream: audio input absent")
    return faces, detected, warnings


def _mfcc(audio: np.ndarray | None, spec: FeatureSpec) -> np.ndarray:
    # A missing modality is zeros: how modality dropout taught the model "absent".
    return compute_mfcc(audio, spec) if audio is not None else np.zeros(spec.mfcc_shape, np.float32)


class Recognizer:
    """`Recognizer(model=None, backend="auto")`: `model` is an ONNX file or a TensorRT `.engine`
    (with its `.json` sidecar), or None for the bundled default. `.predict(path)` reads a clip or an audio file; `.predict_arrays(faces,
    audio)` takes face crops uint8 (15, 224, 224, 3) RGB and/or mono float32 audio at
    `self.spec.sample_rate`, either of which may be None (that modality is then zeros)."""

    def __init__(self, model: str | Path | None = None, backend: str = "auto", threads: int | None = None):
        self._model = load_model(model if model is not None else bundled_model(), backend, threads)
        self.info = self._model.info
        self.spec: FeatureSpec = self.info.spec
        self._cropper: FaceCropper | None = None  # made on first video, so audio-only use skips it

    @property
    def cropper(self) -> FaceCropper:
        if self._cropper is None:
            self._cropper = FaceCropper(self.spec)
        return self._cropper

    def close(self) -> None:
        if self._cropper is not None:
            self._cropper.close()
            self._cropper = None
        getattr(self._model, "close", lambda: None)()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, path: str | Path) -> Result:
        t0 = time.perf_counter()
        clip = decode_clip(path, self.spec)
        t1 = time.perf_counter()
        faces, detected, warnings = _faces(clip, lambda: self.cropper)
        if faces is None and clip.audio is None:
            raise InputError(path, "no face and no audio in it: nothing to recognise")
        t2 = time.perf_counter()
        feats = _mfcc(clip.audio, self.spec)
        t3 = time.perf_counter()
        result = self._infer(faces, feats, clip.audio is not None, detected, (clip.window.start, clip.window.end),
                             warnings)
        result.file = str(path)
        result.timings_ms = {"decode": (t1 - t0) * 1e3, "faces": (t2 - t1) * 1e3, "mfcc": (t3 - t2) * 1e3,
                             **result.timings_ms, "total": (time.perf_counter() - t0) * 1e3}
        return result

    def inputs(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs for a clip, exactly as `predict` builds them (see `clip_inputs`)."""
        return clip_inputs(path, self.spec, lambda: self.cropper)

    def predict_arrays(self, faces: np.ndarray | None = None, audio: np.ndarray | None = None) -> Result:
        if faces is None and audio is None:
            raise ValueError("give faces, audio or both")
        if faces is not None:
            faces = np.asarray(faces)
            if faces.dtype != np.uint8 or faces.shape != self.spec.faces_shape:
                raise ValueError(f"faces must be uint8 {self.spec.faces_shape} RGB, got {faces.dtype} {faces.shape}")
        window = Window(0.0, self.spec.window_s)
        if audio is not None:
            audio = np.array(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
            window = window_for(len(audio) / self.spec.sample_rate, self.spec)  # centred, as for files
            first = int(round(window.start * self.spec.sample_rate))
            audio = sanitise(audio[first:first + self.spec.n_samples])
            audio = np.pad(audio, (0, self.spec.n_samples - len(audio)))
        detected = int(faces.reshape(len(faces), -1).any(1).sum()) if faces is not None else 0
        t0 = time.perf_counter()
        feats = _mfcc(audio, self.spec)
        t1 = time.perf_counter()
        result = self._infer(faces, feats, audio is not None, detected, (window.start, window.end), [])
        result.timings_ms = {"decode": 0.0, "faces": 0.0, "mfcc": (t1 - t0) * 1e3, **result.timings_ms,
                             "total": (time.perf_counter() - t0) * 1e3}
        return result

    def _infer(self, faces: np.ndarray | None, feats: np.ndarray, has_audio: bool, detected: int,
               window: tuple[float, float], warnings: list[str]) -> Result:
        spec = self.spec
        t1 = time.perf_counter()
        face_batch = (faces if faces is not None else np.zeros(spec.faces_shape, np.uint8))[None]
        feat_batch = feats[None]
        if self.info.batch > 1:  # a model exported for a fixed larger batch: pad, keep row 0
            face_batch = np.repeat(face_batch, self.info.batch, 0)
            feat_batch = np.repeat(feat_batch, self.info.batch, 0)
        logits = self._model.run(face_batch, feat_batch)[0].astype(np.float64)
        t2 = time.perf_counter()
        probs = _softmax(logits)
        index = int(probs.argmax())
        return Result(
            file=None, label=self.info.labels[index], index=index,
            probabilities={name: float(p) for name, p in zip(self.info.labels, probs)},
            faces_detected=detected, audio=has_audio, window=window,
            timings_ms={"model": (t2 - t1) * 1e3},
            model={"fusion": self.info.fusion, "precision": self._model.precision,
                   "backend": self._model.backend_name},
            warnings=warnings)


__all__ = ["Recognizer", "Result", "InputError", "ModelError", "bundled_model"]
