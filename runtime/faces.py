"""Face detection (MediaPipe Tasks BlazeFace, bundled) and square face crops.

Each distinct sampled frame is searched once, on a copy shrunk to DETECT_SIDE (BlazeFace looks at
128 x 128 anyway); frames too small or too thin to hold a face are not searched. The first frame's
largest face wins; later frames follow that face (pick_face), so a second person who comes slightly
closer does not take over the crops. The crop is a square of (1 + margin) times the box's
longer side around its centre (1.1x), zero-padded past the frame edge, resized to the spec's size,
and turned so that the eyes are level (BlazeFace's eye keypoints): a head tilted 20 degrees is read
as the same face upright, as the trunk learned faces (within +-10 degrees). A face much darker or
brighter than the trunk's training faces has its exposure brought into their range (normalise_exposure).
Frames without a face borrow the nearest frame's crop; with no face anywhere the faces are zeros,
which is how the model was taught "no visual input".
"""
from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
import weakref
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

import cv2
import numpy as np

from .spec import FeatureSpec

DETECT_SIDE = 320
MARGIN = 0.1  # framing close to FER+'s tight crops, which most of the trunk's training faces are
MIN_CONFIDENCE = 0.5
# A side under this many pixels (of the frame, or of its shrunk copy) cannot hold a detectable
# face; such frames are skipped rather than handed to OpenCV, which refuses a 0-pixel side, and
# MediaPipe, whose graph fails on an empty image and stays broken for every later frame.
MIN_SIDE = 16
TRACK_IOU = 0.3  # a box overlapping the previous frame's face this much is the same face
# Eyes within this many degrees of level are left as they are: the keypoints jitter by a degree or
# two on an upright face, and turning it by that noise would only blur it with a resampling.
LEVEL_MIN_DEG = 3.0
# Eyes closer than this share of the box's width (a face in profile) give no usable angle.
LEVEL_MIN_EYES = 0.15
# A still (a photo) is shown to the model as views of its face, not as copies of one crop: the fusion
# learnt a still face as a clip of slightly moving views (train/face_features.py draws them: shift
# up to 5 % of the half-side, scale 0.9-1.1, turn up to 8 degrees), never as one crop repeated. The
# views are fixed draws, so a photo gets the same answer every time; view 0 is the plain crop.
STILL_VIEW_SHIFT = 0.025  # of the crop's side (5 % of the half-side, as augment's normalised shift)
STILL_VIEW_SCALE = (0.9, 1.1)
STILL_VIEW_ROLL = 8.0
STILL_VIEW_SEED = 0
# A crop whose centre's mean luma (0-255) is outside this range is scaled into it. The trunk's
# training faces mostly sit inside (FER+ train: median 142, a quarter below ~118, a quarter above
# ~164; TFEID ~155); a dim webcam's faces fall below, a face in sunlight above. Both ends chosen
# on FER+ *valid* faces darkened 1.5 and 3 stops and brightened 1.5 (`mer-train eval-camera --set
# ferplus-valid --exposure LOW,HIGH`; MODEL_CARD.md, *Faces under camera conditions*).
EXPOSURE = (110.0, 170.0)
EXPOSURE_MAX_GAIN = 3.0  # past this the sensor's noise is what gets lifted
_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 luma of R, G, B


def normalise_exposure(face: np.ndarray, exposure: tuple[float, float] | None = EXPOSURE) -> np.ndarray:
    """`face` (uint8 RGB crop) scaled so that its centre's mean luma comes into `exposure` (low,
    high): an under-exposed face lifted to low (by at most EXPOSURE_MAX_GAIN), an over-exposed one
    brought down to high; one inside, or `exposure` None, is returned as it is. Scaling the
    gamma-encoded values scales the light (a camera's exposure), up to what was clipped."""
    if exposure is None:
        return face
    low, high = exposure
    h, w = face.shape[:2]
    centre = face[int(h * 0.2):int(h * 0.8), int(w * 0.2):int(w * 0.8)]
    mean = float(np.dot(cv2.mean(centre)[:3], _LUMA)) if centre.size else 0.0
    if mean <= 0 or low <= mean <= high:
        return face
    gain = min(low / mean, EXPOSURE_MAX_GAIN) if mean < low else high / mean
    return cv2.convertScaleAbs(face, alpha=gain)  # rounds, saturates at 255


_MODELS = ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite")


