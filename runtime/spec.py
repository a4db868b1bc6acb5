"""The feature spec: every constant that turns a clip into model inputs, frozen in one object.

Export writes it into the ONNX metadata (`mer.feature_spec`); the runtime reads it back, so a
model always gets the features it was trained on, and refuses a model it cannot serve.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

LABELS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
)


class SpecError(ValueError):
    """A feature spec the runtime cannot honour."""


@dataclass(frozen=True)
class FeatureSpec:
    sample_rate: int = 16000   # Hz, mono
    window_s: float = 3.6      # one window for both modalities
    n_fft: int = 1024
    win_length: int = 1024     # periodic Hann, centred frames, zero padding
    hop_length: int = 368      # 3.6 s at 16 kHz -> 157 frames
    n_mels: int = 128          # Slaney mel scale, Slaney area norm
    fmin: float = 0.0
    fmax: float = 8000.0
    n_mfcc: int = 10           # DCT-II, orthonormal
    top_db: float = 80.0       # dB floor relative to the window's peak
    frames: int = 15           # face frames, sampled by time
    image_size: int = 224      # square RGB face crops

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.window_s))

    @property
    def n_frames_audio(self) -> int:
        return 1 + self.n_samples // self.hop_length

    @property
    def mfcc_shape(self) -> tuple[int, int]:
        return (self.n_mfcc, self.n_frames_audio)

    @property
    def faces_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.image_size, self.image_size, 3)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"feature spec is not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise SpecError("feature spec is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"feature spec has fields this runtime does not know: {', '.join(unknown)}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in data.items():
            wanted = (int,) if types[key] == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise SpecError(f"feature spec field {key} must be a number, got {value!r}")
        spec = cls(**data)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise SpecError unless the NumPy front end and the I/O contract can serve this spec."""
        problems = []
        if not 8000 <= self.sample_rate <= 48000:
            problems.append(f"sample_rate {self.sample_rate} outside 8000-48000 Hz")
        if not 0.5 <= self.window_s <= 30:
            problems.append(f"window_s {self.window_s} outside 0.5-30 s")
        if not 0 < self.win_length <= self.n_fft:
            problems.append(f"win_length {self.win_length} must be in 1..n_fft ({self.n_fft})")
        if not 0 < self.hop_length <= self.n_fft:
            problems.append(f"hop_length {self.hop_length} must be in 1..n_fft")
        if not 0 < self.n_mfcc <= self.n_mels:
            problems.append(f"n_mfcc {self.n_mfcc} must be in 1..n_mels ({self.n_mels})")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"mel band {self.fmin}-{self.fmax} Hz does not fit under Nyquist")
        if self.frames != 15 or self.image_size != 224:
            problems.append(
                f"faces must be 15 x 224 x 224 (the I/O contract), got {self.frames} x "
                f"{self.image_size} x {self.image_size}")
        if problems:
            raise SpecError("; ".join(problems))


DEFAULT_SPEC = FeatureSpec()
