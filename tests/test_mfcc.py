"""The NumPy MFCC against librosa (test-only reference), and the feature spec object."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mer.runtime.mfcc import mfcc
from mer.runtime.spec import DEFAULT_SPEC, FeatureSpec, SpecError

librosa = pytest.importorskip("librosa")


def _reference(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    return librosa.feature.mfcc(y=y, sr=spec.sample_rate, n_mfcc=spec.n_mfcc, n_fft=spec.n_fft,
                                win_length=spec.win_length, hop_length=spec.hop_length, n_mels=spec.n_mels,
                                fmin=spec.fmin, fmax=spec.fmax)


@pytest.mark.parametrize("spec", [
    DEFAULT_SPEC,
    dataclasses.replace(DEFAULT_SPEC, n_mfcc=40, hop_length=160, n_mels=64),
    dataclasses.replace(DEFAULT_SPEC, n_fft=2048, win_length=1600, fmin=50.0, fmax=7600.0),
], ids=["default", "40mfcc-hop160", "win1600-band"])
def test_mfcc_matches_librosa_on_real_speech(speech, spec):
    y = np.pad(speech[: spec.n_samples], (0, max(0, spec.n_samples - len(speech))))
    ours, ref = mfcc(y, spec), _reference(y, spec)
    assert ours.shape == ref.shape == spec.mfcc_shape
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 1e-3, rel


def test_mfcc_of_silence_is_the_floor_not_nan():
    out = mfcc(np.zeros(DEFAULT_SPEC.n_samples, np.float32), DEFAULT_SPEC)
    assert np.isfinite(out).all()


def test_spec_round_trips_through_json():
    spec = dataclasses.replace(DEFAULT_SPEC, n_mfcc=20)
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert DEFAULT_SPEC.mfcc_shape == (10, 157)


@pytest.mark.parametrize("text, fragment", [
    ('{"n_mfcc": 200}', "n_mfcc"),
    ('{"frames": 16}', "15 x 224"),
    ('{"window": "hamming"}', "does not know"),
    ('[1, 2]', "not a JSON object"),
    ('not json', "not JSON"),
])
def test_spec_refuses_what_it_cannot_honour(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        FeatureSpec.from_json(text)
