"""MobileFaceNet (Chen et al., 2018): the independent recognizer that measures anonymity.

Evaluation must not trust the recognizer the generator was trained against, so faceanon reads
a separately trained MobileFaceNet from a user-supplied checkpoint. Module and parameter names
follow that checkpoint's state dict (``conv1``, ``dw_conv1``, ``blocks.i.conv.j``, ``conv2``,
``linear7``, ``linear1``) so it loads without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBlock", "Bottleneck", "MobileFaceNet", "BOTTLENECKS"]

# (expansion, output channels, repeats, stride of the first repeat), from the paper's table 1.
BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBlock(nn.Module):
    """Convolution + batch norm, + PReLU unless ``linear``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int = 0, groups: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection; identity shortcut
    when shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """RGB crops in [0, 1], (N, 3, 112, 96) on the SphereFace template → 128-d features."""

    height, width = 112, 96

    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvBlock(64, 64, 3, 1, 1, groups=64)
        blocks, cin = [], 64
        for expansion, cout, repeats, stride in BOTTLENECKS:
            for i in range(repeats):
                blocks.append(Bottleneck(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = ConvBlock(cin, 512, 1)
        # Global depthwise convolution over the final 7x6 map instead of average pooling.
        self.linear7 = ConvBlock(512, 512, (7, 6), groups=512, linear=True)
        self.linear1 = ConvBlock(512, embedding_size, 1, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.5) / 128.0
        x = self.dw_conv1(self.conv1(x))
        x = self.conv2(self.blocks(x))
        return self.linear1(self.linear7(x)).flatten(1)
