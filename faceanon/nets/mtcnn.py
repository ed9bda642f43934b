"""MTCNN's three cascaded networks (Zhang et al., 2016): PNet proposes, RNet refines, ONet outputs.

The pretrained weights ship with the ``mtcnn`` PyPI package as Keras-layout arrays (conv kernels
HWIO, PReLU alphas, dense kernels in→out); ``faceanon.mtcnn_format`` converts them at load
time, so TensorFlow is never imported. Inputs are RGB, NCHW, scaled as (x - 127.5) / 128.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PNet", "RNet", "ONet"]


def _conv(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, k), nn.PReLU(cout)


def _max_pool(x: torch.Tensor, k: int, s: int, ceil: bool = False) -> torch.Tensor:
    """Max pooling as strided maxima over rows then columns, ``ceil`` padding with -inf.

    Equal to ``F.max_pool2d`` (ceil_mode = Keras "same" here), but several times faster on
    CPU for the many small crops RNet/ONet see.
    """
    h, w = x.shape[2:]
    rnd = math.ceil if ceil else math.floor
    oh, ow = rnd((h - k) / s) + 1, rnd((w - k) / s) + 1
    ph, pw = (oh - 1) * s + k - h, (ow - 1) * s + k - w
    if ph > 0 or pw > 0:
        x = F.pad(x, (0, max(pw, 0), 0, max(ph, 0)), value=float("-inf"))
    rows = x[:, :, 0:(oh - 1) * s + 1:s]
    for d in range(1, k):
        rows = torch.maximum(rows, x[:, :, d:d + (oh - 1) * s + 1:s])
    out = rows[:, :, :, 0:(ow - 1) * s + 1:s]
    for d in range(1, k):
        out = torch.maximum(out, rows[:, :, :, d:d + (ow - 1) * s + 1:s])
    return out


def _keras_flatten(x: torch.Tensor) -> torch.Tensor:
    """Flatten NCHW in the (W, H, C) order the dense layers were trained with (Keras Permute(2,1,3))."""
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window every 2 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 4, 1)  # box regression
        self.conv4_2 = nn.Conv2d(32, 2, 1)  # face / not face

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) → box offsets (N, 4, h, w) and face probability (N, h, w)."""
        x = self.prelu1(self.conv1(x))
        x = _max_pool(x, 2, 2, ceil=True)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_1(x), torch.softmax(self.conv4_2(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement network on 24x24 crops of PNet's proposals."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.fc4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 4)
        self.fc5_2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 24, 24) → box offsets (N, 4) and face probability (N,)."""
        x = _max_pool(self.prelu1(self.conv1(x)), 3, 2, ceil=True)
        x = _max_pool(self.prelu2(self.conv2(x)), 3, 2)
        x = self.prelu4(self.fc4(_keras_flatten(self.prelu3(self.conv3(x)))))
        return self.fc5_1(x), torch.softmax(self.fc5_2(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output network on 48x48 crops: final box, score and the 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 4)   # box regression
        self.fc6_2 = nn.Linear(256, 10)  # landmarks: 5 x then 5 y, relative to the box
        self.fc6_3 = nn.Linear(256, 2)   # face / not face

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, 48, 48) → box offsets (N, 4), landmarks (N, 10) and face probability (N,)."""
        x = _max_pool(self.prelu1(self.conv1(x)), 3, 2, ceil=True)
        x = _max_pool(self.prelu2(self.conv2(x)), 3, 2)
        x = _max_pool(self.prelu3(self.conv3(x)), 2, 2, ceil=True)
        x = self.prelu5(self.fc5(_keras_flatten(self.prelu4(self.conv4(x)))))
        return self.fc6_1(x), self.fc6_2(x), torch.softmax(self.fc6_3(x), dim=1)[:, 1]
