"""`mer-eval`: labels read from folders, RAVDESS names and CSVs; the report's arithmetic against the
runtime's own answers; the temperature refit; the rewritten model checked through ONNX Runtime.

Real media throughout (the fixture face and speech, or ../shared's when present) and the real
bundled model; the labels are ours to give, so the test checks what mer-eval says about the
answers, not how right the model is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mer.runtime.calibration import ece, softmax
from mer.runtime.contract import CONDITIONS, Meta
from mer.runtime.evaluate import (LabelError, Labelled, condition_of, fit_conditions, folds_of, labelled_clips,
                                  raw_logits, recalibrate, summary)
from mer.runtime.recognizer import bundled_model
from mer.runtime.spec import LABELS


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_labels_from_folders_ravdess_names_and_csv(tmp_path):
    a = _touch(tmp_path / "set" / "spk1" / "Anger" / "a.mp4")            # a synonym, nested under a speaker
    b = _touch(tmp_path / "set" / "happy" / "b.wav")
    c = _touch(tmp_path / "set" / "misc" / "01-01-07-02-01-01-12.flac")  # RAVDESS: disgust, actor 12
    _touch(tmp_path / "set" / "happy" / "notes.txt")                     # not media: skipped
    table = tmp_path / "labels.csv"
    table.write_text("file,label,group\nset/happy/b.wav,SUR,s9\nset/spk1/Anger/a.mp4,fear,\n")
    got = labelled_clips([str(tmp_path / "set"), str(table)])
    assert got == [Labelled(str(b), "happy"), Labelled(str(c), "disgust", "actor12"), Labelled(str(a), "angry"),
                   Labelled(str(b), "surprised", "s9"), Labelled(str(a), "fearful", None)]  # folders sorted


@pytest.mark.parametrize("make, message", [
    (lambda d: _touch(d / "x" / "clip.mp4").parent, "clip.mp4: cannot tell its emotion"),
    (lambda d: (d / "t.csv").write_text("file,label\nclip.mp4,bored\n") and d / "t.csv", "line 2: 'bored' is not an emotion"),
    (lambda d: (d / "t.csv").write_text("path,emotion\nclip.mp4,sad\n") and d / "t.csv", "want a header with columns file,label"),
    (lambda d: d / "missing", "missing: no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no labelled media files"),
])
def test_labels_that_cannot_be_read_name_the_source(tmp_path, make, message):
    with pytest.raises(LabelError, match=message):
        labelled_clips([str(make(tmp_path))])


def test_raw_logits_undo_the_calibration_and_the_fit_finds_the_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (3000, len(LABELS)))
    truth = np.array([rng.choice(len(LABELS), p=p) for p in softmax(z / 2.0)])  # true temperature 2
    conds = np.repeat([0, 1, 2], [1500, 1480, 20])
    t_old = np.array([1.0, 1.4, 0.8])
    bias = rng.normal(0, 0.3, (3, len(LABELS)))
    probs = softmax(z / t_old[conds][:, None] + bias[conds])
    back = raw_logits(probs, conds, t_old, bias)
    np.testing.assert_allclose(softmax(back), softmax(z), atol=1e-9)  # the same logits, up to a constant
    fitted = fit_conditions(back, truth, conds, [None] * len(z), t_old, min_clips=30)
    assert set(fitted) == {"audiovisual", "audio_only"}                # 20 face-only clips: too few to fit
    for row in fitted.values():
        assert 1.8 < row["temperature"] < 2.2
        assert row["ece_after"] < 0.04 and row["ece_cross_fitted"] < 0.05 and row["folds"] == 5
    before = ece(probs[conds == 0], truth[conds == 0])
    assert before > 0.1 > fitted["audiovisual"]["ece_after"]


def test_folds_keep_a_speaker_together():
    groups = ["a", "a", "b", "c", "b", "d", "e", "f", "a"]
    folds = folds_of(groups, k=5)
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    assert len(set(folds)) == 5
    assert folds_of(["a"] * 12) is None                   # one speaker: no fold to hold out
    assert len(set(folds_of([None] * 9))) == 5            # speakers unknown: a clip is its own group
    mixed = folds_of(["a", None, "a", "b", None, "b", "a"], k=3)  # some known: they still stay together
    assert mixed[0] == mixed[2] == mixed[6] and mixed[3] == mixed[5] and len(set(mixed)) == 3


def test_the_face_alone_is_fitted_with_calm_counted_as_neutral():
    """A face that says neutral for a calm clip is not wrong (a face cannot tell them apart): the
    face-only fit must not read it as over-confidence, as a voice-only fit of the same logits does."""
    rng = np.random.default_rng(2)
    n = 400
    truth = rng.choice([LABELS.index("calm"), LABELS.index("happy")], n)
    z = rng.normal(0, 0.5, (n, len(LABELS)))
    said = np.where(truth == LABELS.index("calm"), LABELS.index("neutral"), truth)
    z[np.arange(n), said] += 4.0
    ones = np.ones(3)
    face = fit_conditions(z, truth, np.full(n, 2), [None] * n, ones, min_clips=30)["video_only"]
    voice = fit_conditions(z, truth, np.full(n, 1), [None] * n, ones, min_clips=30)["audio_only"]
    assert face["calm_as_neutral"] and not voice["calm_as_neutral"]
    assert face["temperature"] < 1.0 < voice["temperature"]


def test_summary_and_condition():
    probs = np.eye(len(LABELS))[[0, 1, 2, 2]] * 0.9 + 0.1 / len(LABELS)
    truth = np.array([1, 1, 2, 3])  # neutral said for calm, calm right, happy right, happy said for sad
    s = summary(probs, truth)
    assert s["accuracy"] == 0.5 and s["accuracy_calm_as_neutral"] == 0.75 and s["clips"] == 4
    assert s["uar"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert [condition_of(0, True), condition_of(15, False), condition_of(3, True)] == \
        ["audio_only", "video_only", "audiovisual"]


def _face_inputs(face: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray]:
    crop = cv2.resize(face, (spec.image_size, spec.image_size))
    return np.repeat(crop[None], spec.frames, 0), np.zeros(spec.mfcc_shape, np.float32)


def test_recalibrated_model_divides_by_the_new_temperature_only(tmp_path, face, speech):
    import onnx

    from mer.runtime.backends import load_model
    from mer.runtime.mfcc import mfcc as compute_mfcc

    src, dst = bundled_model("ia"), tmp_path / "ia-mine.onnx"
    recalibrate(src, dst, {"video_only": 2.5}, {"clips": {"video_only": 40}})
    old, new = load_model(src, "cpu"), load_model(dst, "cpu")
    t_old = json.loads(old.info.metadata[Meta.TEMPERATURE])
    t_new = json.loads(new.info.metadata[Meta.TEMPERATURE])
    assert t_new == {**t_old, "video_only": 2.5}
    assert json.loads(new.info.metadata[Meta.RECALIBRATED_ON]) == {"clips": {"video_only": 40}}
    faces, silence = _face_inputs(face, old.info.spec)
    before, after = old.run(faces[None], silence[None])[0], new.run(faces[None], silence[None])[0]
    np.testing.assert_allclose(after, before * t_old["video_only"] / 2.5, rtol=1e-5, atol=1e-5)
    mfcc = compute_mfcc(np.pad(speech, (0, max(0, old.info.spec.n_samples - len(speech))))[:old.info.spec.n_samples],
                        old.info.spec)
    np.testing.assert_allclose(new.run(faces[None], mfcc[None]), old.run(faces[None], mfcc[None]), rtol=1e-5, atol=1e-5)  # kept
    # Only the temperatures changed: every other initializer is byte for byte the source's.
    a, b = onnx.load(str(src)), onnx.load(str(dst))
    changed = [x.name for x, y in zip(a.graph.initializer, b.graph.initializer) if x.raw_data != y.raw_data]
    assert len(changed) == 1
    with pytest.raises(OSError):  # never replaces a file
        recalibrate(src, dst, {"video_only": 1.0}, {})
    assert json.loads(load_model(dst, "cpu").info.metadata[Meta.TEMPERATURE])["video_only"] == 2.5


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mer.runtime.evaluate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory, face, speech):
    """12 photos of the face (lit, shifted, turned a little) in emotion folders, 12 speech files
    (gain, noise) listed in a CSV with two speakers: real media, labels of our choosing."""
    from media import write_audio

    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(1)
    for i in range(12):
        label = ("happy", "sad", "angry")[i % 3]
        m = cv2.getRotationMatrix2D((128, 128), float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.1)))
        img = cv2.warpAffine(face, m, (256, 256), borderMode=cv2.BORDER_REFLECT)
        img = np.clip(img.astype(np.float32) * rng.uniform(0.7, 1.2), 0, 255).astype(np.uint8)
        path = root / "faces" / label / f"f{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img[:, :, ::-1])
    rows = ["file,label,group"]
    for i in range(12):
        wave = speech * rng.uniform(0.3, 1.0) + rng.normal(0, 0.003, len(speech)).astype(np.float32)
        (root / "speech").mkdir(exist_ok=True)
        write_audio(root / "speech" / f"s{i}.wav", wave.astype(np.float32))
        rows.append(f"speech/s{i}.wav,{('neutral', 'angry')[i % 2]},spk{i % 3}")
    (root / "speech.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mer_eval_reports_the_runtimes_answers_and_writes_a_checked_copy(labelled_set, tmp_path):
    from mer.runtime import Recognizer

    out = tmp_path / "mine.onnx"
    run = _run(str(labelled_set / "faces"), str(labelled_set / "speech.csv"), "--json", "--calibrate", str(out),
               "--min-clips", "10", "--plot", str(tmp_path / "rel.png"), cwd=labelled_set)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(run.stdout)
    clips = labelled_clips([str(labelled_set / "faces"), str(labelled_set / "speech.csv")])
    with Recognizer(backend="cpu") as rec:
        results = [rec.predict(c.path) for c in clips]
    right = [r.label == c.label for r, c in zip(results, clips)]
    assert report["clips"] == 24 and report["failed"] == 0
    assert report["conditions"]["all"]["accuracy"] == pytest.approx(np.mean(right))
    counts = {name: sum(condition_of(r.faces_detected, r.audio) == name for r in results) for name in CONDITIONS}
    assert {n: report["conditions"][n]["clips"] for n in CONDITIONS} == counts
    assert counts["video_only"] >= 10 and counts["audio_only"] == 12
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 24 and np.trace(confusion) == sum(right)
    cal = report["calibration"]
    assert set(cal) == {"video_only", "audio_only"}
    assert cal["audio_only"]["folds"] == 3 and cal["audio_only"]["by_group"]        # 3 speakers in the CSV
    assert cal["video_only"]["folds"] == 5 and not cal["video_only"]["by_group"]    # 12 clips, speakers unknown
    assert report["written"] == str(out) and report["checked"]["max_relative_difference"] < 1e-4
    assert report["checked"]["conditions"] == ["audio_only", "video_only"]
    infer = subprocess.run([sys.executable, "-m", "mer.runtime.cli", str(labelled_set / "faces" / "happy" / "f0.png"),
                            "--model", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert infer.returncode == 0, infer.stderr
    probs = json.loads(infer.stdout)["probabilities"]
    t = cal["video_only"]["temperature"] / cal["video_only"]["temperature_before"]
    f0 = next(r for r, c in zip(results, clips) if c.path.endswith("f0.png"))
    want = softmax(np.log([[f0.probabilities[k] for k in LABELS]]) / t)[0]
    np.testing.assert_allclose([probs[k] for k in LABELS], want, atol=2e-6)

    # Again onto the same file: refused before any work, the file untouched.
    before = out.read_bytes()
    again = _run(str(labelled_set / "faces"), "--calibrate", str(out), cwd=labelled_set)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert out.read_bytes() == before
    # Too few clips in every condition: scored, nothing written, and the exit status says so.
    few = _run(str(labelled_set / "faces"), "--calibrate", str(tmp_path / "none.onnx"), "--min-clips", "50",
               cwd=labelled_set)
    assert few.returncode == 2 and "nothing written" in few.stdout and not (tmp_path / "none.onnx").exists()


def test_mer_eval_bad_labels_one_line(labelled_set, tmp_path):
    (tmp_path / "t.csv").write_text("file,label\nnope.wav,bored\n")
    run = _run(str(tmp_path / "t.csv"), cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"mer-eval: error: {tmp_path / 't.csv'}, line 2: 'bored' is not an "
                                               f"emotion ({', '.join(LABELS)} or a synonym)"]


def test_mer_eval_never_imports_torch(tmp_path):
    """mer-eval --calibrate runs where only the runtime is installed: onnx, never torch."""
    code = ("import sys; from pathlib import Path\n"
            "from mer.runtime.evaluate import recalibrate\n"
            "from mer.runtime.recognizer import bundled_model\n"
            f"recalibrate(bundled_model('lt'), Path({str(tmp_path / 'lt.onnx')!r}), {{'audio_only': 2.0}}, {{}})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "lt.onnx").is_file()


def test_labelled_stretches_score_the_timeline_windows_centred_in_them(clip_factory, tmp_path):
    """A CSV with start,end labels stretches of a recording: every timeline window whose centre
    lies in one is scored with its label; windows outside every stretch are not."""
    from mer.runtime import Recognizer
    from mer.runtime.evaluate import measure

    talk = clip_factory("talk8.mp4", seconds=8.0)
    table = tmp_path / "stretches.csv"
    table.write_text(f"file,label,start,end\n{talk},happy,0,3.5\n{talk},sad,4.5,8\n")
    clips = labelled_clips([str(table)])
    assert [(c.label, c.start, c.end) for c in clips] == [("happy", 0.0, 3.5), ("sad", 4.5, 8.0)]
    with Recognizer(backend="cpu") as rec:
        windows = list(rec.timeline(talk))
        report, kept = measure(rec, clips)
    centres = [(r.window[0] + r.window[1]) / 2 for r in windows]
    want = ["happy" if c < 3.5 else "sad" for c in centres if c < 3.5 or 4.5 <= c < 8]
    assert 0 < len(want) < len(windows)                  # some windows fall between the stretches
    assert [k[0].label for k in kept] == want
    assert report["clips"] == report["windows_of_stretches"] == len(want)
    assert {k[0].group for k in kept} == {str(talk)}     # no speaker given: the recording is the group
    right = [r.label == ("happy" if c < 3.5 else "sad") for r, c in zip(windows, centres) if c < 3.5 or 4.5 <= c < 8]
    assert report["conditions"]["all"]["accuracy"] == pytest.approx(np.mean(right))


@pytest.mark.parametrize("row, message", [
    ("a.mp4,sad,3,", "start and end must both be seconds"),
    ("a.mp4,sad,5,2", "want 0 <= start < end"),
    ("a.mp4,sad,x,2", "start and end must both be seconds"),
])
def test_bad_stretches_name_the_line(tmp_path, row, message):
    (tmp_path / "t.csv").write_text(f"file,label,start,end\n{row}\n")
    with pytest.raises(LabelError, match=f"t.csv, line 2: {message}"):
        labelled_clips([str(tmp_path / "t.csv")])