@dataclass
class FaceCrops:
    faces: np.ndarray        # uint8 (frames, size, size, 3) RGB
    detected: int            # sampled frames with a face of their own
    max_faces: int           # most faces seen in one frame


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence C++ logging written straight to fd 2 (MediaPipe's LiteRT prints INFO lines)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Box(NamedTuple):
    """A detected face in the frame's pixels."""
    x: float
    y: float
    w: float
    h: float
    score: float
    # Degrees from the subject's right eye to the left eye against the horizontal (image y points
    # down; positive: the face turned clockwise on screen). The crop turns it back by this much.
    roll: float = 0.0


def eye_roll(right_eye: tuple[float, float], left_eye: tuple[float, float], box_width: float) -> float:
    """The roll of a face from its eyes (BlazeFace's first two keypoints, in pixels); 0 when the
    eyes are too close together to give an angle (a face in profile)."""
    dx, dy = left_eye[0] - right_eye[0], left_eye[1] - right_eye[1]
    if math.hypot(dx, dy) < LEVEL_MIN_EYES * box_width:
        return 0.0
    return math.degrees(math.atan2(dy, dx))


def _iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h, ...) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def still_views(n: int, seed: int = STILL_VIEW_SEED) -> np.ndarray:
    """(n, 4) moves of a still's face box, (dx, dy) as shares of the crop's side, scale, turn in
    degrees; row 0 leaves it as it is."""
    rng = np.random.default_rng(seed)
    moves = np.column_stack([rng.uniform(-STILL_VIEW_SHIFT, STILL_VIEW_SHIFT, (n, 2)),
                             rng.uniform(*STILL_VIEW_SCALE, n), rng.uniform(-STILL_VIEW_ROLL, STILL_VIEW_ROLL, n)])
    moves[0] = (0.0, 0.0, 1.0, 0.0)
    return moves


def pick_face(boxes: list[Box], previous: Box | None = None) -> Box | None:
    """The face to crop: the box overlapping `previous` (the last frame's choice) most, if it
    overlaps by TRACK_IOU or more, else the largest. Following the previous face keeps one person
    when two faces are about the same size and "largest" flips between them frame to frame."""
    if not boxes:
        return None
    largest = max(boxes, key=lambda b: b[2] * b[3])
    if previous is None:
        return largest
    nearest = max(boxes, key=lambda b: _iou(b, previous))
    return nearest if _iou(nearest, previous) >= TRACK_IOU else largest


def _asset(name: str) -> str:
    return str(resources.files("mer.runtime") / "assets" / name)


_OPEN: "weakref.WeakSet[FaceCropper]" = weakref.WeakSet()
_hooked = False


def _close_open_croppers() -> None:
    for cropper in list(_OPEN):
        cropper.close()


def _close_at_exit(cropper: "FaceCropper") -> None:
    """Close croppers left open (a Recognizer never closed) before the interpreter stops.

    MediaPipe closes a detector through a ThreadPoolExecutor, and executors stop taking work in
    threading's shutdown hook, which runs before `atexit`: an atexit close fails with a traceback,
    and MediaPipe's own __del__ complains later. So the hook goes into threading's shutdown hooks,
    registered after MediaPipe (and concurrent.futures) loaded, because they run last-in first-out.
    """
    global _hooked
    _OPEN.add(cropper)
    if not _hooked:
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_close_open_croppers)
        _hooked = True


