"""NumPy MFCC front end: centred STFT -> Slaney mel power -> dB (80 dB floor) -> orthonormal DCT-II.

Numerically the same recipe as `librosa.feature.mfcc` with the spec's parameters (librosa >= 0.10
zero-pads the centred frames, as here). The filter bank, window and DCT matrix are built once per
spec; one call is two small matrix products and one real FFT.
"""
from __future__ import annotations

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
def _filterbank_t(spec: FeatureSpec) -> np.ndarray:
    """(bins, n_mels), contiguous: frames-major products are ~3x faster than bins-major ones."""
    return np.ascontiguousarray(mel_filterbank(spec).T)


@lru_cache(maxsize=8)
def _dct_t(n_mfcc: int, n_mels: int) -> np.ndarray:
    return np.ascontiguousarray(dct_matrix(n_mfcc, n_mels).T)


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


def power_spectrogram(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """|STFT|^2 of centred, zero-padded frames, frames-major: (1 + len // hop, 1 + n_fft // 2)."""
    pad = spec.n_fft // 2
    padded = np.pad(np.asarray(audio, dtype=np.float32), (pad, pad))
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop_length]
    spectrum = np.fft.rfft(frames * _window(spec), axis=1)
    return spectrum.real ** 2 + spectrum.imag ** 2


def mfcc(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """MFCC (n_mfcc, 1 + len(audio) // hop) float32 of mono audio at spec.sample_rate."""
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    mel = power_spectrogram(audio, spec) @ _filterbank_t(spec)          # (frames, mels)
    db = 10.0 * np.log10(np.maximum(mel, _AMIN))
    db = np.maximum(db, db.max() - spec.top_db)
    return np.ascontiguousarray((db @ _dct_t(spec.n_mfcc, spec.n_mels)).T, dtype=np.float32)
