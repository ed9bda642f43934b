"""Training the key projector P (KFAAR Eq. 5–10, IVFG's L_reg), with E, G and R frozen.

Each step draws triplets (x1, x2 of one person, y of another) and two random key codes, makes
the four virtual faces G(P(E(x1), k1)), G(P(E(x1), k2)), G(P(E(x2), k1)), G(P(E(y), k1)) and
scores them with the recognizer R (dlib's ResNet, which is also E):

- anonymity       L_ano = L_cos(R(v(x1,k1)), R(x1), −1)          (λ = 0.4)
- synchronism     L_syn = L_cos(R(v(x1,k1)), R(v(x2,k1)), +1)    (λ = 1)
- diversity       L_div = L_cos(R(v(x1,k1)), R(v(x1,k2)), −1)    (λ = 1)
- differentiation L_dif = L_cos(R(v(x1,k1)), R(v(y,k1)), −1)     (λ = 1)
- regularisation  L_reg = ‖w − w̄‖² / w_dim                       (IVFG Eq. 10, on W)

with L_cos(a, b, +1) = 1 − cos and L_cos(a, b, −1) = max(0, cos − m) (the papers' misprinted
negative branch, as PyTorch's CosineEmbeddingLoss defines it). Adam, lr 1e-4, β = (0.9, 0.999).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from faceanon.align import template_transform
from faceanon.fsutil import atomic_torch_save
from faceanon.identity import Recognizer
from faceanon.nets.projector import KeyProjector
from faceanon.nets.stylegan2 import Generator
from faceanon.training.aligned import AlignedFaces


@dataclass
class ProjectorConfig:
    steps: int = 2000
    batch: int = 8            # triplets per step (4 virtual faces each)
    lr: float = 1e-4
    margin: float = 0.75      # below dlib's typical different-person cosine (~0.83 on LFW)
    lambda_ano: float = 0.4
    lambda_syn: float = 1.0
    lambda_div: float = 1.0
    lambda_dif: float = 1.0
    lambda_reg: float = 0.1
    key_dim: int = 128
    hidden: int = 512
    layers: int = 4
    psi: float = 0.8
    seed: int = 0
    log_every: int = 10


def cos_loss(a: torch.Tensor, b: torch.Tensor, same: bool, margin: float) -> torch.Tensor:
    """The cosine embedding loss of KFAAR Eq. 5 (negative branch max(0, cos − m))."""
    cos = F.cosine_similarity(a, b, dim=1)
    return (1 - cos).mean() if same else (cos - margin).clamp(min=0).mean()


def chip_embeddings(faces: AlignedFaces, recognizer: Recognizer) -> np.ndarray:
    """E(x) of every aligned crop, warped from the generator template to the recognizer's."""
    m = template_transform(faces.template, faces.size, recognizer.template, recognizer.width)
    chips = np.stack([cv2.warpAffine(c, m, (recognizer.width, recognizer.height),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                      for c in faces.images])
    return recognizer.embed(chips)


class TripletSampler:
    """(x1, x2, y) index triplets: x1, x2 one person (two different images), y another."""

    def __init__(self, labels: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.by_person: dict[int, np.ndarray] = {}
        for p in np.unique(labels):
            self.by_person[int(p)] = np.flatnonzero(labels == p)
        self.several = [p for p, idx in self.by_person.items() if len(idx) >= 2]
        if len(self.several) < 2:
            raise ValueError("training needs at least two people with two or more images")
        self.n = len(labels)
        self.labels = labels

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        people = self.rng.choice(self.several, size=batch)
        pairs = np.array([self.rng.choice(self.by_person[int(p)], 2, replace=False) for p in people])
        y = self.rng.integers(self.n, size=batch)
        clash = self.labels[y] == people
        while clash.any():
            y[clash] = self.rng.integers(self.n, size=int(clash.sum()))
            clash = self.labels[y] == people
        return pairs[:, 0], pairs[:, 1], y


def train_projector(generator: Generator, template: str, recognizer: Recognizer,
                    faces: AlignedFaces, out: str | Path, cfg: ProjectorConfig,
                    log: Callable[[dict], None] | None = None) -> KeyProjector:
    """Train P for ``cfg.steps`` steps for ``generator``, whose faces are on ``template``;
    writes ``out/projector.pt`` and ``out/log.jsonl``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = next(generator.parameters()).device
    ident = torch.from_numpy(chip_embeddings(faces, recognizer)).to(device)
    projector = KeyProjector(ident.shape[1], cfg.key_dim, generator.cfg.z_dim, cfg.hidden,
                             cfg.layers).to(device)
    generator.eval().requires_grad_(False)
    opt = torch.optim.Adam(projector.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    sampler = TripletSampler(faces.labels, cfg.seed)
    w_avg = generator.mapping.w_avg.detach()
    log_path = out / "log.jsonl"
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        i1, i2, iy = (torch.from_numpy(a).to(device) for a in sampler.sample(cfg.batch))
        k1 = torch.randint(0, 2, (cfg.batch, cfg.key_dim), device=device).float() * 2 - 1
        k2 = torch.randint(0, 2, (cfg.batch, cfg.key_dim), device=device).float() * 2 - 1
        ids = torch.cat([ident[i1], ident[i1], ident[i2], ident[iy]])
        keys = torch.cat([k1, k2, k1, k1])
        w = generator.styles(projector(ids, keys), cfg.psi)
        images = ((generator.synthesize(w, noise_mode="const") + 1) / 2).clamp(0, 1)
        r = recognizer.embed(recognizer.chips(images, template))
        v11, v12, v21, vy1 = r.chunk(4)
        losses = {
            "ano": cos_loss(v11, ident[i1], False, cfg.margin),
            "syn": cos_loss(v11, v21, True, cfg.margin),
            "div": cos_loss(v11, v12, False, cfg.margin),
            "dif": cos_loss(v11, vy1, False, cfg.margin),
            "reg": (w[:, 0] - w_avg).square().mean(),
        }
        total = (cfg.lambda_ano * losses["ano"] + cfg.lambda_syn * losses["syn"]
                 + cfg.lambda_div * losses["div"] + cfg.lambda_dif * losses["dif"]
                 + cfg.lambda_reg * losses["reg"])
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            rec = {"step": step, "seconds": round(time.time() - t0, 1),
                   "total": round(float(total.detach()), 4),
                   **{k: round(float(v.detach()), 4) for k, v in losses.items()}}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if log:
                log(rec)
    projector.eval().requires_grad_(False)
    atomic_torch_save({k: v.half() for k, v in projector.state_dict().items()},
                      out / "projector.pt")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return projector

