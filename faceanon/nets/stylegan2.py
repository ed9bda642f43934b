"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020).

Plain PyTorch, no custom ops, so that the same code trains on CUDA (bf16/fp16 autocast,
channels_last) and runs on CPU. The generator is the paper's config E/F shape: mapping network
→ W, modulated/demodulated 3x3 convolutions with noise inputs, skip-connected ToRGB outputs; the
discriminator is the residual one. Modulation scales the *activations* and demodulation scales
the *outputs* (mathematically the same as scaling the weights, Eq. 1–3), which keeps one shared
weight per layer and so works with autocast and channels_last without grouped convolutions.

State-dict names are stable (shipped weights depend on them): ``mapping.fc{i}``,
``mapping.w_avg``, ``synthesis.b{res}.{const,conv0,conv1,torgb}``; discriminator ``fromrgb``,
``b{res}.{conv0,conv1,skip}`` and ``b4.{conv,fc,out}``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StyleGANConfig", "PRESETS", "preset", "EqualLinear", "EqualConv2d", "MappingNetwork",
           "ModulatedConv2d", "NoiseInjection", "SynthesisLayer", "ToRGB", "SynthesisBlock",
           "SynthesisNetwork", "Generator", "DiscriminatorBlock", "DiscriminatorEpilogue",
           "Discriminator", "NoiseMode"]

NoiseMode = Literal["random", "const", "none"]

_LRELU_GAIN = math.sqrt(2.0)
# fp16 activations are clamped to ±this so they cannot overflow (StyleGAN2-ADA's conv_clamp);
# fp32 and bf16 have the range to skip it (and the clamp's backward costs ~10% on CPU).
_CLAMP = 256.0


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-_CLAMP, _CLAMP) if x.dtype == torch.float16 else x


@dataclass(frozen=True)
class StyleGANConfig:
    """Architecture of a generator/discriminator pair; ``channels(res) = min(base // res, max)``."""

    resolution: int = 128
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        """W vectors the synthesis network consumes: one per conv, plus the last ToRGB."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StyleGANConfig":
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


PRESETS: dict[str, StyleGANConfig] = {
    # For unit tests and CPU overfitting checks.
    "tiny": StyleGANConfig(resolution=32, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024,
                           channel_max=64),
    # What one CPU thread can train in under an hour (~20 img/s): 64 px, 64→16 channels.
    "cpu64": StyleGANConfig(resolution=64, z_dim=128, w_dim=128, mapping_layers=4,
                            channel_base=1024, channel_max=64),
    # cpu64 with 128 channels at 4-8 px: more capacity for the face's layout at little cost
    # (the 4-8 px layers are cheap); the pilot candidate "wide low, lean high".
    "cpu64w": StyleGANConfig(resolution=64, z_dim=128, w_dim=128, mapping_layers=4,
                             channel_base=1024, channel_max=128),
    # Accelerator presets (StyleGAN2-ADA's "paper256"-like widths, scaled by resolution).
    "64": StyleGANConfig(resolution=64, channel_base=16384, channel_max=512),
    "128": StyleGANConfig(resolution=128, channel_base=16384, channel_max=512),
    "256": StyleGANConfig(resolution=256, channel_base=16384, channel_max=512),
}


def preset(name: str, **overrides: int) -> StyleGANConfig:
    """A named architecture, optionally with some fields replaced."""
    try:
        return replace(PRESETS[name], **overrides)
    except KeyError:
        raise ValueError(f"unknown StyleGAN2 preset {name!r}; known: {sorted(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Equalized-learning-rate layers: weights are N(0, 1) and scaled at run time by 1/sqrt(fan_in),
# so Adam's per-parameter step sizes are equal across layers (ProGAN §4.1).


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate and optional leaky-ReLU."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        x = F.linear(x, w.to(x.dtype), (self.bias * self.lr_mul).to(x.dtype))
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.activate else x


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate; ``down=True`` blurs then strides by 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activate: bool = True, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activate = activate
        self.down = down
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = blur_downsample(x)
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        x = F.conv2d(x, w, b, padding=self.padding)
        if self.activate:
            x = F.leaky_relu(x, 0.2) * _LRELU_GAIN
        return _fp16_clamp(x)


def _fir_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=like.device, dtype=like.dtype)
    k2 = torch.outer(k, k)
    k2 = k2 / k2.sum()
    return k2.expand(channels, 1, 4, 4)


def blur_downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve the resolution with the paper's [1,3,3,1] low-pass filter (anti-aliased stride 2,
    zero padding as in upfirdn2d)."""
    c = x.shape[1]
    return F.conv2d(x, _fir_kernel(c, x), stride=2, padding=1, groups=c)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Double the resolution; bilinear x2 is the separable [1,3,3,1] filter StyleGAN2 uses."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """z → w: pixel-norm then an MLP at 1/100 learning rate; tracks the mean w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            self.add_module(f"fc{i}", EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul,
                                                  activate=True))
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.training:
            self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if psi != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, psi)
        return x


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution with weight demodulation (StyleGAN2 Eq. 1–3).

    ``up=True`` doubles the resolution before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.up = up
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w).float()  # [N, in]
        weight = self.weight * self.weight_gain  # [out, in, k, k]
        if self.up:
            x = upsample(x)
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sigma_j = sqrt(sum_{i,k} (s_i w_ijk)^2), computed in fp32 for half-precision safety.
            wsq = weight.square().sum(dim=(2, 3))  # [out, in]
            dcoefs = torch.rsqrt(styles.square() @ wsq.t() + 1e-8)  # [N, out]
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise scaled by a learned per-layer strength (stochastic detail).

    ``noise_const`` is a fixed noise image so that ``noise_mode="const"`` is deterministic.
    """

    def __init__(self, resolution: int, seed: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("noise_const",
                             torch.randn(1, 1, resolution, resolution, generator=gen))

    def forward(self, x: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "const":
            noise = self.noise_const
        else:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device)
        return x + (noise * self.strength).to(x.dtype)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv → noise → bias → leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up)
        self.noise = NoiseInjection(resolution, seed=2 * resolution + int(not up))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor:
        x = self.noise(self.conv(x, w), noise_mode)
        x = F.leaky_relu(x + self.bias.to(x.dtype)[:, None, None], 0.2) * _LRELU_GAIN
        return _fp16_clamp(x)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation (the skip architecture's outputs)."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w) + self.bias.to(x.dtype)[:, None, None]
        return _fp16_clamp(x)


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0) → conv1 → ToRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, w_dim)
        self.num_ws = 1 if resolution == 4 else 2  # convs; ToRGB reads the next block's first w

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: NoiseMode) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws`` is [N, num_ws + 1, w_dim]: this block's convs, then its ToRGB."""
        if self.resolution == 4:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_ws])
        img = y if img is None else upsample(img).to(y.dtype) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ (one w per layer) → image in about [-1, 1]."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.resolutions = [2 ** i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        for res in self.resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            self.add_module(f"b{res}", SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res))
        self.num_ws = cfg.num_ws

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        x = img = None
        i = 0
        for res in self.resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, i:i + block.num_ws + 1], noise_mode)
            i += block.num_ws
        assert img is not None
        return img


