"""Multi-corpus speech: each corpus's names onto mer's labels and speakers, the recording-condition
views (real decode, real codecs) matching the runtime's features, balanced draws, a training step,
and calibration (temperature fitting, ECE, the temperature inside the exported graph).

The corpora tree is built from real speech (tests/fixtures, or RAVDESS when ../shared is there)
under each corpus's own file-naming scheme, so it runs in a fresh clone."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import FIXTURE_SPEECH, SHARED  # noqa: E402

from mer.runtime.spec import DEFAULT_SPEC, LABELS  # noqa: E402
from mer.train import speech_augment as A  # noqa: E402
from mer.train.speech_corpora import CORPORA, CorpusError, index_corpora  # noqa: E402

# corpus -> [(relative path, expected label or None when the corpus's class is dropped)]
TREE = {
    "ravdess_speech_16k": [("Actor_03/03-01-05-01-01-01-03.flac", "angry"), ("Actor_04/03-01-02-01-01-01-04.flac", "calm")],
    "speech_more/tess": [("OAF_angry/OAF_back_angry.opus", "angry"),
                         ("YAF_pleasant_surprise/YAF_back_ps.opus", "surprised")],
    "speech_more/emodb": [("03a01Wa.opus", "angry"), ("08a02Lb.opus", None), ("16b10Ab.opus", "fearful")],
    "speech_more/urdu": [("Sad/SF3_F5_S05.opus", "sad"), ("Neutral/SM1_F1_N01.opus", "neutral")],
    "speech_more/turev": [("Calm/1157_sk_acik.opus", "calm"), ("Happy/7895_mt_beste.opus", "happy")],
}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Real speech, pitched and levelled differently per file, under the corpora's own names."""
    from mer.runtime.decode import decode_clip

    root = tmp_path_factory.mktemp("data")
    speech = decode_clip(FIXTURE_SPEECH, DEFAULT_SPEC)
    x = speech.audio[: int(speech.duration * DEFAULT_SPEC.sample_rate)]
    for k, (corpus, files) in enumerate(TREE.items()):
        for j, (name, _) in enumerate(files):
            path = root / corpus / name
            path.parent.mkdir(parents=True, exist_ok=True)
            y = A.gain(A.resample(x, 16000, 15000 + 500 * (k + j)), -6.0 * j)  # another voice, another level
            if path.suffix == ".flac":
                shutil.copy(FIXTURE_SPEECH, path)
            else:
                path.write_bytes(A.encode(y[: 16000 * (1 + k % 3)], 16000, "opus", 24000))
    return root


def test_each_corpus_maps_onto_mer_labels_and_prefixed_speakers(corpora):
    utts = index_corpora(corpora)
    expected = {name.split("/")[-1]: label for files in TREE.values() for name, label in files}
    got = {u.path.name: LABELS[u.label] for u in utts}
    assert got == {k: v for k, v in expected.items() if v is not None}  # EMO-DB boredom is dropped
    assert {u.corpus for u in utts} == set(CORPORA)
    speakers = {u.path.name: u.speaker for u in utts}
    assert speakers["OAF_back_angry.opus"] == "tess:OAF" and speakers["03a01Wa.opus"] == "emodb:03"
    assert speakers["SF3_F5_S05.opus"] == "urdu:SF3" and speakers["1157_sk_acik.opus"] == "turev:1157"
    assert speakers["03-01-05-01-01-01-03.flac"] == "ravdess:03"


def test_corpus_errors_name_the_folder(corpora, tmp_path):
    with pytest.raises(CorpusError, match="speech_more/tess: not a directory"):
        index_corpora(tmp_path, ("tess",))
    odd = tmp_path / "speech_more" / "urdu" / "Bored"
    odd.mkdir(parents=True)
    shutil.copy(corpora / "speech_more/urdu/Sad/SF3_F5_S05.opus", odd / "SM2_F1_B01.opus")
    with pytest.raises(CorpusError, match="urdu: unexpected emotion name 'Bored'"):
        index_corpora(tmp_path, ("urdu",))


def test_views_are_the_runtime_features_and_conditions_change_them(corpora, tmp_path):
    from mer.runtime.decode import decode_clip
    from mer.runtime.mfcc import mfcc
    from mer.train.speech_views import build_views

    utts = index_corpora(corpora)
    views = build_views(utts, DEFAULT_SPEC, tmp_path, views=3, workers=1, log=lambda _: None)
    assert views.mfcc.shape == (len(utts), 3, 40, DEFAULT_SPEC.n_frames_audio)
    for i in (0, 3, len(utts) - 1):  # view 0: exactly what the runtime computes from the file
        served = mfcc(decode_clip(utts[i].path, DEFAULT_SPEC).audio, DEFAULT_SPEC)
        assert np.abs(views.features(np.array([i]), 0, 10)[0] - served).max() < 1e-3
        assert np.abs(views.mfcc[i, 1, :10] - served).mean() > 0.1  # a recording condition moved it
    again = build_views(utts, DEFAULT_SPEC, tmp_path, views=3, workers=1, log=lambda _: None)  # cached
    assert np.array_equal(np.asarray(again.mfcc), np.asarray(views.mfcc))


