"""Still-face datasets for pretraining the face trunk: FER+ and TFEID, mapped to mer's labels.

FER+ has no *calm* and TFEID merges calm with neutral: both land on *neutral*, so the face trunk
never predicts calm (telling calm from neutral is left to the voice). FER+ *contempt*,
*unknown* and *not a face* votes are dropped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer.runtime.faces import EXPOSURE
from mer.runtime.spec import LABELS

from . import camera

# FER+ vote columns -> mer label index (None: dropped).
FERPLUS_TO_MER = {"neutral": 0, "happiness": 2, "surprise": 7, "sadness": 3, "anger": 4,
                  "disgust": 6, "fear": 5, "contempt": None, "unknown": None, "not_a_face": None}
TFEID_TO_MER = {"calm_or_neutral": 0, "happy": 2, "sad": 3, "angry": 4, "fearful": 5,
                "disgust": 6, "surprised": 7}


@dataclass
class FaceSet:
    images: np.ndarray    # uint8 (N, H, W) grey or (N, H, W, 3) RGB
    targets: np.ndarray   # float32 (N, 8) label distribution (rater votes, or one-hot)
    labels: np.ndarray    # int64 (N,) majority label
    groups: np.ndarray    # split name (FER+) or performer id (TFEID) per image

    def subset(self, mask: np.ndarray) -> "FaceSet":
        return FaceSet(self.images[mask], self.targets[mask], self.labels[mask], self.groups[mask])


def load_ferplus(path: Path) -> FaceSet:
    """FER+ with vote distributions over mer's labels; images with no usable majority dropped.

    The majority rule is FER+'s own: the top class must hold a strict plurality of the kept votes.
    """
    blob = np.load(path)
    votes = blob["votes"].astype(np.float32)
    classes = [str(c) for c in blob["vote_classes"]]
    targets = np.zeros((len(votes), len(LABELS)), np.float32)
    for col, name in enumerate(classes):
        if FERPLUS_TO_MER[name] is not None:
            targets[:, FERPLUS_TO_MER[name]] += votes[:, col]
    kept = targets.sum(1)
    top = np.sort(votes, axis=1)
    # Keep images whose overall majority is one of the emotions we keep, without a tie.
    majority_col = votes.argmax(1)
    usable = (kept > 0) & np.array([FERPLUS_TO_MER[classes[c]] is not None for c in majority_col]) & (top[:, -1] > top[:, -2])
    targets = targets[usable] / kept[usable, None]
    labels = targets.argmax(1)
    return FaceSet(blob["images"][usable], targets, labels, blob["split"][usable])


def load_tfeid(root: Path, size: int = 112, *, performers: tuple[str, ...] | None = None,
               condition: str | None = None, level: bool = True, exposure: tuple[float, float] | None = EXPOSURE,
               views: bool = False) -> FaceSet:
    """TFEID front-view colour photos, re-cropped by the runtime's own face cropper (so they are
    framed as served faces are); `groups` are performer ids (for performer-disjoint folds).

    `performers`: only these. `condition` (for measuring): each photo first made into the frame a
    camera under that condition would give (`camera.CONDITIONS`: tilted, dim, far, ...);
    `level=False` crops faces upright, as the cropper did before it levelled the eyes;
    `exposure` replaces the cropper's range (None: no normalisation); `views`: each photo as the
    runtime shows a still for a whole window (`FaceCropper.views`), images (N, frames, size, size, 3).
    A photo whose face is not found is taken as a crop already (`FaceCropper.framing`); a conditioned
    frame without one gives zeros, what the runtime feeds for no face."""
    import cv2  # MediaPipe's OpenCV, already a runtime dependency

    from mer.runtime.faces import FaceCropper
    from mer.runtime.spec import DEFAULT_SPEC

    rows = [r for r in csv.DictReader(open(root / "labels.csv", newline=""))
            if performers is None or r["performer"] in performers]
    images, labels, groups = [], [], []
    cropper = FaceCropper(DEFAULT_SPEC, level=level, exposure=exposure)
    for row in rows:
        bgr = cv2.imread(str(root / "images" / row["file"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{root / 'images' / row['file']}: not a readable image")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        if condition is not None:
            rgb = camera.apply(rgb, condition)
        boxes = cropper.detect(rgb)
        box = max(boxes, key=lambda b: b[2] * b[3]) if boxes else None
        if box is None and condition is None:  # a photo is a face crop already: the whole of it
            box = cropper.framing(rgb.shape[1], rgb.shape[0])
        if box is None:  # a camera's frame without a face gives zeros, what the runtime feeds
            faces = np.zeros((DEFAULT_SPEC.frames if views else 1, size, size, 3), np.uint8)
        else:
            faces = cropper.views(rgb, box) if views else cropper.crop(rgb, box)[None]
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])
        images.append(faces if views else faces[0])
        labels.append(TFEID_TO_MER[row["expression"]])
        groups.append(row["performer"])
    cropper.close()
    labels_arr = np.array(labels, np.int64)
    targets = np.eye(len(LABELS), dtype=np.float32)[labels_arr]
    return FaceSet(np.stack(images), targets, labels_arr, np.array(groups))

