"""The MFCC audio branch: four Conv1d(k3, valid) + BN + ReLU + MaxPool(2, stride 1) blocks."""
from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    # Each block shortens the sequence by 3 frames (2 by the valid conv, 1 by the pool). A dilated
    # conv is padded by dilation - 1 a side so that it too shortens by 2: the stage lengths the
    # fusions attend over stay the same whatever the dilation (dilation 1 is the paper's block).
    return nn.Sequential(nn.Conv1d(cin, cout, 3, dilation=dilation, padding=dilation - 1), nn.BatchNorm1d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool1d(2, 1))


INPUT_NORMS = ("none", "level", "cmn", "cmvn")


class AudioCNN(nn.Module):
    """(B, n_mfcc, T) -> stage 1 (B, 128, T - 6) -> stage 2 (B, 128, T - 12)."""

    def __init__(self, n_mfcc: int = 10, num_classes: int = 8, input_norm: str = "none", width: int = 1,
                 dilation: int = 1):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}")
        self.input_norm = input_norm
        # `width` multiplies the two inner layers only (the paper: 1): the stage outputs (128, 128)
        # are what the fusions attend over, so every width fits every fusion.
        # `dilation` D dilates block i by D**i (the paper: 1). The paper's receptive field is 13
        # frames (0.3 s), shorter than a word; D = 2 gives 35 frames (0.8 s), the span of a
        # phrase's pitch and loudness contour, and D = 3 85 frames (2 s), most of an utterance, at
        # the same cost and with the same weights' shapes.
        d = [dilation ** i for i in range(4)]
        self.conv1d_0 = _block(n_mfcc, 64 * width, d[0])
        self.conv1d_1 = _block(64 * width, 128, d[1])
        self.conv1d_2 = _block(128, 256 * width, d[2])
        self.conv1d_3 = _block(256 * width, 128, d[3])
        # The audio-only classifier; the fusions ignore it (it is trained in unimodal runs).
        self.classifier_1 = nn.Sequential(nn.Linear(128, num_classes))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Per-utterance cepstral mean (and variance) normalisation over time, inside the graph.

        The paper feeds raw MFCCs ("none"). "level" removes only c0's mean: with an orthonormal DCT
        of dB mel energies, a gain change moves c0 alone, so this makes the branch blind to recording
        level (RAVDESS sits ~25 dB below the other corpora) while keeping loudness contours and timbre.
        All-zero input (absent audio) stays all-zero.
        """
        if self.input_norm == "none":
            return x
        if self.input_norm == "level":
            c0 = x[:, :1] - x[:, :1].mean(-1, keepdim=True)
            return torch.cat((c0, x[:, 1:]), dim=1)
        x = x - x.mean(-1, keepdim=True)
        if self.input_norm == "cmvn":
            x = x / (x.std(-1, keepdim=True) + 1e-3)
        return x

    def forward_stage1(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        return self.conv1d_1(self.conv1d_0(x))

    def forward_stage2(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1d_3(self.conv1d_2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier_1(self.forward_stage2(self.forward_stage1(x)).mean(-1))