class Generator(nn.Module):
    """z (or w / W+) → face image [N, 3, R, R] in about [-1, 1]."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
        self.synthesis = SynthesisNetwork(cfg)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    def styles(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """z [N, z_dim] → W+ [N, num_ws, w_dim] (all layers share w), truncated towards mean w."""
        return self.mapping(z, psi).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesize(self, w: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        """Image from a w [N, w_dim] (W space) or W+ [N, num_ws, w_dim]."""
        if w.ndim == 2:
            w = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if w.shape[1:] != (self.num_ws, self.cfg.w_dim):
            raise ValueError(f"expected W+ of shape [N, {self.num_ws}, {self.cfg.w_dim}], "
                             f"got {list(w.shape)}")
        return self.synthesis(w, noise_mode)

    def forward(self, z: torch.Tensor, psi: float = 1.0,
                noise_mode: NoiseMode = "const") -> torch.Tensor:
        return self.synthesis(self.styles(z, psi), noise_mode)


# ---------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsampling) + a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the mean per-group standard deviation as a feature map (diversity cue for D)."""
    n, c, h, w = x.shape
    g = math.gcd(group_size, n)
    y = x.float().reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # [N/g]
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 features → minibatch-stddev → conv → fc → one logit."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = EqualConv2d(in_channels + 1, in_channels, 3)
        self.fc = EqualLinear(in_channels * 16, in_channels, activate=True)
        self.out = EqualLinear(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(minibatch_stddev(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: image [N, 3, R, R] → real/fake logit [N, 1]."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        top = cfg.resolution
        self.fromrgb = EqualConv2d(3, cfg.channels(top), 1)
        self.resolutions = [2 ** i for i in range(int(math.log2(top)), 2, -1)]
        for res in self.resolutions:
            self.add_module(f"b{res}",
                            DiscriminatorBlock(cfg.channels(res), cfg.channels(res // 2)))
        self.b4 = DiscriminatorEpilogue(cfg.channels(4))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)
        for res in self.resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x)