def test_balanced_draws_give_each_corpus_and_class_equal_mass(corpora, tmp_path):
    from mer.train.speech_views import SpeechViews
    from mer.train.train_speech import balanced_weights

    corpus = np.array(["a"] * 90 + ["b"] * 10)
    labels = np.array([0] * 60 + [1] * 30 + [2] * 5 + [3] * 5)
    views = SpeechViews(np.zeros((100, 1, 40, 3), np.float32), labels, corpus, corpus, [""] * 100)
    p = balanced_weights(views, np.arange(100))
    assert np.isclose(p[corpus == "a"].sum(), 0.5) and np.isclose(p[labels == 0].sum(), 0.25)
    assert np.isclose(p[labels == 3].sum(), 0.25)


def test_recording_conditions_are_real_encodes():
    rate, t = 16000, np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for codec, (_, _, rates) in A.CODECS.items():
        data = A.encode(x, rate, codec, rates[0])
        assert len(data) < len(x) * 2 // 4, codec  # compressed well below 16-bit PCM
        y = A.codec_roundtrip(x, rate, codec, rates[0])
        assert len(y) == len(x) and np.sqrt(np.mean(y ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.2), codec
    phone = A.resample(A.resample(x + 0.1 * np.sin(2 * np.pi * 6000 * t).astype(np.float32), rate, 8000), 8000, rate)
    spectrum = np.abs(np.fft.rfft(phone[:16000]))
    assert spectrum[6000] < 0.01 * spectrum[440]  # an 8 kHz source has nothing above 4 kHz
    noisy = A.add_noise(x, 10.0, A.coloured_noise("pink", len(x), np.random.default_rng(0)))
    assert 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2)) == pytest.approx(10.0, abs=0.01)
    h = A.room_response(0.5, rate, np.random.default_rng(0))
    energy = np.cumsum(h[::-1] ** 2)[::-1]
    assert 10 * np.log10(energy[int(0.25 * rate)] / energy[1]) == pytest.approx(-30, abs=4)  # -60 dB at RT60


def test_temperature_fit_recovers_the_temperature_and_lowers_ece():
    from mer.train.calibrate import ece, fit_temperature, softmax

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (4000, 8))
    labels = np.array([rng.choice(8, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # a model 3x too sure of itself
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert ece(softmax(overconfident / t), labels) < 0.03 < ece(softmax(overconfident), labels)


def test_face_alone_temperature_is_fitted_with_calm_counted_as_neutral():
    """A face model 3x too sure of itself that spreads its neutral between neutral and calm (it cannot
    tell them apart): fitted on face labels (no calm) with calm counted as neutral, T comes back 3
    and the scores, read with calm counted as neutral, are calibrated."""
    from mer.train.calibrate import ece, face_scores, fit_temperature, softmax

    rng = np.random.default_rng(2)
    true_logits = rng.normal(0, 2.0, (4000, 7))                  # neutral, happy, ... surprised (no calm)
    labels = np.array([rng.choice(7, p=p) for p in softmax(true_logits)])
    labels = np.where(labels > 0, labels + 1, 0)                   # into mer's 8 labels, calm (1) never true
    share = rng.uniform(0.1, 0.9, len(labels))                    # neutral's mass split, face by face
    split = np.insert(true_logits, 1, true_logits[:, 0] + np.log(1 - share), axis=1)
    split[:, 0] += np.log(share)
    model_logits = 3.0 * split
    t = fit_temperature(model_logits, labels, calm_as_neutral=True)
    assert t == pytest.approx(3.0, rel=0.1)
    assert ece(face_scores(softmax(model_logits / t)), labels) < 0.03 < ece(face_scores(softmax(model_logits)), labels)


def test_temperature_is_chosen_by_the_condition_the_runtime_feeds():
    import torch

    from mer.train.fusion import MerModel

    torch.manual_seed(0)
    model = MerModel("ia", face_size=112).eval()
    faces = torch.randint(1, 255, (3, 15, 224, 224, 3), dtype=torch.uint8)
    mfcc = torch.randn(3, 10, DEFAULT_SPEC.n_frames_audio)
    faces[1] = 0   # no face
    mfcc[2] = 0    # no audio
    with torch.no_grad():
        plain = model(faces, mfcc)
        model.temperature.copy_(torch.tensor([2.0, 4.0, 8.0]))
        bias = torch.randn(3, 8)
        model.class_bias.copy_(bias)
        scaled = model(faces, mfcc)
    assert torch.allclose((scaled - bias) * torch.tensor([[2.0], [4.0], [8.0]]), plain, atol=1e-5)
    assert {"temperature", "class_bias"} <= set(model.state_dict())


@pytest.mark.skipif(not (SHARED / "data" / "speech_more").is_dir(), reason=f"needs {SHARED}/data/speech_more")
def test_shared_corpora_index_as_their_readme_says():
    utts = index_corpora(SHARED / "data")
    counts = {c: sum(u.corpus == c for u in utts) for c in CORPORA}
    assert counts == {"ravdess": 1320, "tess": 2800, "emodb": 535 - 81, "urdu": 400, "turev": 1735}
    assert len({u.speaker for u in utts if u.corpus == "emodb"}) == 10
    assert not any(u.speaker in ("ravdess:01", "ravdess:02") for u in utts)
