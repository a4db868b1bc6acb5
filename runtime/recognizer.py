"""`Recognizer`: clip or arrays in, emotion out. One instance holds one model session and one
face detector, reused for every input (make it once, call it many times)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import voice, window as windows
from .backends import load_model
from .contract import DEFAULT_FUSION, FUSIONS
from .engine import WindowInputs, clip_inputs, clip_window, in_background, model_inputs, window_inputs
from .errors import InputError, ModelError
from .faces import FaceCropper
from .mfcc import mfcc as compute_mfcc
from .source import AUDIO_SUFFIXES, MediaSource, open_live, sanitise
from .spec import FeatureSpec


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


# A record's stages, in pipeline order ("voice": the voice-activity gate, voice.py).
TIMINGS = ("decode", "faces", "voice", "mfcc", "model", "total")


@dataclass
class Result:
    """One window's answer: `to_dict()` is the JSON record (README); `timings_ms` has the keys of
    TIMINGS."""
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
    latency_ms: float | None = None  # live: emission minus the arrival of the window's last sample

    def to_dict(self) -> dict:
        """The JSON record of DESIGN.md (plus `warnings`, empty when nothing degraded, and
        `latency_ms` for a live source)."""
        record = {
            "file": self.file, "label": self.label, "index": self.index,
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "faces_detected": self.faces_detected, "audio": self.audio,
            "window": [round(self.window[0], 3), round(self.window[1], 3)],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "model": dict(self.model), "warnings": list(self.warnings),
        }
        if self.latency_ms is not None:
            record["latency_ms"] = round(self.latency_ms, 1)
        return record


def run_batched(model, faces: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Logits (n, labels) of a loaded model (backends.load_model) for n windows, run in the model's
    own batch size (padded)."""
    b = max(1, model.info.batch)
    rows = []
    for i in range(0, len(faces), b):
        f, m = faces[i:i + b], feats[i:i + b]
        if len(f) < b:  # a model exported for a fixed larger batch: pad, keep the real rows
            f = np.concatenate([f, np.repeat(f[-1:], b - len(f), 0)])
            m = np.concatenate([m, np.repeat(m[-1:], b - len(m), 0)])
        rows.append(model.run(f, m)[: min(b, len(faces) - i)])
    return np.concatenate(rows).astype(np.float64)


