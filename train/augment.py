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
