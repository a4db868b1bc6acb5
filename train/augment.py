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


def _where(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where draws are made: a generator draws on its own device, the global one where the batch is."""
    return generator.device if generator is not None else device


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws."""
    return torch.rand(n, generator=generator, device=_where(generator, device))


def augment(x: torch.Tensor, size: int, generator: torch.Generator | None = None,
            max_rot_deg: float = 10.0, scale: tuple[float, float] = (0.85, 1.15), shift: float = 0.08,
            jitter: float = 0.3, grey_p: float = 0.2) -> torch.Tensor:
    """Random affine warp of (B, 3, H, W) floats to (B, 3, size, size), then brightness/contrast.
    On the batch's device (a GPU too), drawing from `generator`, which must live there."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return _rand(b, generator, x.device) * (hi - lo) + lo

    angle = u(-max_rot_deg, max_rot_deg) * math.pi / 180
    s = 1.0 / u(*scale)
    flip = torch.where(_rand(b, generator, x.device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([
        torch.stack([cos * flip, -sin, u(-shift, shift)], 1),
        torch.stack([sin * flip, cos, u(-shift, shift)], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grey = (_rand(b, generator, x.device) < grey_p)[:, None, None, None]
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


def _blur_kernels(b: int, generator: torch.Generator | None, device: torch.device, size: int = 9) -> torch.Tensor:
    """(b, 1, size, size) kernels: half Gaussian (sigma 0.5-2 px), half motion blur (a line of
    3-9 px at a random angle), as out-of-focus webcams and moving heads give."""
    r = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    sigma = _rand(b, generator, device) * 1.5 + 0.5
    gauss = torch.exp(-(xx ** 2 + yy ** 2)[None] / (2 * sigma[:, None, None] ** 2))
    angle = _rand(b, generator, device) * math.pi
    length = _rand(b, generator, device) * 6 + 3
    along = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    across = -xx[None] * torch.sin(angle)[:, None, None] + yy[None] * torch.cos(angle)[:, None, None]
    line = ((along.abs() <= length[:, None, None] / 2) & (across.abs() <= 0.5)).float()
    motion = _rand(b, generator, device) < 0.5
    k = torch.where(motion[:, None, None], line, gauss)
    return (k / k.sum((1, 2), keepdim=True))[:, None]


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """One (3, H, W) image through a JPEG encoder at `quality` and back (OpenCV, MediaPipe's)."""
    import cv2
    import numpy as np

    rgb = (x.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    back = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1).to(x.device, torch.float32) / 255


def degrade(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """What video does to a face, each with probability `p`/2 or so, on (B, 3, S, S) in [0, 1]:
    blur or motion blur, a low-resolution source (a face 20-56 px tall, upscaled), JPEG-like
    compression (quality 10-50), and an occluded mouth (a hand, a microphone: a box over the lower
    third)."""
    b, _, s, _ = x.shape
    dev = x.device

    def chosen(q: float) -> torch.Tensor:
        return _rand(b, generator, dev) < q

    def draw() -> float:
        return float(_rand(1, generator, dev))

    def randint(lo: int, hi: int) -> int:  # [lo, hi), drawn like torch.randint
        return int(torch.randint(lo, hi, (1,), generator=generator, device=_where(generator, dev)))

    out = x.clone()
    blur = chosen(p / 2)
    if blur.any():
        k = _blur_kernels(int(blur.sum()), generator, dev)
        sel = out[blur]
        n = sel.shape[0]
        blurred = F.conv2d(F.pad(sel.reshape(1, n * 3, s, s), (4, 4, 4, 4), mode="replicate"),
                           k.repeat_interleave(3, 0), groups=n * 3)
        out[blur] = blurred.reshape(n, 3, s, s)
    low = chosen(p / 2)
    for i in torch.nonzero(low).flatten().tolist():
        side = randint(20, 57)
        small = F.interpolate(out[i:i + 1], size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + 1] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    for i in torch.nonzero(chosen(p / 2)).flatten().tolist():
        out[i] = _jpeg(out[i], randint(10, 51))
    for i in torch.nonzero(chosen(p / 4)).flatten().tolist():
        top = int(s * (0.62 + 0.1 * draw()))
        left = int(s * 0.2 * draw())
        width = int(s * (0.5 + 0.3 * draw()))
        out[i, :, top:, left:left + width] = _rand(3, generator, dev)[:, None, None]
    return out.clamp(0, 1)
