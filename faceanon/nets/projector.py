"""The key projector P of KFAAR/IVFG: identity embedding ⊕ key code → generator latent."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KeyProjector(nn.Module):
    """P(z, k) = MLP([z, k]) → z' in the generator's input space Z (KFAAR Sec. IV-B).

    Both inputs are brought to unit length first, so that neither the identity nor the key can
    drown the other out: the key must change the virtual identity completely (diversity) and
    the identity must too (differentiation). The output goes through the generator's mapping
    network, as in KFAAR, which keeps it on the generator's learnt manifold.
    """

    def __init__(self, id_dim: int = 128, key_dim: int = 128, z_dim: int = 512,
                 hidden: int = 512, layers: int = 4) -> None:
        super().__init__()
        self.id_dim, self.key_dim, self.z_dim = id_dim, key_dim, z_dim
        dims = [id_dim + key_dim] + [hidden] * (layers - 1) + [z_dim]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            blocks.append(nn.Linear(a, b))
            if i < layers - 1:
                blocks.append(nn.LeakyReLU(0.2))
        self.mlp = nn.Sequential(*blocks)

    def forward(self, identity: torch.Tensor, key_code: torch.Tensor) -> torch.Tensor:
        key_code = key_code.expand(identity.shape[0], -1) if key_code.ndim == 2 else \
            key_code.unsqueeze(0).expand(identity.shape[0], -1)
        x = torch.cat([F.normalize(identity, dim=1), key_code / math.sqrt(self.key_dim)], dim=1)
        return self.mlp(x)
