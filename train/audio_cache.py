"""Speech cache: each take's audio decoded once by the runtime's own decoder and resampler.

The cache keeps up to CACHE_S seconds per take (RAVDESS utterances are under 6 s), so training
can draw windows around the centre; the runtime's centred window is `runtime_window`. MFCCs are
then computed by the runtime's NumPy front end, so training and serving see the same features.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mer.runtime import window as windows
from mer.runtime.decode import decode_clip
from mer.runtime.mfcc import mfcc
from mer.runtime.spec import FeatureSpec

from .ravdess import Take

CACHE_S = 6.0


@dataclasses.dataclass
class SpeechCache:
    audio: np.ndarray       # float32 (N, CACHE_S * rate), end-padded with zeros
    durations: np.ndarray   # float64 (N,) seconds of real audio
    labels: np.ndarray      # int64 (N,)
    actors: np.ndarray      # int64 (N,)
    keys: list[str]
    sample_rate: int

    def select(self, actors: tuple[int, ...]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.actors, actors))


def build_speech_cache(takes: list[Take], spec: FeatureSpec, cache_dir: Path) -> SpeechCache:
    """Decode (or load from `cache_dir`) the audio of every take that has an audio file."""
    takes = [t for t in takes if t.audio is not None]
    digest = hashlib.sha1(json.dumps([str(t.audio) for t in takes] + [spec.sample_rate]).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"speech-{spec.sample_rate}-{digest}.npz"
    if path.exists():
        blob = np.load(path)
        return SpeechCache(blob["audio"], blob["durations"], blob["labels"], blob["actors"],
                           [str(k) for k in blob["keys"]], int(blob["sample_rate"]))
    long_spec = dataclasses.replace(spec, window_s=CACHE_S)
    audio = np.zeros((len(takes), long_spec.n_samples), np.float32)
    durations = np.zeros(len(takes))
    for i, take in enumerate(tqdm(takes, desc="decoding speech", unit="file")):
        audio[i], durations[i] = decode_cached(take.audio, spec)
    cache = SpeechCache(audio, durations, np.array([t.emotion for t in takes]), np.array([t.actor for t in takes]),
                        [t.key for t in takes], spec.sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), audio=audio, durations=durations, labels=cache.labels,
             actors=cache.actors, keys=np.array(cache.keys), sample_rate=spec.sample_rate)
    path.with_suffix(".tmp.npz").replace(path)
    return cache


def runtime_window(cache: SpeechCache, i: int, spec: FeatureSpec, shift_s: float = 0.0) -> np.ndarray:
    """The spec's window of take i as the runtime cuts it (window.py), optionally shifted by shift_s."""
    return cut_window(cache.audio[i], float(cache.durations[i]), spec, shift_s)


def cut_window(cached: np.ndarray, duration: float, spec: FeatureSpec, shift_s: float = 0.0) -> np.ndarray:
    """The runtime's window (window.py) of a recording of `duration` s whose centred CACHE_S
    seconds are `cached`, optionally shifted by shift_s.

    Cache sample 0 is the recording's `centred(duration, long_spec).start`; the runtime's window is
    placed relative to that."""
    cached_from = windows.audio_start(windows.centred(duration, dataclasses.replace(spec, window_s=CACHE_S)), spec)
    window = windows.centred(duration, spec)
    window = windows.Window(max(0.0, window.start + shift_s), window.end + shift_s)
    first = windows.audio_start(window, spec) - cached_from
    out = cached[max(0, first):max(0, first) + spec.n_samples]
    return np.pad(out, (0, spec.n_samples - len(out)))


def decode_cached(path: Path, spec: FeatureSpec) -> tuple[np.ndarray, float]:
    """(the recording's centred CACHE_S seconds at spec's rate, end-padded; its duration capped at CACHE_S)."""
    clip = decode_clip(path, dataclasses.replace(spec, window_s=CACHE_S))
    return clip.audio, min(clip.duration or CACHE_S, CACHE_S)


def mfcc_batch(cache: SpeechCache, idx: np.ndarray, spec: FeatureSpec, rng: np.random.Generator | None = None,
               max_shift_s: float = 0.25, gain_db: float = 6.0, noise_snr_db: tuple[float, float] = (15.0, 40.0),
               speed: float = 0.0) -> np.ndarray:
    """(len(idx), n_mfcc, T) MFCCs; with `rng`, random shift, speed change (factor within
    1 +- `speed`: tempo and pitch together, as in Ko et al. 2015), gain and background noise."""
    out = np.zeros((len(idx), *spec.mfcc_shape), np.float32)
    for j, i in enumerate(idx):
        shift = rng.uniform(-max_shift_s, max_shift_s) if rng is not None else 0.0
        if rng is not None and speed > 0:
            wave = _window_at_speed(cache, int(i), spec, shift, float(rng.uniform(1 - speed, 1 + speed)))
        else:
            wave = runtime_window(cache, int(i), spec, shift)
        if rng is not None:
            wave = wave * np.float32(10 ** (rng.uniform(-gain_db, gain_db) / 20))
            power = float(np.mean(wave ** 2)) + 1e-12
            snr = rng.uniform(*noise_snr_db)
            wave = wave + rng.standard_normal(len(wave)).astype(np.float32) * np.float32(np.sqrt(power / 10 ** (snr / 10)))
        out[j] = mfcc(wave, spec)
    return out


def _window_at_speed(cache: SpeechCache, i: int, spec: FeatureSpec, shift_s: float, factor: float) -> np.ndarray:
    """The runtime window of take i played `factor` times faster, about the same centre."""
    centre = (windows.centred(float(cache.durations[i]), spec).start + shift_s) * spec.sample_rate + spec.n_samples / 2
    positions = centre + (np.arange(spec.n_samples) - spec.n_samples / 2) * factor
    source = cache.audio[i]
    return np.interp(positions, np.arange(len(source)), source, left=0.0, right=0.0).astype(np.float32)
