"""`mer-infer` end to end on real clips, and every kind of bad input: one line, no traceback,
the other inputs still done, the right exit status."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mer.runtime.recognizer import TIMINGS
from mer.runtime.spec import DEFAULT_SPEC, LABELS

RECORD_KEYS = {"file", "label", "index", "probabilities", "faces_detected", "audio", "window", "timings_ms", "model"}


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mer.runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "MER_DEBUG": ""})


def records(proc) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


def assert_clean_stderr(proc) -> None:
    """stderr carries only our own one-line messages: no traceback, no native INFO lines."""
    assert "Traceback" not in proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith(("mer-infer: error: ", "mer-infer: note: ", "mer-infer: summary: ")), line


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("mer-infer: error: ")]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, clip_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    good = clip_factory("good.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "notes.txt.mp4").write_text("just some text, not a video\n" * 100)
    # Named as a photo: FFmpeg's image reader takes it by its name, and every packet then fails.
    (root / "random.jpg").write_bytes(np.random.default_rng(1).bytes(3_000))
    return {"missing": root / "does_not_exist.mp4",
            "empty": root / "empty.mp4", "random": root / "random.mp4", "truncated": root / "truncated.mp4",
            "text": root / "notes.txt.mp4", "random_photo": root / "random.jpg"}


def test_good_and_bad_inputs_in_one_call(exported, clip_factory, bad_inputs):
    good = clip_factory("good.mp4")
    args = [bad_inputs["missing"], good, *[p for k, p in bad_inputs.items() if k != "missing"]]
    proc = run_cli(*args, "--model", exported("ia"), "--json")
    assert proc.returncode == 1
    assert_clean_stderr(proc)
    errors = error_lines(proc)
    assert len(errors) == len(bad_inputs)
    for name, path in bad_inputs.items():
        assert any(str(path) in line for line in errors), (name, errors)
    out = records(proc)
    assert list(out) == ["good.mp4"]
    rec = out["good.mp4"]
    assert RECORD_KEYS <= set(rec)
    assert list(rec["probabilities"]) == list(LABELS)
    assert abs(sum(rec["probabilities"].values()) - 1) < 1e-4
    assert rec["label"] == LABELS[rec["index"]] == max(rec["probabilities"], key=rec["probabilities"].get)
    assert rec["faces_detected"] == 15 and rec["audio"] is True
    assert set(rec["timings_ms"]) == set(TIMINGS)
    assert rec["model"]["backend"] == "onnxruntime:CPUExecutionProvider" and rec["model"]["fusion"] == "ia"


def test_a_folder_of_clips_and_photos_gives_a_record_for_each(exported, clip_factory, face, tmp_path):
    """A face set's photos sit beside clips in a folder: each is recognised (a photo as the face
    alone); what is not media is skipped and said."""
    import shutil

    import cv2

    shutil.copy(clip_factory("good.mp4"), tmp_path / "talk.mp4")
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.ascontiguousarray(face[:, :, ::-1]))
    (tmp_path / "readme.txt").write_text("not media\n")
    proc = run_cli(tmp_path, "--json", "--model", exported("ia"))
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc)
    out = records(proc)
    assert sorted(out) == ["photo.jpg", "talk.mp4"]
    assert out["photo.jpg"]["faces_detected"] == 15 and out["photo.jpg"]["audio"] is False
    assert out["photo.jpg"]["warnings"] == ["a still image: its one frame is the whole window (the face alone, no audio)"]
    assert out["talk.mp4"]["audio"] is True


def test_error_reasons_are_specific(exported, bad_inputs):
    proc = run_cli(*bad_inputs.values(), "--model", exported("ia"))
    lines = dict(zip(bad_inputs, error_lines(proc)))
    assert "no such file" in lines["missing"]
    assert "empty file" in lines["empty"]
    for kind in ("random", "truncated", "text"):
        assert "media" in lines[kind] or "corrupt" in lines[kind], lines[kind]
    assert "corrupt or unreadable media" in lines["random_photo"]  # not "no face and no audio in it"
    assert proc.returncode == 1


def test_table_output(exported, clip_factory):
    good = clip_factory("good.mp4")
    proc = run_cli(good, "--model", exported("ia"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    header, row = proc.stdout.splitlines()[:2]
    assert header.split() == ["FILE", "LABEL", "PROB", "FACES", "AUDIO", "TOTAL_MS"]
    assert row.split()[0] == str(good) and row.split()[1] in LABELS and "15/15" in row


@pytest.mark.parametrize("kind", ["no_audio", "audio_only", "short", "minute", "no_face", "two_faces", "rotated", "uhd", "webm"])
def test_degraded_inputs_give_flagged_results(exported, clip_factory, tmp_path, speech, kind):
    from media import write_audio

    make = {
        "no_audio": lambda: clip_factory("no_audio.mp4", audio=False),
        "audio_only": lambda: write_audio(tmp_path / "speech.m4a", speech),
        "short": lambda: clip_factory("short.mp4", seconds=0.7),
        "minute": lambda: clip_factory("minute.mp4", seconds=60.0, fps=10.0, size=(640, 360)),
        "no_face": lambda: clip_factory("no_face.mp4", faces=0),
        "two_faces": lambda: clip_factory("two_faces.mp4", faces=2),
        "rotated": lambda: clip_factory("rotated.mp4", rotation=-90),
        "uhd": lambda: clip_factory("uhd.mp4", seconds=1.0, size=(3840, 2160), fps=15.0),
        "webm": lambda: clip_factory("clip.webm", codec="libvpx-vp9", size=(640, 360), fps=15.0),
    }[kind]
    path = make()
    proc = run_cli(path, "--model", exported("ia"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc)
    rec = json.loads(proc.stdout)
    warnings = " | ".join(rec["warnings"])
    if kind == "no_audio":
        assert rec["audio"] is False and rec["faces_detected"] == 15 and "no audio" in warnings
    elif kind == "audio_only":
        assert rec["audio"] is True and rec["faces_detected"] == 0 and "no video" in warnings
    elif kind == "short":
        assert rec["window"] == [0.0, 3.6] and "shorter than" in warnings and rec["faces_detected"] > 0
    elif kind == "minute":
        assert rec["window"] == pytest.approx([28.2, 31.8], abs=0.05) and rec["faces_detected"] == 15
    elif kind == "no_face":
        assert rec["faces_detected"] == 0 and "no face" in warnings and rec["audio"] is True
    elif kind == "two_faces":
        assert rec["faces_detected"] == 15 and "largest" in warnings
    else:
        assert rec["faces_detected"] == 15 and rec["audio"] is True, rec


def test_model_that_is_not_onnx(tmp_path, clip_factory):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("definitely not a protobuf")
    proc = run_cli(clip_factory("good.mp4"), "--model", bogus)
    assert proc.returncode == 2
    assert_clean_stderr(proc)
    assert len(proc.stderr.splitlines()) == 1 and str(bogus) in proc.stderr and "ONNX" in proc.stderr


def test_missing_model_file(tmp_path, clip_factory):
    proc = run_cli(clip_factory("good.mp4"), "--model", tmp_path / "nope.onnx")
    assert proc.returncode == 2 and "not found" in proc.stderr
    assert_clean_stderr(proc)


def _with_spec(src: Path, dst: Path, spec_json: str) -> Path:
    import onnx

    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "mer.feature_spec":
            prop.value = spec_json
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("spec_json, reason", [
    (dataclasses.replace(DEFAULT_SPEC, n_mfcc=20).to_json(), "does not match its feature spec"),
    ('{"sample_rate": 16000, "pitch_shift": 2}', "does not know"),
    (dataclasses.replace(DEFAULT_SPEC, frames=16).to_json(), "15 x 224 x 224"),
])
def test_model_whose_spec_the_runtime_cannot_honour_is_refused(exported, clip_factory, tmp_path, spec_json, reason):
    model = _with_spec(exported("ia"), tmp_path / "odd.onnx", spec_json)
    proc = run_cli(clip_factory("good.mp4"), "--model", model)
    assert proc.returncode == 2
    assert_clean_stderr(proc)
    assert reason in proc.stderr and str(model) in proc.stderr


def test_model_with_a_different_but_valid_spec_is_served_with_its_own_features(tmp_path, clip_factory):
    """A 20-MFCC, 22.05 kHz model: the runtime computes exactly the features its metadata asks for."""
    pytest.importorskip("torch")
    from mer.export.onnx_export import export_onnx
    from mer.runtime import Recognizer
    from mer.train.fusion import MerModel

    spec = dataclasses.replace(DEFAULT_SPEC, sample_rate=22050, n_fft=2048, win_length=2048, hop_length=512,
                               fmax=11025.0, n_mfcc=20)
    path = export_onnx(MerModel("ia", n_mfcc=20), spec, tmp_path / "ia20.onnx", "test")
    with Recognizer(path, backend="cpu") as rec:
        assert rec.spec == spec
        result = rec.predict(clip_factory("good.mp4"))
    assert result.audio and result.faces_detected == 15 and result.label in LABELS


def test_usage_errors_exit_2_without_traceback(exported, clip_factory):
    proc = run_cli(clip_factory("good.mp4"), "--model", exported("ia"), "--fusion", "lt")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli()
    assert proc.returncode == 2


def test_tensorrt_engine_without_tensorrt_or_with_wrong_backend(tmp_path, clip_factory):
    engine = tmp_path / "ia.fp16.engine"
    engine.write_bytes(b"\0" * 64)
    proc = run_cli(clip_factory("good.mp4"), "--model", engine, "--backend", "cpu")
    assert proc.returncode == 2 and "runs only with backend tensorrt" in proc.stderr
    assert_clean_stderr(proc)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        proc = run_cli(clip_factory("good.mp4"), "--model", engine)
        assert proc.returncode == 2 and "tensorrt is not installed" in proc.stderr
        assert_clean_stderr(proc)
