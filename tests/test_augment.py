"""Face augmentation for training (mer.train.augment): the JPEG model against a real encoder on the
real test face, and the video degradations drawing and doing what they say."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mer.train.augment import augment, degrade, jpeg_like, to_float_nchw


@pytest.fixture(scope="module")
def faces(face) -> torch.Tensor:
    small = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)
    return to_float_nchw(torch.from_numpy(np.stack([small] * 16)))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _encoder(x: torch.Tensor, quality: int) -> torch.Tensor:
    """The same image through a real JPEG encoder and decoder (OpenCV's libjpeg)."""
    rgb = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return torch.from_numpy(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255


def test_jpeg_like_loses_what_a_real_encoder_loses(faces):
    x = faces[:1]
    previous = 0.0
    for q in (10, 30, 50, 90):
        ours, real = jpeg_like(x, torch.tensor([q]))[0], _encoder(x[0], q)
        assert abs(_psnr(ours, x[0]) - _psnr(real, x[0])) < 0.5, q   # as far from the original
        assert _psnr(ours, real) > 38, q                               # and close to the encoder's image
        assert _psnr(ours, x[0]) > previous                            # better with quality
        previous = _psnr(ours, x[0])
    per_image = jpeg_like(faces[:2], torch.tensor([10, 90]))           # each image at its own quality
    assert _psnr(per_image[0], x[0]) < _psnr(per_image[1], x[0]) - 5


def test_degrade_is_drawn_from_its_generator_and_does_what_it_says(faces):
    x = augment(faces, 112, torch.Generator().manual_seed(0))
    a = degrade(x, torch.Generator().manual_seed(3), p=1.0)
    b = degrade(x, torch.Generator().manual_seed(3), p=1.0)
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(degrade(x, torch.Generator().manual_seed(3), p=0.0), x)
    changed = (a - x).abs().flatten(1).amax(1) > 0.05
    assert bool(changed.all())                                         # at p 1 every face has something
    # Faces lose detail on the whole (blur, low resolution, compression): less high-frequency energy.
    detail = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert detail(a) < detail(x)
    # A covered mouth: some face has a box of one colour over its lower rows.
    low = a[:, :, 81:, 23:55]                                          # inside every box drawn
    flat = (low - low[:, :, :1, :1]).abs().flatten(1).amax(1) < 1e-6
    assert bool(flat.any())
