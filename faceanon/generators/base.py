"""What a virtual-face generator is to the rest of faceanon: an identity code and a key (and a
retry number) in, a face crop out, on the alignment template and at the crop size it declares.

Its latent space stays inside the backend: the anonymizer, KVFA training and evaluation see
only identity codes, keys and images, so another backend (a diffusion model, a generator on
another template) is one module under ``faceanon.generators``, with no change to them. Pose
control is a capability: a backend that can turn a head itself says so (``pose_control``) and
takes a ``PoseGoal``, a pose described by face landmarks, which it maps into its own space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.errors import FaceanonError
from faceanon.keys import Key

if TYPE_CHECKING:
    from faceanon.pose_transfer import PoseBasis

CHUNK = 8  # faces per render call, fixed (see FaceGenerator.generate)


@dataclass(frozen=True)
class PoseGoal:
    """The pose each virtual face should take, in landmarks: its own 68 landmarks and its
    original's, (N, 68, 2) in crops of ``size`` px, and the basis that tells the pose and
    expression part of their difference from the face-shape part (which is never copied)."""

    basis: PoseBasis
    original: np.ndarray
    virtual: np.ndarray
    size: int


class FaceGenerator(ABC):
    """A keyed virtual-face generator; see the module docstring.

    Deterministic: the same identity code, key and attempt give the same pixels, so one person
    under one key is one virtual person (synchronism) and a resumed run writes the same bytes.
    """

    name: str            # the model id the key codes are derived under
    template: str        # alignment template of its crops (``faceanon.align``)
    crop_size: int       # side of the crops ``generate`` returns, in px
    pose_control: bool = False

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Side of the faces ``render`` draws, in px."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where ``render`` wants its inputs."""

    @property
    @abstractmethod
    def model_ids(self) -> dict[str, str]:
        """The registry weights it uses, by name (see ``faceanon.models.model_ids``)."""

    @property
    def pose_model_ids(self) -> dict[str, str]:
        """The registry weights of its pose control, by name (none without one)."""
        return {}

    @abstractmethod
    def render(self, identities: torch.Tensor, keys: Key | Sequence[Key], attempt: int = 0,
               steer: torch.Tensor | None = None) -> torch.Tensor:
        """Faces [N, 3, R, R] in [0, 1] on ``template`` for identity codes [N, D] under one key
        or a key per row; ``attempt`` > 0 draws a retry's other (equally secret) face.
        Differentiable in what the backend trains. ``steer``: rows of ``steering``."""

    def steering(self, goal: PoseGoal) -> np.ndarray:
        """Per face, the backend's own input that poses its face as ``goal`` says (only for
        ``pose_control`` backends): ``generate`` hands its rows to ``render``."""
        raise FaceanonError(f"generator {self.name} has no pose control")

    def generate(self, identities: np.ndarray, key: Key, attempt: int = 0,
                 pose: PoseGoal | None = None) -> np.ndarray:
        """(N, D) identity codes → (N, crop_size, crop_size, 3) uint8 crops on ``template``,
        posed as ``pose`` says where the backend has pose control.

        Faces are rendered in chunks of ``CHUNK`` (the last one padded), because convolution
        kernels round differently at different batch sizes: a face's pixels must not depend on
        how many other faces were in its batch, or a resumed run would differ.
        """
        size = self.crop_size
        steer = None if pose is None else self.steering(pose)
        out = np.zeros((len(identities), size, size, 3), np.uint8)
        with torch.inference_mode():
            for start in range(0, len(identities), CHUNK):
                n = min(CHUNK, len(identities) - start)
                rows = None if steer is None else _chunk(steer, start).to(self.device)
                img = self.render(_chunk(identities, start).to(self.device), key, attempt,
                                  rows)[:n]
                if img.shape[-1] != size:
                    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
                out[start:start + n] = \
                    (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out


def _chunk(rows: np.ndarray, start: int) -> torch.Tensor:
    """``CHUNK`` rows from ``start``, the last chunk padded with copies of its first row."""
    part = np.asarray(rows[start:start + CHUNK], dtype=np.float32)
    return torch.from_numpy(np.concatenate([part, np.repeat(part[:1], CHUNK - len(part), 0)]))