class FaceCropper:
    """Holds the detectors for the life of a Recognizer (made once, reused for every clip)."""

    def __init__(self, spec: FeatureSpec, margin: float = MARGIN, min_confidence: float = MIN_CONFIDENCE,
                 level: bool = True, exposure: tuple[float, float] | None = EXPOSURE):
        self.spec, self.margin, self.min_confidence, self.level = spec, margin, min_confidence, level
        self.exposure = exposure
        # Short range suits talking faces within ~2 m; full range, the fallback for small faces,
        # is made only when first needed (it costs ~0.2 s to create).
        self._detectors: list = [self._make(_MODELS[0])]
        # The face chosen last, in the last frame searched: with keep_track, consecutive windows of
        # one recording go on with the same person.
        self.track: Box | None = None
        _close_at_exit(self)

    def _make(self, name: str):
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import FaceDetector, FaceDetectorOptions

        with quiet_native_stderr():
            return FaceDetector.create_from_options(FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=_asset(name)),
                min_detection_confidence=self.min_confidence))

    def close(self) -> None:
        for det in self._detectors:
            det.close()
        self._detectors = []
        _OPEN.discard(self)

    def reset_track(self) -> None:
        """Forget the followed face: the next frame starts again from its largest face."""
        self.track = None

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Faces (Box: x, y, w, h, score, roll) in `rgb`'s pixels; first detector that finds any wins."""
        import mediapipe as mp

        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE:
            return []
        scale = min(1.0, DETECT_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if min(size) < MIN_SIDE:  # a thin strip: its shrunk copy is too narrow for a face
            return []
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(small))
        for i, name in enumerate(_MODELS):
            if i == len(self._detectors):
                self._detectors.append(self._make(name))
            found = self._detectors[i].detect(image).detections
            if found:
                return [self._box(d, size, scale) for d in found]
        return []

    @staticmethod
    def _box(d, size: tuple[int, int], scale: float) -> Box:
        """A detection as a Box in the frame's pixels; its roll from the eye keypoints (normalised
        to the searched copy, whose aspect is the frame's, so the angle is the frame's too)."""
        b = d.bounding_box
        roll = 0.0
        if len(d.keypoints or ()) >= 2:
            right, left = d.keypoints[0], d.keypoints[1]
            roll = eye_roll((right.x * size[0], right.y * size[1]), (left.x * size[0], left.y * size[1]), b.width)
        return Box(b.origin_x / scale, b.origin_y / scale, b.width / scale, b.height / scale,
                   d.categories[0].score if d.categories else 0.0, roll)

    def crop(self, rgb: np.ndarray, box: Box | tuple) -> np.ndarray:
        """A square crop around `box`, zero-padded past the frame, its eyes levelled (a plain
        (x, y, w, h, score) tuple carries no roll), its exposure normalised; zeros for a box with
        no area or not finite (nothing to crop) rather than an error from round() or OpenCV."""
        return normalise_exposure(self._levelled(rgb, box), self.exposure)

    def _levelled(self, rgb: np.ndarray, box: Box | tuple) -> np.ndarray:
        x, y, bw, bh = box[:4]
        roll = box[5] if self.level and len(box) > 5 else 0.0
        size = self.spec.image_size
        if not (np.isfinite([x, y, bw, bh, roll]).all() and bw > 0 and bh > 0):
            return np.zeros((size, size, 3), np.uint8)
        side = max(bw, bh) * (1 + self.margin)
        cx, cy = x + bw / 2, y + bh / 2
        if abs(roll) < LEVEL_MIN_DEG:
            return self._square(rgb, cx, cy, side, size)
        # Cut and shrink the square that holds the turned crop (INTER_AREA keeps shrinking free of
        # aliasing, which warpAffine is not), then turn it level: one resampling for the turn.
        t = math.radians(roll)
        span = side * (abs(math.cos(t)) + abs(math.sin(t)))
        out = max(size, round(size * span / side))
        held = self._square(rgb, cx, cy, span, out)
        turn = cv2.getRotationMatrix2D(((out - 1) / 2, (out - 1) / 2), roll, 1.0)
        turn[:, 2] += (size - out) / 2
        return cv2.warpAffine(held, turn, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    @staticmethod
    def _square(rgb: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
        """The upright square of `side` pixels centred on (cx, cy), zero-padded, resized to `size`."""
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        s = max(1, round(side))
        h, w = rgb.shape[:2]
        canvas = np.zeros((s, s, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
        return cv2.resize(canvas, (size, size), interpolation=interp)

    def still(self, rgb: np.ndarray) -> FaceCrops:
        """A still's crops for a whole window: its (largest) face as the spec's number of views
        (still_views), each a crop of the box moved, scaled and turned; zeros without a face."""
        n, size = self.spec.frames, self.spec.image_size
        boxes = self.detect(rgb)
        if not boxes:
            return FaceCrops(np.zeros((n, size, size, 3), np.uint8), 0, 0)
        return FaceCrops(self.views(rgb, pick_face(boxes)), n, len(boxes))

    def views(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """(frames, size, size, 3) crops of `box` moved, scaled and turned by `still_views`: how a
        still face is shown for a whole window (training scores its photos the same way)."""
        side = max(box.w, box.h) * (1 + self.margin)
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        crops = []
        for dx, dy, scale, turn in still_views(self.spec.frames):
            w, h = box.w * scale, box.h * scale
            moved = box._replace(x=cx + dx * side - w / 2, y=cy + dy * side - h / 2, w=w, h=h, roll=box.roll + turn)
            crops.append(self.crop(rgb, moved))
        return np.stack(crops)

    def framing(self, width: float, height: float) -> Box:
        """The box this cropper would have found in a face photo that comes cropped as it crops
        (FER+, a dataset's crops): the one whose crop is the photo's centred square."""
        inner = min(width, height) / (1 + self.margin)
        return Box((width - inner) / 2, (height - inner) / 2, inner, inner, 1.0)

    def __call__(self, frames: list[np.ndarray], frame_ids: list[int] | None = None, *,
                 keep_track: bool = False) -> FaceCrops:
        """Crops for the sampled frames, searched in order; repeated frames (same id) are searched
        once. keep_track: go on following the face of the previous call (the next window of the
        same recording) instead of starting from the largest face."""
        if not keep_track:
            self.reset_track()
        ids = frame_ids if frame_ids is not None else list(range(len(frames)))
        crops: dict[int, np.ndarray] = {}
        searched: set[int] = set()
        max_faces = 0
        for rgb, fid in zip(frames, ids):
            if fid in searched:
                continue
            searched.add(fid)
            boxes = self.detect(rgb)
            max_faces = max(max_faces, len(boxes))
            if boxes:
                self.track = pick_face(boxes, self.track)
                crops[fid] = self.crop(rgb, self.track)
        size = self.spec.image_size
        faces = np.zeros((len(frames), size, size, 3), np.uint8)
        found = [i for i, fid in enumerate(ids) if fid in crops]
        for i, fid in enumerate(ids):
            if found:
                nearest = min(found, key=lambda j: (abs(j - i), j))
                faces[i] = crops[ids[nearest]]
        return FaceCrops(faces, len(found), max_faces)
