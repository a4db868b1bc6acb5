"""EfficientFace (Zhao et al., AAAI 2021) as the per-frame face trunk, plus the temporal head.

Module and parameter names follow the published EfficientFace / reference checkpoints, so their
`state_dict`s load with `load_reference_checkpoint` (the `module.` prefix stripped,
`strict=False`). Written from the paper's description; no code copied.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (29, 116, 232, 464, 1024)
FEATURE_DIM = STAGE_CHANNELS[-1]


def _dw(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """Depthwise(-multiplier) 3x3 convolution, no bias."""
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=cin, bias=False)


def _interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """cat((first, second), 1) followed by the ShuffleNet-v2 channel shuffle (2 groups), as one
    copy: stacking on a new axis 2 and flattening puts channel i of each half side by side. The
    concat-reshape-transpose form exports as two copies (Concat, Transpose)."""
    b, c, h, w = first.shape
    return torch.stack((first, second), dim=2).reshape(b, 2 * c, h, w)


class InvertedResidual(nn.Module):
    """ShuffleNet-v2 unit: stride 1 splits channels and transforms one half; stride 2 both."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw(cin, cin, stride), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _dw(half, half, stride), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, work = x.chunk(2, dim=1)
            return _interleave(keep, self.branch2(work))
        return _interleave(self.branch1(x), self.branch2(x))


class LocalFeatureExtractor(nn.Module):
    """Four quadrant branches (two depthwise 3x3 convs each) re-tiled into one map."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}_1", _dw(cin, cout, 2))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(cout))
            setattr(self, f"conv{i}_2", _dw(cout, cout, 1))
            setattr(self, f"bn{i}_2", nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def _branch(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(x)))
        return self.relu(getattr(self, f"bn{i}_2")(getattr(self, f"conv{i}_2")(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // 2, x.shape[3] // 2
        top_left, bottom_left = self._branch(1, x[:, :, :h, :w]), self._branch(2, x[:, :, h:, :w])
        top_right, bottom_right = self._branch(3, x[:, :, :h, w:]), self._branch(4, x[:, :, h:, w:])
        left = torch.cat((top_left, bottom_left), dim=2)
        right = torch.cat((top_right, bottom_right), dim=2)
        return torch.cat((left, right), dim=3)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = channels // reduction
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", _Flatten())
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(channels, mid))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(mid))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(mid, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_c(x.mean((2, 3)))[:, :, None, None]


class _SpatialGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4):
        super().__init__()
        mid = channels // reduction
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, mid, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(mid))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(2):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(mid))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(mid, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x)


class Modulator(nn.Module):
    """Channel x spatial attention: features scaled by sigmoid(channel gate * spatial gate)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channel_att = _ChannelGate(channels)
        self.spatial_att = _SpatialGate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


def conv1d_block(cin: int, cout: int) -> nn.Sequential:
    """Temporal head block: Conv1d(k3, same) + BN + ReLU over the frame axis."""
    return nn.Sequential(nn.Conv1d(cin, cout, 3, padding=1), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class EfficientFaceTemporal(nn.Module):
    """Per-frame EfficientFace features (1024-d) followed by Conv1d stages over the frames.

    `forward_features` maps (N, 3, H, W) frames in [0, 1] to (N, 1024); stage 1 maps
    (B, 1024, T) to (B, 64, T), stage 2 to (B, 128, T).
    """

    def __init__(self, num_classes: int = 8, num_frames: int = 15):
        super().__init__()
        self.num_frames = num_frames
        c = STAGE_CHANNELS
        self.conv1 = nn.Sequential(nn.Conv2d(3, c[0], 3, 2, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = c[0]
        for name, repeats, cout in zip(("stage2", "stage3", "stage4"), STAGE_REPEATS, c[1:4]):
            units = [InvertedResidual(cin, cout, 2)] + [InvertedResidual(cout, cout, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            cin = cout
        self.local = LocalFeatureExtractor(c[0], c[1])
        self.modulator = Modulator(c[1])
        self.conv5 = nn.Sequential(nn.Conv2d(c[3], c[4], 1, bias=False), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True))
        self.conv1d_0 = conv1d_block(c[4], 64)
        self.conv1d_1 = conv1d_block(64, 64)
        self.conv1d_2 = conv1d_block(64, 128)
        self.conv1d_3 = conv1d_block(128, 128)
        # Unused by the fusions; kept so reference checkpoints and our own unimodal runs share keys.
        self.classifier_1 = nn.Sequential(nn.Linear(128, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.modulator(self.stage2(x)) + self.local(x)
        x = self.conv5(self.stage4(self.stage3(x)))
        return x.mean((2, 3))

    def forward_stage1(self, feats: torch.Tensor) -> torch.Tensor:
        """(B * T, 1024) frame features -> (B, 64, T)."""
        x = feats.reshape(-1, self.num_frames, feats.shape[-1]).transpose(1, 2)
        return self.conv1d_1(self.conv1d_0(x))

    def forward_stage2(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1d_3(self.conv1d_2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stage2(self.forward_stage1(self.forward_features(x)))
        return self.classifier_1(x.mean(-1))


def load_reference_checkpoint(module: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a reference-format checkpoint ({'state_dict': ...}, keys maybe prefixed `module.`).

    Non-strict, as the reference does (an AffectNet EfficientFace has an `fc` and no temporal
    head). Returns (missing, unexpected) keys so callers can report what did not load.
    """
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    # Shape-mismatched tensors (e.g. a 7-class fc) are skipped, not fatal.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = module.load_state_dict(usable, strict=False)
    unexpected = sorted(set(state) - set(usable))
    return list(result.missing_keys), unexpected
