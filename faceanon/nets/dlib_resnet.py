"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a PyTorch module.

A ResNet-34-like network with half the filters, trained by Davis King with a metric loss; it maps
dlib's 150x150 face chip to a 128-d descriptor (same person: distance < 0.6). Rebuilt here so the
encoder E and loss network R of KFAAR are differentiable and batched. The weights come from dlib's
own file via ``faceanon.dlib_format``; the geometry below follows dlib's layer definitions: 3x3
convolutions pad 1 at stride 1 and 0 at stride 2, and a residual sum of tensors of different
sizes zero-extends the smaller one (dlib's ``add_prev``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Affine", "ResidualBlock", "DlibResNet", "STAGES"]

# (width, number of blocks, first block downsamples), input side first.
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


class Affine(nn.Module):
    """Per-channel ``x * weight + bias``: dlib's frozen form of batch normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _add_zero_extended(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` where the smaller tensor is zero-padded at the end of channels, rows, columns."""
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def grow(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        if (c, h, w) == tuple(shape):
            return t
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """Two 3x3 conv+affine layers and a shortcut; a downsampling block strides its first conv
    by 2 and averages the shortcut over 2x2 cells."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride, pad = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, pad)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_extended(y, shortcut))


class DlibResNet(nn.Module):
    """RGB chips in [0, 1], (N, 3, 150, 150) → 128-d descriptors, unnormalised as dlib returns
    them (dlib compares them by Euclidean distance; ``faceanon.identity`` normalises)."""

    size = 150

    def __init__(self) -> None:
        super().__init__()
        # dlib subtracts a per-channel mean from 0..255 pixels and divides by 256.
        self.register_buffer("input_mean", torch.tensor([122.782, 117.001, 104.298]))
        self.stem_conv = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_affine = Affine(32)
        blocks, width = [], 32
        for channels, count, down in STAGES:
            for i in range(count):
                blocks.append(ResidualBlock(width, channels, down and i == 0))
                width = channels
        self.blocks = nn.ModuleList(blocks)
        self.embedding = nn.Linear(width, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - self.input_mean[:, None, None]) / 256.0
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem_conv(x))), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.embedding(x.mean(dim=(2, 3)))
