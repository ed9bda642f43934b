"""Identity-preserving obfuscation (Li et al., MM '21): faces that people no longer recognise
but that face recognition still matches to the right person.

Li et al. re-synthesise chosen facial parts with a conditional GAN trained under an identity
loss; the number of parts changed trades recognisability for people against recognition for
machines. faceanon has no such generator, so it gets the trade-off by optimisation, face by
face, on aligned crops of ``TEMPLATE`` at 128 px (the template its strengths were measured
on; the paste region is placed by the landmarks, so it is the same part of the face as the
generator methods' on any template):

1. a heavy appearance change: the face is blurred at a scale set by ``strength`` (sigma 0.12
   of the crop's width at 1.0, half of the eye-to-eye distance there);
2. a smooth correction, a coarse grid of grey-level offsets upsampled bicubically (shading:
   low frequency by construction, so it cannot turn into adversarial pixel noise, and no
   colour, since free colour offsets turned the face into coloured blotches), is optimised with
   Adam until the project's recognizer (dlib) embeds the blended face within ``TARGET`` cosine
   of the original. Every step sees the face through a slightly different shift, scale and
   rotation, drawn from the key, so that the correction does not hinge on one exact alignment.

Deterministic under the key: the jitter comes from the key and each face is optimised alone,
so neither the batch nor a resume changes an output. The anonymizer pastes the result without
colour matching (the face already has the original's colours) and inverts its post-check for
this method: a face that the recognizer no longer matches to its original is optimised again
with more steps and, if it still does not match, kept obfuscated and flagged; the original
face is never written.

Measured (README): dlib still matches the faces, but an independent recognizer does not: the
correction is shading that dlib reads as the person, not the person's features. What this
method needs next is an identity-preserving generator, as Li et al. train.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from faceanon.align import template_transform, warp_tensor
from faceanon.composite import ellipse_mask
from faceanon.errors import FaceanonError
from faceanon.identity import Recognizer
from faceanon.keys import Key

INFO = "faceanon/obfuscate/v1"  # HKDF info of the jitter seed
DEFAULT_STRENGTH = 0.75
BLUR_AT_FULL = 0.12   # blur sigma as a share of the crop's width at strength 1
GRID = 8              # correction grid: GRID x GRID colour offsets over the crop
STEPS = 12            # optimisation steps per attempt (attempt k gets (k + 1) * STEPS)
LEARNING_RATE = 0.04
TARGET = 0.95         # dlib cosine to the original at which a face is done (match: 0.906)
JITTER = (2.0, 0.03, 3.0)  # largest shift (px), relative scale and rotation (deg) per step
TEMPLATE = "faceanon"


class Obfuscator:
    """Obfuscates face crops aligned on ``TEMPLATE`` so that ``recognizer`` still embeds them
    close to ``identities``; see the module docstring."""

    def __init__(self, recognizer: Recognizer, key: Key, strength: float = DEFAULT_STRENGTH,
                 crop: int = 128) -> None:
        if not 0.0 < strength <= 1.0:
            raise FaceanonError(f"--strength must be in (0, 1], got {strength}")
        self.recognizer, self.strength, self.crop = recognizer, strength, crop
        self._seed = int.from_bytes(key.derive(INFO, 8), "big") & (2 ** 62 - 1)
        self._to_chip = template_transform(TEMPLATE, crop, recognizer.template, recognizer.width)
        self._mask = torch.from_numpy(np.array(ellipse_mask(TEMPLATE, crop)))[None, None]

    def __call__(self, crops: np.ndarray, identities: np.ndarray, attempt: int = 0) -> np.ndarray:
        """(N, crop, crop, 3) uint8 crops and their (N, D) embeddings → obfuscated crops."""
        return np.stack([self._one(c, e, attempt) for c, e in zip(crops, identities)])

    def heavy_change(self, crop: np.ndarray) -> np.ndarray:
        """The starting point: the crop blurred at the strength's scale."""
        return cv2.GaussianBlur(crop, (0, 0), self.strength * BLUR_AT_FULL * self.crop)

    def _one(self, crop: np.ndarray, identity: np.ndarray, attempt: int) -> np.ndarray:
        rng = np.random.default_rng(self._seed + attempt)
        original = _tensor(crop)
        start = _tensor(self.heavy_change(crop))
        target = torch.from_numpy(np.asarray(identity, np.float32))[None]
        delta = torch.zeros(1, 1, GRID, GRID, requires_grad=True)  # grey: shading, no colour
        optimiser = torch.optim.Adam([delta], lr=LEARNING_RATE)
        for _ in range((attempt + 1) * STEPS):
            face = self._face(start, delta)
            blended = original + self._mask * (face - original)
            chip = warp_tensor(blended, self._jittered(rng), self.recognizer.width,
                               self.recognizer.height)
            similarity = F.cosine_similarity(self.recognizer.embed(chip), target).mean()
            if similarity.item() >= TARGET:
                break
            optimiser.zero_grad()
            (1.0 - similarity).backward()
            optimiser.step()
        with torch.no_grad():
            face = self._face(start, delta)
        return (face[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)

    def _face(self, start: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        smooth = F.interpolate(delta, size=(self.crop, self.crop), mode="bicubic",
                               align_corners=False)
        return (start + smooth).clamp(0.0, 1.0)

    def _jittered(self, rng: np.random.Generator) -> np.ndarray:
        """The crop → chip matrix after a small random similarity motion in the chip."""
        shift, scale, degrees = JITTER
        c = self.recognizer.width / 2.0
        motion = cv2.getRotationMatrix2D((c, c), rng.uniform(-degrees, degrees),
                                         1.0 + rng.uniform(-scale, scale))
        motion[:, 2] += rng.uniform(-shift, shift, 2)
        return motion @ np.vstack([self._to_chip, [0.0, 0.0, 1.0]])


def _tensor(crop: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0
