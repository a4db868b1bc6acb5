"""Hostile models and hostile frames, on real components: ONNX Runtime sessions on small real ONNX
files built here, and real MediaPipe BlazeFace through FaceCropper.

Models: logits of the wrong shape, NaN/inf logits, an empty path, a directory, OS errors on the path.
Frames: sizes OpenCV's resize or MediaPipe refuse. Faces: one person kept when two faces of about
the same size swap which is larger."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mer.runtime.backends import OnnxModel, load_model
from mer.runtime.errors import ModelError
from mer.runtime.faces import FaceCropper
from mer.runtime.spec import DEFAULT_SPEC, LABELS, FeatureSpec


# --- tiny real models ---------------------------------------------------------------------------

def build_model(path: Path, logits_shape=(1, len(LABELS)), poison: float | None = None) -> Path:
    """A mer-contract ONNX file: logits = (mean(faces) + mean(mfcc)) * weights, of `logits_shape`.
    `poison`: add Log(poison) to every logit (Log(-1) is NaN, Log(0) is -inf)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spec = FeatureSpec()
    n = int(np.prod(logits_shape))
    weights = numpy_helper.from_array(np.linspace(-1, 1, n, dtype=np.float32).reshape(logits_shape), "weights")
    nodes = [
        helper.make_node("Cast", ["faces"], ["faces_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["faces_f"], ["faces_mean"], keepdims=0),
        helper.make_node("ReduceMean", ["mfcc"], ["mfcc_mean"], keepdims=0),
        helper.make_node("Add", ["faces_mean", "mfcc_mean"], ["level"]),
        helper.make_node("Mul", ["level", "weights"], ["scores" if poison is not None else "logits"]),
    ]
    inits = [weights]
    if poison is not None:
        inits.append(numpy_helper.from_array(np.full(logits_shape, poison, np.float32), "poison"))
        nodes += [helper.make_node("Log", ["poison"], ["bad"]), helper.make_node("Add", ["scores", "bad"], ["logits"])]
    graph = helper.make_graph(
        nodes, "hostile",
        [helper.make_tensor_value_info("faces", TensorProto.UINT8, [1, *spec.faces_shape]),
         helper.make_tensor_value_info("mfcc", TensorProto.FLOAT, [1, *spec.mfcc_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(logits_shape))],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    helper.set_model_props(model, {"mer.feature_spec": spec.to_json(), "mer.labels": json.dumps(list(LABELS)),
                                   "mer.fusion": "ia"})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def inputs(batch: int = 1):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (batch, *DEFAULT_SPEC.faces_shape), dtype=np.uint8),
            rng.standard_normal((batch, *DEFAULT_SPEC.mfcc_shape)).astype(np.float32))


def test_a_well_formed_tiny_model_loads_and_runs(tmp_path):
    """The control: the builder makes a model the runtime accepts, with finite (1, 8) logits."""
    model = load_model(build_model(tmp_path / "ok.onnx"), backend="cpu", threads=1)
    logits = model.run(*inputs())
    assert logits.shape == (1, len(LABELS)) and np.isfinite(logits).all()


@pytest.mark.parametrize("shape", [(1, 3), (len(LABELS),), (1, len(LABELS), 1)])
def test_logits_of_the_wrong_shape_are_refused_at_load(tmp_path, shape):
    path = build_model(tmp_path / "wrong.onnx", logits_shape=shape)
    with pytest.raises(ModelError, match=r"logits output shape .* is not \(batch, 8\)") as err:
        load_model(path, backend="cpu", threads=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("poison", [-1.0, 0.0], ids=["nan", "inf"])
def test_non_finite_logits_are_a_model_error(tmp_path, poison):
    model = OnnxModel(build_model(tmp_path / "nan.onnx", poison=poison), backend="cpu", threads=1)
    with pytest.raises(ModelError, match=r"model produced non-finite logits \(NaN or inf\)"):
        model.run(*inputs())


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_model_path_is_refused(empty):
    with pytest.raises(ModelError, match="empty model path"):
        load_model(empty, backend="cpu")


def test_a_directory_is_not_a_model_file(tmp_path):
    for load in (load_model, OnnxModel):
        with pytest.raises(ModelError, match="is a directory, not a model file"):
            load(tmp_path, backend="cpu")


def test_a_missing_model_is_still_not_found(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "absent.onnx", backend="cpu")


def test_a_name_too_long_is_a_model_error_in_the_os_words(tmp_path):
    with pytest.raises(ModelError, match=os.strerror(errno.ENAMETOOLONG)):
        load_model(tmp_path / ("m" * 300 + ".onnx"), backend="cpu")


def test_a_symlink_loop_is_a_model_error_in_the_os_words(tmp_path):
    loop = tmp_path / "loop.onnx"
    loop.symlink_to(loop)
    with pytest.raises(ModelError, match=os.strerror(errno.ELOOP)):
        load_model(loop, backend="cpu")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_model_is_a_model_error_in_the_os_words(tmp_path):
    path = build_model(tmp_path / "locked.onnx")
    path.chmod(0)
    with pytest.raises(ModelError, match=os.strerror(errno.EACCES)):
        load_model(path, backend="cpu")


# --- hostile frames -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cropper():
    c = FaceCropper(DEFAULT_SPEC)
    yield c
    c.close()


ODD_SHAPES = [(2, 1280), (1280, 2), (4000, 4), (4, 4000), (4, 4), (1, 1), (16, 4000), (4000, 16),
              (0, 0), (0, 640), (640, 0)]


@pytest.mark.parametrize("hw", ODD_SHAPES, ids=[f"{h}x{w}" for h, w in ODD_SHAPES])
def test_odd_frames_have_no_face_and_raise_nothing(cropper, hw):
    frame = np.full((*hw, 3), 90, np.uint8)
    assert cropper.detect(frame) == []
    crops = cropper([frame] * 3)
    assert crops.detected == 0 and crops.faces.shape == (3, 224, 224, 3) and not crops.faces.any()


def test_the_detector_still_works_after_odd_frames(cropper, face):
    """An empty image breaks MediaPipe's graph for good; it must never reach it."""
    for h, w in ODD_SHAPES:
        cropper.detect(np.zeros((h, w, 3), np.uint8))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[200:520, 480:800] = cv2.resize(face, (320, 320))
    assert len(cropper.detect(frame)) == 1


@pytest.mark.parametrize("hw", [(0, 0), (1, 1), (2, 1280), (4000, 4)])
@pytest.mark.parametrize("box", [(0, 0, 10, 10, 0.9), (-50, -50, 20, 20, 0.9), (0, 0, 0, 0, 0.9),
                                 (float("nan"), 0, 10, 10, 0.9), (0, 0, float("inf"), 10, 0.9)])
def test_crop_of_any_frame_and_box_is_a_square_image(cropper, hw, box):
    crop = cropper.crop(np.full((*hw, 3), 90, np.uint8), box)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8


# --- face tracking ------------------------------------------------------------------------------

def test_pick_face_without_a_previous_face_takes_the_largest():
    from mer.runtime.faces import pick_face

    small, big = (0, 0, 10, 10, 0.9), (100, 0, 20, 20, 0.8)
    assert pick_face([small, big], None) == big
    assert pick_face([], None) is None and pick_face([], big) is None


def test_pick_face_follows_the_previous_face():
    from mer.runtime.faces import pick_face

    previous = (0, 0, 40, 40, 0.9)
    same_but_smaller = (1, 1, 38, 38, 0.9)
    other_and_larger = (200, 0, 40, 40, 0.9)
    assert pick_face([other_and_larger, same_but_smaller], previous) == same_but_smaller


def test_pick_face_falls_back_to_the_largest_below_the_overlap_threshold():
    from mer.runtime.faces import pick_face

    previous = (0, 0, 40, 40, 0.9)
    barely = (30, 30, 40, 40, 0.9)    # IoU 100 / 3100: another face
    larger = (200, 0, 50, 50, 0.9)
    assert pick_face([barely, larger], previous) == larger
    half = (0, 20, 40, 40, 0.9)       # IoU 800 / 2400 = 0.33: the same face, moved
    assert pick_face([half, larger], previous) == half


def two_faces(face: np.ndarray, left: float, right: float, h: int = 720, w: int = 1280) -> np.ndarray:
    """Two copies of a real face, of heights left*h and right*h, on the left and right halves."""
    frame = np.full((h, w, 3), 90, np.uint8)
    a, b = int(h * left), int(h * right)
    frame[160:160 + a, 160:160 + a] = cv2.resize(face, (a, a))
    frame[160:160 + b, 800:800 + b] = cv2.resize(face, (b, b))
    return frame


def side_boxes(cropper: FaceCropper, frame: np.ndarray):
    """(left box, right box) as detected; asserts the detector sees both faces."""
    boxes = sorted(cropper.detect(frame), key=lambda b: b[0])
    assert len(boxes) == 2
    return boxes[0], boxes[1]


@pytest.fixture(scope="module")
def swapping(cropper, face):
    """Frame A: left face larger; frame B: right face larger (0.40 h vs 0.37 h: boxes come in
    steps of 4 px at this frame size, and a smaller gap can detect as equal sizes)."""
    a, b = two_faces(face, 0.40, 0.37), two_faces(face, 0.37, 0.40)
    (la, ra), (lb, rb) = side_boxes(cropper, a), side_boxes(cropper, b)
    # The premise: "largest" flips between the frames.
    assert la[2] * la[3] > ra[2] * ra[3] and rb[2] * rb[3] > lb[2] * lb[3]
    return a, b, la, lb, rb


def test_the_same_person_is_kept_when_sizes_swap_between_frames(cropper, swapping):
    a, b, la, lb, rb = swapping
    crops = cropper([a, b, a, b, b])
    assert crops.detected == 5 and crops.max_faces == 2
    left_a, left_b = cropper.crop(a, la), cropper.crop(b, lb)
    for i, expected in enumerate([left_a, left_b, left_a, left_b, left_b]):
        assert np.array_equal(crops.faces[i], expected), f"frame {i} is not the left person"
    assert cropper.track[0] < 640  # the followed face is the left one


def test_the_track_carries_across_calls_only_with_keep_track(cropper, swapping):
    a, b, la, lb, rb = swapping
    cropper([a] * 3)                                   # a window that starts with the left person
    kept = cropper([b] * 3, keep_track=True)           # the recording's next window
    assert np.array_equal(kept.faces[0], cropper.crop(b, lb))
    cropper([a] * 3)
    fresh = cropper([b] * 3)                           # a new clip starts from the largest face
    assert np.array_equal(fresh.faces[0], cropper.crop(b, rb))
    cropper.reset_track()
    assert cropper.track is None
    assert np.array_equal(cropper([b], keep_track=True).faces[0], cropper.crop(b, rb))
