"""A projected discriminator (Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021).

Instead of learning what a face looks like from scratch, the discriminator judges images in the
feature space of a frozen, pretrained network: multi-scale features are mixed by fixed random
1x1 projections (the paper's cross-channel mixing, which stops the discriminator from relying
on a few dominant feature channels) and each scale gets a small trainable patch head. On a
2-core CPU this is what lets a small generator learn eyes, nose and mouth in hours rather than
days: the pretrained features already separate sharp facial parts from smeared ones.

The feature network is passed in (loading lives elsewhere) and is *not* a registered submodule,
so checkpoints hold only the trainable heads and the fixed projections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeaturePyramid", "ProjectedDiscriminator", "ColourHead", "dlib_feature_pyramid",
           "minibatch_deviation"]

# Images in [-1, 1] → a list of feature maps, finest first.
FeaturePyramid = Callable[[torch.Tensor], list[torch.Tensor]]
IDENTITY_INPUT = 112  # the least input size at which dlib's network still gives a descriptor


def dlib_feature_pyramid(net: nn.Module, input_size: int = 96,
                         stages: Sequence[int] = (3, 7, 10),
                         identity: bool = False) -> FeaturePyramid:
    """Features after the given residual blocks of a frozen ``DlibResNet`` (its 32-, 64- and
    128-channel stages), for images resized to ``input_size`` px; with ``identity``, its
    128-d descriptor too, as a last [N, 128, 1, 1] level.

    dlib's recognizer is a face network trained on millions of faces and is not the project's
    evaluator (MobileFaceNet), so training against it does not tune for the evaluation.

    Why the descriptor: heads on the stages judge textures and parts, so a generator can paint
    faces that pass them all while being one person. The campaign's did (at 409 kimg, 74 % of
    pairs of its random faces were one person to dlib, against 1.8 % of unrelated real faces at
    the same 64 px); a head with the minibatch deviation of the descriptors sees that. dlib's
    last blocks leave nothing of an image under 112 px, so the descriptor needs that much.
    """
    if identity and input_size < IDENTITY_INPUT:
        raise ValueError(f"dlib's descriptor needs images of at least {IDENTITY_INPUT} px")
    net.eval().requires_grad_(False)
    last = len(net.blocks) if identity else max(stages)

    def features(img: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate((img + 1) / 2, size=(input_size, input_size), mode="bilinear",
                          align_corners=False)
        x = ((x * 255.0 - net.input_mean[:, None, None]) / 256.0).contiguous(
            memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
        x = F.max_pool2d(F.relu(net.stem_affine(net.stem_conv(x))), 3, 2)
        out = []
        for i, block in enumerate(net.blocks[:last], start=1):
            x = block(x)
            if i in stages:
                out.append(x)
        if identity:
            out.append(net.embedding(x.mean(dim=(2, 3)))[:, :, None, None])
        return out

    return features


def minibatch_deviation(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """[N, C, H, W] → [N, 1, H, W]: at each location, the features' standard deviation over
    groups of ``group`` images (StyleGAN's minibatch-stddev, kept per patch).

    Patch heads judge each image alone, so a generator that paints the same convincing face
    every time fools them (it did: chunk 1 of the campaign collapsed to one face). This channel
    shows a head how alike the images of a batch are, so a collapsed batch looks fake.
    """
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.float().reshape(g, n // g, c, h, w)
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean(1, keepdim=True)
    return y.repeat(g, 1, 1, 1).to(x.dtype)


class _PatchHead(nn.Module):
    """Per-scale discriminator: two 3x3 convs on the projected features → a logit per patch."""

    def __init__(self, channels: int, width: int, deviation: bool = False) -> None:
        super().__init__()
        self.deviation = deviation
        self.conv = nn.Conv2d(channels + int(deviation), width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deviation:
            x = torch.cat([x, minibatch_deviation(x)], 1)
        return self.out(F.leaky_relu(self.conv(x), 0.2))


class ColourHead(nn.Module):
    """A small discriminator on the image itself, shrunk to ``size`` px.

    A face recognizer's features are trained to ignore colour and lighting, so heads on them
    alone let the generator paint faces green; this head judges colour and the coarse layout.
    """

    def __init__(self, size: int = 16, width: int = 64) -> None:
        super().__init__()
        self.size = size
        self.conv0 = nn.Conv2d(3, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(img, self.size)
        x = F.leaky_relu(self.conv1(F.leaky_relu(self.conv0(x), 0.2)), 0.2)
        return self.out(x)


class ProjectedDiscriminator(nn.Module):
    """Image [N, 3, R, R] in [-1, 1] → one logit per image (the sum over scales of the mean
    patch logit), optionally with a ``ColourHead`` on the pixels as one more scale and a
    minibatch-deviation channel in every feature head."""

    def __init__(self, features: FeaturePyramid, channels: Sequence[int], projected: int = 64,
                 head_width: int = 64, seed: int = 0, colour_head: bool = False,
                 deviation: bool = False) -> None:
        super().__init__()
        self.features = features
        gen = torch.Generator().manual_seed(seed)
        for i, c in enumerate(channels):
            # Fixed random projection (cross-channel mixing): a buffer, never trained.
            w = torch.randn(projected, c, 1, 1, generator=gen) / c ** 0.5
            self.register_buffer(f"proj{i}", w)
            self.add_module(f"head{i}", _PatchHead(projected, head_width, deviation))
        self.colour = ColourHead(width=head_width) if colour_head else None

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        logits = []
        for i, f in enumerate(self.features(img)):
            p = F.conv2d(f, getattr(self, f"proj{i}"))
            logits.append(getattr(self, f"head{i}")(p).flatten(1).mean(1, keepdim=True))
        if self.colour is not None:
            logits.append(self.colour(img).flatten(1).mean(1, keepdim=True))
        return torch.stack(logits, 0).sum(0)
