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
        spec, pad = self.spec, self.spec.n_fft // 2
        self.padded[pad:pad + self.n_samples] = audio
        np.multiply(self.frames, self.window, out=self.windowed)
        np.fft.rfft(self.windowed, axis=1, out=self.spectrum)
        np.square(self.spectrum.real, out=self.power)
        np.square(self.spectrum.imag, out=self.scratch)
        self.power += self.scratch
        for rows, lo, hi, weights in self.bands:
            if weights is None:
                self.mel[rows] = 0.0
            else:
                np.matmul(weights, self.power[:, lo:hi].T, out=self.mel[rows])
        db = self.mel
        np.maximum(db, _AMIN, out=db)
        np.log10(db, out=db)
        db *= 10.0
        np.maximum(db, db.max() - spec.top_db, out=db)
        return (self.dct @ db).astype(np.float32)


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
