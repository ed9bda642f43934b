"""Face recognizers behind one interface: aligned crops in, L2-normalised embeddings out.

KFAAR's encoder E and training's loss network R is dlib's ResNet (``"dlib"``); evaluation uses a
second, independently trained network (``"mobilefacenet:PATH"``), as the papers do. Each
recognizer owns its alignment template, so callers hand over images and 5 landmarks
(:meth:`Recognizer.embed_faces`) or crops already aligned to ``recognizer.template``.
"""

from __future__ import annotations

from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faceanon.align import align, template_transform, warp_tensor
from faceanon.errors import FaceanonError

__all__ = ["Recognizer", "load_recognizer", "cosine_similarity", "RECOGNIZER_SPECS"]

RECOGNIZER_SPECS = "dlib | mobilefacenet:PATH"

# Cosine similarity from which a recognizer takes two faces for one person: its EER threshold
# on LFW pairs.txt (folds 1-3, MTCNN landmarks; `faceanon bench recognizer --folds 3 --json`):
# dlib EER 1.44 %, MobileFaceNet (flip-concatenated) EER 1.33 %.
DLIB_THRESHOLD = 0.906
MOBILEFACENET_THRESHOLD = 0.252


class Recognizer:
    """A frozen recognition network plus the crop geometry it was trained on and the cosine
    from which it takes two faces for one person (``match_threshold``): one object, so that
    no caller can pair a network with another network's threshold.

    ``flip``: also embed the horizontal mirror and concatenate (MobileFaceNet's published
    evaluation protocol).
    """

    def __init__(self, net: nn.Module, name: str, template: str, width: int, height: int,
                 match_threshold: float, flip: bool = False, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> None:
        # channels_last: oneDNN's convolutions run 2-3x faster on CPU in that layout.
        self.net = net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
        self.name, self.template, self.flip = name, template, flip
        self.match_threshold = match_threshold
        self.width, self.height = width, height
        self.device = torch.device(device)
        self.batch_size = batch_size

    @property
    def size(self) -> tuple[int, int]:
        """Crop (width, height) in pixels."""
        return self.width, self.height

    @overload
    def embed(self, crops: np.ndarray) -> np.ndarray: ...

    @overload
    def embed(self, crops: torch.Tensor) -> torch.Tensor: ...

    def embed(self, crops: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Unit-length embeddings of aligned crops.

        numpy: (N, H, W, 3) RGB uint8 → (N, D) float32, computed in batches without gradients.
        torch: (N, 3, H, W) RGB float in [0, 1] → (N, D), differentiable (for training losses).
        """
        if isinstance(crops, torch.Tensor):
            self._check(tuple(crops.shape[1:]), (3, self.height, self.width), "(N, 3, H, W)")
            return self._forward(crops)
        crops = np.asarray(crops)
        if crops.dtype != np.uint8:
            raise ValueError(f"numpy crops must be uint8, got {crops.dtype}")
        self._check(crops.shape[1:], (self.height, self.width, 3), "(N, H, W, 3)")
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(crops[i:i + self.batch_size]).to(self.device)
                out.append(self._forward(x.permute(0, 3, 1, 2).float() / 255.0).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        """Embedding length."""
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.height, self.width, device=self.device)
            return int(self._forward(probe).shape[1])

    def chips(self, crops: torch.Tensor, template: str) -> torch.Tensor:
        """Crops [N, 3, S, S] aligned on ``template`` (a generator's faces) → this recognizer's
        own aligned chips, differentiably (for training losses)."""
        m = template_transform(template, crops.shape[-1], self.template, self.width)
        return warp_tensor(crops, m, self.width, self.height)

    def embed_faces(self, image: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of the faces of ``image`` given their (N, 5, 2) landmarks."""
        crops, _ = align(image, landmarks5, self.template, self.width, self.height)
        return self.embed(crops)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        feats = self.net(x)
        if self.flip:
            feats = torch.cat([feats, self.net(x.flip(-1))], dim=1)
        return F.normalize(feats, dim=1)

    def _check(self, got: tuple[int, ...], want: tuple[int, ...], layout: str) -> None:
        if tuple(got) != want:
            raise ValueError(f"{self.name} expects crops {layout} = {want} on its "
                             f"{self.template!r} template, got {tuple(got)}")


def _load_mobilefacenet(path: Path, device: str | torch.device) -> Recognizer:
    from faceanon.nets.mobilefacenet import MobileFaceNet

    if not path.is_file():
        raise FaceanonError("MobileFaceNet checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise FaceanonError(f"cannot read checkpoint ({type(e).__name__})", path) from None
    state = ckpt.get("net_state_dict", ckpt) if isinstance(ckpt, dict) else None
    net = MobileFaceNet()
    try:
        net.load_state_dict(state)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, AttributeError):
        raise FaceanonError("not a MobileFaceNet checkpoint (parameter names or shapes differ)",
                            path) from None
    return Recognizer(net, f"mobilefacenet:{path}", "sphereface", MobileFaceNet.width,
                      MobileFaceNet.height, MOBILEFACENET_THRESHOLD, flip=True, device=device)


def load_recognizer(spec: str, device: str | torch.device = "cpu") -> Recognizer:
    """``"dlib"`` (weights converted from face-recognition-models, cached) or
    ``"mobilefacenet:PATH"`` (a checkpoint the user supplies)."""
    if spec == "dlib":
        from faceanon.dlib_format import cached_dlib_resnet_state_dict
        from faceanon.nets.dlib_resnet import DlibResNet

        net = DlibResNet()
        net.load_state_dict(cached_dlib_resnet_state_dict())
        return Recognizer(net, "dlib", "dlib", DlibResNet.size, DlibResNet.size, DLIB_THRESHOLD,
                          device=device)
    kind, _, path = spec.partition(":")
    if kind == "mobilefacenet" and path:
        return _load_mobilefacenet(Path(path).expanduser(), device)
    raise FaceanonError(f"unknown recognizer {spec!r}; use {RECOGNIZER_SPECS}")


@overload
def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


@overload
def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


def cosine_similarity(a: np.ndarray | torch.Tensor,
                      b: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Row-wise cosine similarity of two (N, D) batches (or two (D,) vectors)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return F.cosine_similarity(a, b, dim=-1)
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    return (a64 * b64).sum(-1) / np.maximum(denom, 1e-12)
