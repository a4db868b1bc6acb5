"""The Python API (`Recognizer`), and the runtime's independence from torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mer.runtime import LABELS, ModelError, Recognizer
from mer.runtime.errors import InputError
from mer.runtime.recognizer import TIMINGS


def test_predict_arrays_with_either_or_both_modalities(recognizer, speech, face):
    from mer.runtime.faces import FaceCropper
    from media import place_face

    cropper = FaceCropper(recognizer.spec)
    faces = cropper([place_face(face, 1280, 720, k * 0.24) for k in range(15)]).faces
    cropper.close()
    both = recognizer.predict_arrays(faces=faces, audio=speech)
    audio_only = recognizer.predict_arrays(audio=speech)
    face_only = recognizer.predict_arrays(faces=faces)
    for result in (both, audio_only, face_only):
        assert result.label in LABELS and abs(sum(result.probabilities.values()) - 1) < 1e-6
        record = result.to_dict()
        json.dumps(record)
        assert set(record["timings_ms"]) == set(TIMINGS)
    assert audio_only.faces_detected == 0 and audio_only.audio
    assert face_only.faces_detected == 15 and not face_only.audio
    # A trained model uses both modalities: removing one changes the output.
    if not recognizer.info.metadata["mer.trained_on"].startswith("nothing"):
        both_p, audio_p = (np.array(list(r.probabilities.values())) for r in (both, audio_only))
        assert np.abs(both_p - audio_p).max() > 1e-3


def test_predict_arrays_rejects_wrong_shapes(recognizer):
    with pytest.raises(ValueError, match="uint8"):
        recognizer.predict_arrays(faces=np.zeros((15, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="mono"):
        recognizer.predict_arrays(audio=np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError):
        recognizer.predict_arrays()


def test_predict_reuses_one_session_and_detector(recognizer, clip_factory):
    clip = clip_factory("good.mp4")
    first = recognizer.predict(clip)
    session, cropper = recognizer._model.session, recognizer.cropper
    second = recognizer.predict(clip)
    assert recognizer._model.session is session and recognizer.cropper is cropper
    assert first.probabilities == pytest.approx(second.probabilities, abs=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_still_photo_is_the_face_alone_for_the_whole_window(recognizer, face, tmp_path, suffix):
    """A photo (a face set's picture) is read as a one-frame video held for the window: the face
    alone, as the cropper's views of the still give it, with one warning that says so."""
    import cv2

    from mer.runtime.faces import FaceCropper
    from mer.runtime.source import STILL_WARNING

    photo = tmp_path / f"face{suffix}"
    cv2.imwrite(str(photo), np.ascontiguousarray(face[:, :, ::-1]))
    result = recognizer.predict(photo)
    assert result.faces_detected == 15 and not result.audio and result.warnings == [STILL_WARNING]
    if suffix == ".png":  # lossless: the decoded frame is the photo, so the answer is its views'
        cropper = FaceCropper(recognizer.spec)
        crops = cropper.still(face).faces
        cropper.close()
        assert result.probabilities == pytest.approx(recognizer.predict_arrays(faces=crops).probabilities, abs=1e-5)


def test_bad_path_raises_input_error(recognizer, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        recognizer.predict(tmp_path / "nope.mp4")


def test_unknown_backend_and_unavailable_provider(exported):
    with pytest.raises(ModelError, match="unknown backend"):
        Recognizer(exported("ia"), backend="vulkan")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelError, match="CUDAExecutionProvider"):
            Recognizer(exported("ia"), backend="cuda")


def test_runtime_never_imports_torch(exported, clip_factory):
    code = (
        "import sys; from mer.runtime import Recognizer\n"
        f"r = Recognizer({str(exported('ia'))!r}, backend='cpu')\n"
        f"res = r.predict({str(clip_factory('good.mp4'))!r})\n"
        "r.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(res.label)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() in LABELS


def test_a_recognizer_left_open_exits_cleanly(exported, clip_factory):
    """A user who never closes the Recognizer gets no traceback at interpreter exit (MediaPipe's
    detectors close through an executor that stops before `atexit` handlers run)."""
    code = (
        "from mer.runtime import Recognizer\n"
        f"r = Recognizer({str(exported('ia'))!r}, backend='cpu')\n"
        f"print(r.predict({str(clip_factory('good.mp4'))!r}).label)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-2000:]


def test_tensorrt_ep_engine_cache_is_made_and_keyed_by_model_content(tmp_path, monkeypatch):
    """ORT's TensorRT EP makes only the last folder of its cache path and keys engines by file name,
    not weights: the folder must exist beforehand and differ when the weights do. (The options are
    built here; the provider itself needs a GPU.)"""
    from mer.runtime.backends import _provider_options

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-home" / ".cache"))
    a, b = tmp_path / "a" / "ia.onnx", tmp_path / "b" / "ia.onnx"
    for path, content in ((a, b"weights one"), (b, b"weights two")):
        path.parent.mkdir()
        path.write_bytes(content)
    ca = _provider_options("TensorrtExecutionProvider", a)["trt_engine_cache_path"]
    cb = _provider_options("TensorrtExecutionProvider", b)["trt_engine_cache_path"]
    assert Path(ca).is_dir() and Path(cb).is_dir() and ca != cb
