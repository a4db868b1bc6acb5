"""Batch image augmentation in torch: one affine warp (flip, rotation, scale, shift) + jitter."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) grey or (B, H, W, 3) RGB -> float (B, 3, H, W) in [0, 1]."""
    x = images.to(torch.float32) / 255.0
    if x.ndim == 3:
        x = x[:, None].expand(-1, 3, -1, -1)
    else:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def augment(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
            max_rot_deg: float = 10.0, scale: tuple[float, float] = (0.85, 1.15), shift: float = 0.08,
            jitter: float = 0.3, grey_p: float = 0.2) -> torch.Tensor:
    """Random affine warp of (B, 3, H, W) floats to (B, 3, size, size), then brightness/contrast."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    angle = u(-max_rot_deg, max_rot_deg) * math.pi / 180
    s = 1.0 / u(*scale)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([
        torch.stack([cos * flip, -sin, u(-shift, shift)], 1),
        torch.stack([sin * flip, cos, u(-shift, shift)], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grey = (torch.rand(b, generator=generator) < grey_p)[:, None, None, None]
    out = torch.where(grey, out.mean(1, keepdim=True).expand_as(out), out)
    mean = out.mean((1, 2, 3), keepdim=True)
    contrast = u(1 - jitter, 1 + jitter)[:, None, None, None]
    brightness = u(-jitter / 3, jitter / 3)[:, None, None, None]
    return ((out - mean) * contrast + mean + brightness).clamp(0, 1)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic resize for evaluation (antialiased when shrinking)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _blur_kernels(b: int, generator: torch.Generator | None, size: int = 9) -> torch.Tensor:
    """(b, 1, size, size) kernels: half Gaussian (sigma 0.5-2 px), half motion blur (a line of
    3-9 px at a random angle), as out-of-focus webcams and moving heads give."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    sigma = torch.rand(b, generator=generator) * 1.5 + 0.5
    gauss = torch.exp(-(xx ** 2 + yy ** 2)[None] / (2 * sigma[:, None, None] ** 2))
    angle = torch.rand(b, generator=generator) * math.pi
    length = torch.rand(b, generator=generator) * 6 + 3
    along = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    across = -xx[None] * torch.sin(angle)[:, None, None] + yy[None] * torch.cos(angle)[:, None, None]
    line = ((along.abs() <= length[:, None, None] / 2) & (across.abs() <= 0.5)).float()
    motion = torch.rand(b, generator=generator) < 0.5
    k = torch.where(motion[:, None, None], line, gauss)
    return (k / k.sum((1, 2), keepdim=True))[:, None]


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One (3, H, W) image through a JPEG encoder at `quality` and back (OpenCV, MediaPipe's)."""
    import cv2
    import numpy as np

    rgb = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    back = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1).float() / 255


def degrade(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """What video does to a face, each with probability `p`/2 or so, on (B, 3, S, S) in [0, 1]:
    blur or motion blur, a low-resolution source (a face 20-56 px tall, upscaled), JPEG-like
    compression (quality 10-50), and an occluded mouth (a hand, a microphone: a box over the lower
    third)."""
    b, _, s, _ = x.shape

    def chosen(q: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) < q

    out = x.clone()
    blur = chosen(p / 2)
    if blur.any():
        k = _blur_kernels(int(blur.sum()), generator)
        sel = out[blur]
        n = sel.shape[0]
        blurred = F.conv2d(F.pad(sel.reshape(1, n * 3, s, s), (4, 4, 4, 4), mode="replicate"),
                           k.repeat_interleave(3, 0), groups=n * 3)
        out[blur] = blurred.reshape(n, 3, s, s)
    low = chosen(p / 2)
    for i in torch.nonzero(low).flatten().tolist():
        side = int(torch.randint(20, 57, (1,), generator=generator))
        small = F.interpolate(out[i:i + 1], size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + 1] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    for i in torch.nonzero(chosen(p / 2)).flatten().tolist():
        out[i] = _jpeg(out[i], int(torch.randint(10, 51, (1,), generator=generator)))
    for i in torch.nonzero(chosen(p / 4)).flatten().tolist():
        top = int(s * (0.62 + 0.1 * float(torch.rand(1, generator=generator))))
        left = int(s * 0.2 * float(torch.rand(1, generator=generator)))
        width = int(s * (0.5 + 0.3 * float(torch.rand(1, generator=generator))))
        out[i, :, top:, left:left + width] = torch.rand(3, 1, 1, generator=generator)
    return out.clamp(0, 1)
