"""A generator penalty against faces that a face recognizer reads as one person.

Why: the projected discriminator's heads judge textures and parts, and a generator can pass them
all with faces that are mostly one person. The CPU campaign's generator did: at 409 kimg, 74 %
of pairs of its random faces matched at dlib's threshold, against 1.8 % of pairs of unrelated
real faces at the same 64 px. The key projector can then only move along what little identity
the generator spans, which caps synchronism, diversity and KVFA (weights/README.md). A head on
dlib's descriptor in the discriminator (``+identity``) did not change that share in 60 kimg, so
this penalty asks it of the generator directly.

dlib's recognizer is the project's own instrument, not the evaluator (MobileFaceNet).
"""

from __future__ import annotations

import torch

from faceanon.identity import Recognizer

__all__ = ["IdentitySpread", "pair_cosines"]


def pair_cosines(v: torch.Tensor) -> torch.Tensor:
    """[N, D] unit vectors → the N·(N−1)/2 cosines of their distinct pairs."""
    i, j = torch.triu_indices(len(v), len(v), 1, device=v.device)
    return (v @ v.T)[i, j]


class IdentitySpread:
    """Mean hinge over pairs of generated faces: by how much their descriptors (the recognizer's
    own aligned chips, as the projector's losses see them) are closer than those of unrelated
    real faces.

    The margin is the mean cosine over pairs of ``sample`` training crops drawn with a fixed
    seed, measured once: pairs drawn from thousands of people are almost all two people, and
    only pairs closer than that are pushed apart, so the generator is not asked for more spread
    than real faces have.
    """

    def __init__(self, recognizer: Recognizer, template: str, reals: torch.Tensor,
                 sample: int = 256) -> None:
        """``reals``: the training crops, [N, 3, H, W] uint8 on ``template``."""
        self.recognizer, self.template = recognizer, template
        pick = torch.randperm(len(reals), generator=torch.Generator().manual_seed(0))[:sample]
        with torch.no_grad():
            faces = reals[pick.to(reals.device)].float() / 127.5 - 1.0
            self.margin = float(pair_cosines(self.descriptors(faces)).mean())

    def descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] → unit descriptors [N, D]."""
        chips = self.recognizer.chips(((images.float() + 1) / 2).clamp(0, 1), self.template)
        return self.recognizer.embed(chips)

    def __call__(self, fakes: torch.Tensor) -> torch.Tensor:
        return torch.relu(pair_cosines(self.descriptors(fakes)) - self.margin).mean()