class Recognizer:
    """`Recognizer(model=None, backend="auto")`: `model` is an ONNX file or a TensorRT `.engine`
    (with its `.json` sidecar), or None for the bundled default. `.predict(path)` reads a clip or an audio file; `.predict_arrays(faces,
    audio)` takes face crops uint8 (15, 224, 224, 3) RGB and/or mono float32 audio at
    `self.spec.sample_rate`, either of which may be None (that modality is then zeros).
    `voice_gate` (default on): a window that shows a face but whose audio holds no voice is read
    from the face alone, said in its warnings (voice.py); off, any audio is read as speech."""

    def __init__(self, model: str | Path | None = None, backend: str = "auto", threads: int | None = None,
                 voice_gate: bool = True):
        self._model = load_model(model if model is not None else bundled_model(), backend, threads)
        self.voice_gate = voice_gate
        self.info = self._model.info
        self.spec: FeatureSpec = self.info.spec
        self._cropper: FaceCropper | None = None  # made on first video, so audio-only use skips it
        self._cropper_lock = threading.Lock()

    @property
    def cropper(self) -> FaceCropper:
        with self._cropper_lock:
            if self._cropper is None:
                self._cropper = FaceCropper(self.spec)
            return self._cropper

    def _warm_up(self, path) -> None:
        """Make the face detector (~0.7 s) in the background while the first frames decode."""
        if self._cropper is None and Path(str(path)).suffix.lower() not in AUDIO_SUFFIXES:
            threading.Thread(target=lambda: self.cropper, name="mer-detector", daemon=True).start()

    def close(self) -> None:
        if self._cropper is not None:
            self._cropper.close()
            self._cropper = None
        getattr(self._model, "close", lambda: None)()

    def __enter__(self) -> "Recognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one clip, a timeline, a live source: the same engine with different windows ----------
    def predict(self, path: str | Path) -> Result:
        """The emotion of the window centred on the clip (the one-window case of `timeline`)."""
        t0 = time.perf_counter()
        self._warm_up(path)
        item = clip_window(path, self.spec, lambda: self.cropper, self.voice_gate)
        if item.faces is None and item.mfcc is None:
            raise InputError(path, "no face and no audio in it: nothing to recognise")
        result = self._results([item], str(path))[0]
        result.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return result

    def timeline(self, path: str | Path, hop: float | None = None, *, threaded: bool = True) -> Iterator[Result]:
        """One result per window: from 0 every `hop` seconds (default `window.default_hop`), the
        last ending at the end of the recording; yielded as they are ready. Windows with neither
        a face nor audio are left out."""
        hop = self._hop(hop)
        self._warm_up(path)
        source = MediaSource(path, self.spec)
        # Unknown length (a stream recorded live, a pipe): the hop grid until the data ends.
        plan = windows.timeline(source.info.duration, self.spec, hop) if source.info.duration \
            else windows.Endless(self.spec, hop)
        make = lambda: source.events(plan)  # noqa: E731
        events = in_background(make) if threaded else make()
        try:
            yield from self._run(window_inputs(events, source.info, plan, self.spec, self._fresh_cropper,
                                               voice_gate=self.voice_gate), str(path), source.info.warnings)
        finally:
            events.close()
            source.close()

    def live(self, spec_or_source: str, hop: float | None = None, *, realtime: bool = False,
             stop: "threading.Event | None" = None) -> Iterator[Result]:
        """Results as each window of a live source completes: a camera (index or /dev/videoN), a
        microphone ("mic", "alsa:DEVICE"), both ("0+mic"), a URL, a pipe ("-" is stdin) or a file
        (`realtime` paces it as a camera would deliver it). Each result carries `latency_ms`;
        when the machine falls behind, windows are skipped (and said so), not queued. A source that
        ends before its first window is complete (unless `stop` was set) raises InputError."""
        hop = self._hop(hop)
        source = open_live(spec_or_source, self.spec, realtime=realtime)
        info = source.info
        if info.has_video:
            # Made before the first frame arrives: built on the first frame (~0.9 s here), it put
            # the frames behind it over the lag limit, and the first window was always skipped.
            self.cropper  # noqa: B018
        plan = windows.timeline(info.duration, self.spec, hop) if info.duration and not source.endless \
            else windows.Endless(self.spec, hop)
        events = in_background(lambda: source.events(plan))
        produced = False
        try:
            for result in self._run(window_inputs(events, info, plan, self.spec, self._fresh_cropper,
                                                  live_lag_s=max(1.0, hop), voice_gate=self.voice_gate),
                                    info.name, info.warnings, live=True):
                produced = True
                yield result
                if stop is not None and stop.is_set():
                    return
        finally:
            events.close()
            source.close()
        if not produced and not (stop is not None and stop.is_set()):  # a stream or pipe that ended too soon
            raise InputError(info.name, f"ended before its first window ({self.spec.window_s:g} s of media) was "
                                        "complete: nothing to recognise")

    def inputs(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs for a clip, exactly as `predict` builds them (see engine.clip_inputs)."""
        return clip_inputs(path, self.spec, lambda: self.cropper, self.voice_gate)

    def _hop(self, hop: float | None) -> float:
        hop = windows.default_hop(self.spec) if hop is None else float(hop)
        problem = windows.hop_problem(hop)
        if problem:
            raise ValueError(problem)
        return hop

    def _fresh_cropper(self) -> FaceCropper:
        cropper = self.cropper
        cropper.reset_track()
        return cropper

    def _run(self, inputs: Iterator[WindowInputs], name: str, source_warnings: list[str],
             live: bool = False) -> Iterator[Result]:
        """Batches of windows through the model (one batch at a time on a live source, so no
        window waits for a later one)."""
        batch: list[WindowInputs] = []
        size = 1 if live else max(1, self.info.batch)
        first = True
        for item in inputs:
            if item.faces is None and item.mfcc is None:
                continue  # nothing to recognise in this window (past the data's end, say)
            if first:
                item.warnings[:0] = source_warnings
                first = False
            batch.append(item)
            if len(batch) >= size:
                yield from self._results(batch, name, live)
                batch = []
        if batch:
            yield from self._results(batch, name, live)

    def _results(self, batch: list[WindowInputs], name: str | None, live: bool = False) -> list[Result]:
        t0 = time.perf_counter()
        pairs = [model_inputs(item, self.spec) for item in batch]
        logits = self._logits(np.stack([f for f, _ in pairs]), np.stack([m for _, m in pairs]))
        model_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        out = []
        for item, row in zip(batch, logits):
            result = self._result(row, item.mfcc is not None, item.faces_detected,
                                  (item.window.start, item.window.end), item.warnings)
            result.file = name
            t = {**item.timings_ms, "model": model_ms}
            result.timings_ms = {**t, "total": sum(t.values())}
            if live:
                result.latency_ms = (time.perf_counter() - item.arrival) * 1e3
            out.append(result)
        return out

    def _logits(self, faces: np.ndarray, feats: np.ndarray) -> np.ndarray:
        return run_batched(self._model, faces, feats)

    def predict_arrays(self, faces: np.ndarray | None = None, audio: np.ndarray | None = None) -> Result:
        """Face crops uint8 (15, 224, 224, 3) RGB and/or mono audio at the spec's rate (float in
        [-1, 1], or integer PCM, scaled by its type's range); either may be None."""
        if faces is None and audio is None:
            raise ValueError("give faces, audio or both")
        if faces is not None:
            faces = np.asarray(faces)
            if faces.dtype != np.uint8 or faces.shape != self.spec.faces_shape:
                raise ValueError(f"faces must be uint8 {self.spec.faces_shape} RGB, got {faces.dtype} {faces.shape}")
        window = windows.Window(0.0, self.spec.window_s)
        warnings: list[str] = []
        if audio is not None:
            audio, warnings = _as_float_audio(audio)
            window = windows.centred(len(audio) / self.spec.sample_rate, self.spec)  # centred, as for files
            first = windows.audio_start(window, self.spec)
            audio = audio[first:first + self.spec.n_samples]
            audio = np.pad(audio, (0, self.spec.n_samples - len(audio)))
        detected = int(faces.reshape(len(faces), -1).any(1).sum()) if faces is not None else 0
        t0 = time.perf_counter()
        if self.voice_gate and detected and audio is not None and self.spec.sample_rate == voice.SAMPLE_RATE:
            # The same gate as the engine's (voice.py), on the window's audio read from its start.
            track = voice.track(lazy=True)  # one window: stop reading once it has voice enough
            if track is None:
                warnings.append(voice.GATE_OFF)
            else:
                track.add(0, audio)
                if gated := voice.no_voice(track, 0, len(audio)):
                    warnings.append(gated)
                    audio = None
        t1 = time.perf_counter()
        feats = compute_mfcc(audio, self.spec) if audio is not None else None
        t2 = time.perf_counter()
        item = WindowInputs(window, faces, feats, detected, warnings, t0, {
            "decode": 0.0, "faces": 0.0, "voice": (t1 - t0) * 1e3, "mfcc": (t2 - t1) * 1e3})
        return self._results([item], None)[0]

    def _result(self, logits: np.ndarray, has_audio: bool, detected: int,
                window: tuple[float, float], warnings: list[str]) -> Result:
        probs = _softmax(logits)
        index = int(probs.argmax())
        return Result(
            file=None, label=self.info.labels[index], index=index,
            probabilities={name: float(p) for name, p in zip(self.info.labels, probs)},
            faces_detected=detected, audio=has_audio, window=window, timings_ms={},
            model={"fusion": self.info.fusion, "precision": self._model.precision,
                   "backend": self._model.backend_name},
            warnings=list(warnings))


def _as_float_audio(audio) -> tuple[np.ndarray, list[str]]:
    """Mono float32 in [-1, 1]: integer PCM scaled by its type's range (int16 / 32768, ...);
    non-finite samples zeroed and clipping said, not done silently."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    warnings = []
    if audio.dtype.kind in "iu":
        info = np.iinfo(audio.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 128 for uint8
        audio = ((audio.astype(np.float64) - mid) / (int(info.max) + 1 - mid)).astype(np.float32)
    elif audio.dtype.kind == "f":
        audio = audio.astype(np.float32)
    else:
        raise ValueError(f"audio must be float or integer PCM, got {audio.dtype}")
    finite = np.isfinite(audio)
    over = int(np.count_nonzero(np.abs(np.where(finite, audio, 0)) > 1.0))
    audio, bad = sanitise(audio.copy())
    if bad:
        warnings.append(f"{bad} non-finite audio sample(s) (NaN/inf) zeroed")
    if over:
        warnings.append(f"{over} audio sample(s) outside [-1, 1] clipped (float audio is expected in [-1, 1])")
    return audio, warnings


__all__ = ["Recognizer", "Result", "InputError", "ModelError", "bundled_model"]
