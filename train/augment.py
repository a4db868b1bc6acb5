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


# JPEG's example quantisation tables (ITU-T T.81, Annex K), natural order, and its colour transform
# (JFIF): compression is modelled on the whole batch where the batch is, with no trip to an encoder.
_LUMA_Q = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA_Q = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32
_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _dct8(device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix: JPEG's 2-D transform is D @ block @ D.T."""
    k, n = torch.meshgrid(torch.arange(8.0, device=device), torch.arange(8.0, device=device), indexing="ij")
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 8, 8) luma and chroma quantisers at each image's quality (1-100), scaled as libjpeg does."""
    q = quality.to(torch.float32).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]

    def table(base: tuple[int, ...]) -> torch.Tensor:
        t = torch.tensor(base, dtype=torch.float32, device=quality.device).view(1, 8, 8)
        return ((t * scale + 50) / 100).floor().clamp(1, 255)

    return table(_LUMA_Q), table(_CHROMA_Q)


def _blocks_quantised(plane: torch.Tensor, table: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) plane (0-255) through 8x8 DCT, quantisation by `table` (B, 8, 8) and back."""
    b, h, w = plane.shape
    ph, pw = -h % 8, -w % 8
    x = F.pad(plane[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] - 128
    hb, wb = x.shape[1] // 8, x.shape[2] // 8
    blocks = x.view(b, hb, 8, wb, 8).permute(0, 1, 3, 2, 4)            # (B, hb, wb, 8, 8)
    coef = d @ blocks @ d.T
    t = table[:, None, None]
    back = d.T @ ((coef / t).round() * t) @ d
    return (back.permute(0, 1, 3, 2, 4).reshape(b, hb * 8, wb * 8)[:, :h, :w] + 128).clamp(0, 255)


def jpeg_like(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] as a baseline JPEG at `quality` (B,) would decode it: 8-bit pixels,
    YCbCr with 4:2:0 chroma, 8x8 DCT quantised by the standard tables, and back. What an encoder
    adds beyond that is lossless, so this loses what JPEG loses, on the batch's device."""
    d = _dct8(x.device)
    m = torch.tensor(_TO_YCBCR, device=x.device)
    rgb = (x * 255).round()
    ycc = torch.einsum("ij,bjhw->bihw", m, rgb) + torch.tensor([0.0, 128, 128], device=x.device)[:, None, None]
    luma_t, chroma_t = _tables(quality)
    y = _blocks_quantised(ycc[:, 0], luma_t, d)
    chroma = F.avg_pool2d(ycc[:, 1:], 2, ceil_mode=True)               # 4:2:0, as encoders default to
    cb, cr = (_blocks_quantised(chroma[:, i], chroma_t, d) for i in range(2))
    chroma = F.interpolate(torch.stack([cb, cr], 1), size=x.shape[-2:], mode="bilinear", align_corners=False)
    ycc = torch.cat([y[:, None], chroma], 1) - torch.tensor([0.0, 128, 128], device=x.device)[:, None, None]
    back = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), ycc)
    return back.round().clamp(0, 255) / 255


def degrade(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """What video does to a face, each with probability `p`/2 or so, on (B, 3, S, S) in [0, 1]:
    blur or motion blur, a low-resolution source (a face 20-56 px tall, upscaled), JPEG
    compression (quality 10-50), and an occluded mouth (a hand, a microphone: a box over the lower
    third).

    Every draw for the batch is made at once and read back once: on a GPU each read is a wait for
    the device, and drawing per face made one per face (and a round trip to the CPU's encoder for
    JPEG). The faces an effect picks are then changed together."""
    b, _, s, _ = x.shape
    dev = x.device
    u = _rand(9 * b, generator, dev).view(9, b)
    picked = torch.stack([u[0] < p / 2, u[1] < p / 2, u[2] < p / 2])   # blur, low resolution, JPEG
    side = 20 + (u[3] * 37).long()                                     # 20..56 px
    quality = 10 + (u[4] * 41).long()                                  # 10..50
    blur_i, low_i, jpeg_i = (torch.nonzero(row).flatten() for row in picked.cpu())  # the one read-back
    sides = side.cpu()
    out = x.clone()
    if len(blur_i):
        k = _blur_kernels(len(blur_i), generator, dev)
        n, idx = len(blur_i), blur_i.to(dev)
        sel = out[idx].reshape(1, n * 3, s, s)
        out[idx] = F.conv2d(F.pad(sel, (4, 4, 4, 4), mode="replicate"), k.repeat_interleave(3, 0),
                            groups=n * 3).reshape(n, 3, s, s)
    for side_px in sides[low_i].unique().tolist():                     # one resize per size drawn
        idx = low_i[sides[low_i] == side_px].to(dev)
        small = F.interpolate(out[idx], size=(side_px, side_px), mode="bilinear", align_corners=False, antialias=True)
        out[idx] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    if len(jpeg_i):
        idx = jpeg_i.to(dev)
        out[idx] = jpeg_like(out[idx], quality[idx])
    # The mouth covered: a box of one colour from 62-72 % of the height down, 50-80 % wide.
    rows = torch.arange(s, device=dev)[None, :, None]
    cols = torch.arange(s, device=dev)[None, None, :]
    top = (s * (0.62 + 0.1 * u[5])).long()[:, None, None]
    left = (s * 0.2 * u[6]).long()[:, None, None]
    width = (s * (0.5 + 0.3 * u[7])).long()[:, None, None]
    box = (u[8] < p / 4)[:, None, None] & (rows >= top) & (cols >= left) & (cols < left + width)
    colour = _rand(3 * b, generator, dev).view(b, 3, 1, 1)
    out = torch.where(box[:, None], colour, out)
    return out.clamp(0, 1)
