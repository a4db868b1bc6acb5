"""Camera conditions (mer.train.camera) on the real test face: each does what it says, the same
way every run, and the runtime's cropper still finds the face where a camera would let it."""
from __future__ import annotations

import numpy as np
import pytest

from mer.runtime.faces import FaceCropper
from mer.runtime.spec import DEFAULT_SPEC
from mer.train import camera


@pytest.fixture(scope="module")
def photo(face):
    import cv2

    return cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)  # as TFEID's photos are


def _luma(rgb: np.ndarray) -> float:
    return float(rgb.astype(np.float32).mean())


def test_every_condition_gives_the_same_frame_every_run(photo):
    for name in camera.CONDITIONS:
        a, b = camera.apply(photo, name), camera.apply(photo, name)
        assert a.dtype == np.uint8 and a.ndim == 3 and np.array_equal(a, b), name
    with pytest.raises(ValueError, match="not a camera condition"):
        camera.apply(photo, "fog")


def test_conditions_change_the_frame_the_way_they_say(photo):
    clean = camera.apply(photo, "clean")
    assert clean.shape == (512, 512, 3) and np.array_equal(clean[128:384, 128:384], photo)
    assert _luma(camera.apply(photo, "dark")) < _luma(camera.apply(photo, "dim")) < 0.7 * _luma(clean)
    assert _luma(camera.apply(photo, "bright")) > 1.1 * _luma(clean)
    warm, cool = camera.apply(photo, "warm").astype(float), camera.apply(photo, "cool").astype(float)
    assert warm[..., 0].mean() / warm[..., 2].mean() > clean[..., 0].mean() / clean[..., 2].mean() > \
        cool[..., 0].mean() / cool[..., 2].mean()
    assert camera.apply(photo, "far").shape == (102, 102, 3)
    side = camera.apply(photo, "side")[128:384, 128:384]  # the face's place in the frame
    assert _luma(side[:, :32]) > 0.9 * _luma(photo[:, :32])    # its left edge lit as it was,
    assert _luma(side[:, -64:]) < 0.55 * _luma(photo[:, -64:])  # its right in shade
    backlit = camera.apply(photo, "backlit")
    assert _luma(backlit[128:384, 128:384]) < 0.75 * _luma(photo) and _luma(backlit[:, :100]) > 1.05 * _luma(clean[:, :100])
    for name in ("defocus", "motion"):  # detail lost: less high-frequency energy
        assert np.abs(np.diff(camera.apply(photo, name).astype(float), axis=1)).mean() < \
            np.abs(np.diff(clean.astype(float), axis=1)).mean(), name
    # JPEG q12: 8x8 blocks, each a few cosines: the pixels move, and (blocking adds edges) not only
    # towards smoothness.
    assert np.abs(camera.apply(photo, "jpeg").astype(int) - clean).mean() > 2
    assert np.abs(camera.apply(photo, "noise").astype(int) - clean).mean() > 5


def test_the_cropper_finds_the_face_and_measures_the_tilt(photo):
    cropper = FaceCropper(DEFAULT_SPEC)
    try:
        for name in ("clean", "dim", "warm", "noise", "jpeg"):
            assert len(cropper.detect(camera.apply(photo, name))) == 1, name
        for name, degrees in camera.TILTS.items():
            (box,) = cropper.detect(camera.apply(photo, name))
            assert abs(box.roll + degrees) < 8, (name, box.roll)
    finally:
        cropper.close()
