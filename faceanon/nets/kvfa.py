"""KVFA (KFAAR Sec. IV-C): a key-conditioned face verifier.

The feature extractor F maps original and virtual faces into one identity space; the key
projector maps F(x_v) ⊕ key code to the identity feature of the *original* face, so that
I(x) = F(x) and I(x_v, k) = P(F(x_v), k) agree only under the right key. F is a trainable head
on a frozen pretrained recognizer's embedding (dlib's ResNet), which the issue allows and which
keeps training cheap: the backbone's embeddings can be computed once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class KVFA(nn.Module):
    """``features(e)`` = F (unit vectors); ``keyed(e, k)`` = P(F(e) ⊕ k) (unit vectors).

    ``e`` is the backbone's embedding (N, in_dim); ``k`` the key code (N, key_dim) or (key_dim,).
    The feature extractor has 4 hidden layers, as in the paper.
    """

    def __init__(self, in_dim: int = 128, dim: int = 128, key_dim: int = 128, hidden: int = 512,
                 hidden_layers: int = 4) -> None:
        super().__init__()
        self.in_dim, self.dim, self.key_dim = in_dim, dim, key_dim
        self.extractor = _mlp([in_dim] + [hidden] * hidden_layers + [dim])
        self.projector = _mlp([dim + key_dim, hidden, hidden, dim])

    def features(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.extractor(F.normalize(embedding, dim=1)), dim=1)

    def keyed(self, embedding: torch.Tensor, key_code: torch.Tensor) -> torch.Tensor:
        f = self.features(embedding)
        k = key_code.expand(len(f), -1)
        return F.normalize(self.projector(torch.cat([f, k / math.sqrt(self.key_dim)], 1)), dim=1)
