"""NumPy MFCC front end: centred STFT -> Slaney mel power -> dB (80 dB floor) -> orthonormal DCT-II.

Numerically the same recipe as `librosa.feature.mfcc` with the spec's parameters (librosa >= 0.10
zero-pads the centred frames, as here). The filter bank, window and DCT matrix are built once per
spec, with the work buffers (see `_Plan`); one call is one batched real FFT and a few small products.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from .spec import FeatureSpec

_AMIN = 1e-10  # power floor before the log, as librosa's power_to_db


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    lin = hz / f_sp
    log = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, lin)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    lin = mel * f_sp
    log = min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(spec: FeatureSpec) -> np.ndarray:
    """Triangular filters (n_mels, 1 + n_fft // 2), each normalised to unit area (Slaney)."""
    fft_hz = np.linspace(0.0, spec.sample_rate / 2, 1 + spec.n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(spec.fmin), _hz_to_mel(spec.fmax), spec.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (upper - lower))
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II basis (n_mfcc, n_mels)."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi / n_mels * (n + 0.5) * k) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


@lru_cache(maxsize=8)
def _window(spec: FeatureSpec) -> np.ndarray:
    """Periodic Hann of win_length, zero-padded to n_fft on both sides."""
    n = np.arange(spec.win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / spec.win_length)
    left = (spec.n_fft - spec.win_length) // 2
    window = np.zeros(spec.n_fft)
    window[left:left + spec.win_length] = hann
    return window.astype(np.float32)


class _Plan:
    """Constants and work buffers for one (spec, audio length), reused across calls.

    Reuse matters more than it looks: a fresh megabyte-sized array costs page faults on every call,
    which on this kind of VM took longer than the FFT itself. The FFT runs in float64 because
    NumPy's float32 path copies internally and was slower, not faster.
    """

    def __init__(self, spec: FeatureSpec, n_samples: int) -> None:
        n_frames, bins = 1 + n_samples // spec.hop_length, 1 + spec.n_fft // 2
        self.spec, self.n_samples = spec, n_samples
        self.padded = np.zeros(n_samples + 2 * (spec.n_fft // 2))
        self.frames = np.lib.stride_tricks.sliding_window_view(self.padded, spec.n_fft)[:: spec.hop_length]
        self.windowed = np.empty((n_frames, spec.n_fft))
        self.window = _window(spec).astype(np.float64)
        self.spectrum = np.empty((n_frames, bins), np.complex128)
        self.power = np.empty((n_frames, bins))
        self.scratch = np.empty((n_frames, bins))
        self.mel = np.empty((spec.n_mels, n_frames))
        self.dct = dct_matrix(spec.n_mfcc, spec.n_mels).astype(np.float64)
        self.bands = _mel_bands(mel_filterbank(spec).astype(np.float64))

    def mfcc(self, audio: np.ndarray) -> np.ndarray:
        pad = self.spec.n_fft // 2
        self.padded[pad:pad + self.n_samples] = audio
        np.multiply(self.frames, self.window, out=self.windowed)
        return self.log_dct(self.mel_power(self.windowed, self.spectrum, self.power, self.scratch, self.mel))

    def mel_power(self, windowed: np.ndarray, spectrum=None, power=None, scratch=None, mel=None) -> np.ndarray:
        """Mel power (n_mels, n) of n windowed frames (n, n_fft); the buffers are optional."""
        n, bins = len(windowed), 1 + self.spec.n_fft // 2
        spectrum = np.empty((n, bins), np.complex128) if spectrum is None else spectrum
        power = np.empty((n, bins)) if power is None else power
        scratch = np.empty((n, bins)) if scratch is None else scratch
        mel = np.empty((self.spec.n_mels, n)) if mel is None else mel
        np.fft.rfft(windowed, axis=1, out=spectrum)
        np.square(spectrum.real, out=power)
        np.square(spectrum.imag, out=scratch)
        power += scratch
        for rows, lo, hi, weights in self.bands:
            if weights is None:
                mel[rows] = 0.0
            else:
                np.matmul(weights, power[:, lo:hi].T, out=mel[rows])
        return mel

    def log_dct(self, mel: np.ndarray) -> np.ndarray:
        """dB with the spec's floor below the window's peak, then DCT-II: MFCC float32. Overwrites mel."""
        db = mel
        np.maximum(db, _AMIN, out=db)
        np.log10(db, out=db)
        db *= 10.0
        np.maximum(db, db.max() - self.spec.top_db, out=db)
        return (self.dct @ db).astype(np.float32)


class WindowMfcc:
    """MFCCs of overlapping windows of one audio stream, each equal to `mfcc(window_audio)`.

    A window's audio starts on the STFT hop grid (window.audio_start), so its inner frames (those
    whose n_fft span lies inside the window) are the stream's own frames at the same positions:
    they are computed once and shared by every window that covers them. Only the few frames at a
    window's edges, which see its zero padding, and the dB floor (relative to each window's peak)
    are computed per window. Windows must come in order of start (older frames are dropped).
    """

    def __init__(self, spec: FeatureSpec):
        self.spec, self.plan = spec, _Plan(spec, spec.n_samples)
        hop, pad, n = spec.hop_length, spec.n_fft // 2, spec.n_samples
        self.inner = range(-(-pad // hop), (n - pad) // hop + 1)  # frames t whose span is inside
        self.edges = [t for t in range(spec.n_frames_audio) if t not in self.inner]
        self.columns: dict[int, np.ndarray] = {}  # stream frame index -> mel power column
        self.computed = 0  # stream frames computed so far (what sharing saves shows here)

    def __call__(self, read, first: int) -> np.ndarray:
        """MFCC of the window whose audio starts at stream sample `first` (a multiple of the hop);
        `read(start, count)` returns those stream samples, zeros where there is no audio."""
        spec, plan = self.spec, self.plan
        hop, pad, n_fft = spec.hop_length, spec.n_fft // 2, spec.n_fft
        if first % hop:
            raise ValueError(f"window audio must start on the hop grid ({hop}), got sample {first}")
        m = first // hop
        mel = np.empty((spec.n_mels, spec.n_frames_audio))
        audio = read(first, spec.n_samples)
        padded = np.zeros(spec.n_samples + 2 * pad)
        padded[pad:pad + spec.n_samples] = audio
        edge = np.stack([padded[t * hop:t * hop + n_fft] for t in self.edges]) * plan.window
        mel[:, self.edges] = plan.mel_power(edge)
        missing = [m + t for t in self.inner if m + t not in self.columns]
        if missing:
            g0, g1 = missing[0], missing[-1]
            span = read(g0 * hop - pad, (g1 - g0) * hop + n_fft).astype(np.float64)
            frames = np.lib.stride_tricks.sliding_window_view(span, n_fft)[::hop]
            wanted = np.array(missing) - g0
            cols = plan.mel_power(frames[wanted] * plan.window)
            for j, g in enumerate(missing):
                self.columns[g] = cols[:, j].copy()
            self.computed += len(missing)
        mel[:, self.inner.start:self.inner.stop] = np.stack([self.columns[m + t] for t in self.inner], axis=1)
        for g in [g for g in self.columns if g < m]:
            del self.columns[g]
        return plan.log_dct(mel)


def _mel_bands(filters: np.ndarray, rows_per_band: int = 8) -> list[tuple[slice, int, int, np.ndarray | None]]:
    """Split the (n_mels, bins) filter bank into bands of mels with the FFT-bin range they touch.

    Each triangle spans a few bins, so multiplying band by band does ~1/7 of the dense product's
    work (the dense product was the second-largest cost after the FFT).
    """
    bands = []
    for m0 in range(0, filters.shape[0], rows_per_band):
        rows = slice(m0, min(m0 + rows_per_band, filters.shape[0]))
        touched = np.flatnonzero(filters[rows].any(axis=0))
        if touched.size == 0:
            bands.append((rows, 0, 0, None))
            continue
        lo, hi = int(touched[0]), int(touched[-1]) + 1
        bands.append((rows, lo, hi, np.ascontiguousarray(filters[rows, lo:hi])))
    return bands


_plans = threading.local()


def _plan(spec: FeatureSpec, n_samples: int) -> _Plan:
    """One plan per thread (the buffers are written in place), per spec and audio length."""
    cache = getattr(_plans, "by_key", None)
    if cache is None:
        cache = _plans.by_key = {}
    key = (spec, n_samples)
    if key not in cache:
        if len(cache) >= 4:
            cache.clear()
        cache[key] = _Plan(spec, n_samples)
    return cache[key]


def mfcc(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """MFCC (n_mfcc, 1 + len(audio) // hop) float32 of mono audio at spec.sample_rate."""
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    return _plan(spec, len(audio)).mfcc(audio)
