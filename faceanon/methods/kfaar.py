"""``kfaar`` (the default): ivfg's virtual face given the original's head pose and expression
(``faceanon.pose_transfer``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceanon.keys import Key
from faceanon.methods.aligned import CROP
from faceanon.methods.base import MethodSetup
from faceanon.methods.registry import register
from faceanon.methods.virtual_faces import VirtualFaceReplacer

if TYPE_CHECKING:
    from faceanon.pose_transfer import PoseTransfer
    from faceanon.virtual import VirtualFaces


class PosedVirtualFaces(VirtualFaceReplacer):
    """Virtual faces re-posed like the faces they replace: first through the generator's
    latent pose control where the backend has one, then in the image."""

    def __init__(self, virtual: VirtualFaces, key: Key, pose: PoseTransfer,
                 pose_models: tuple[str, ...]) -> None:
        super().__init__(virtual, key, pose_models)
        self.pose = pose

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        virtual = super().new_faces(crops, identities, attempt)
        shift = self.pose.latent_shift(virtual, crops)
        if shift is not None:
            virtual = self.virtual.generate(identities, self.key, CROP, attempt, shift)
        return np.stack([self.pose(v, o) for v, o in zip(virtual, crops)])


@register("kfaar", "virtual face, pose kept")
def kfaar(setup: MethodSetup) -> PosedVirtualFaces:
    from faceanon.virtual import load_virtual_faces

    key = setup.require_key()
    virtual = load_virtual_faces(setup.device)
    return PosedVirtualFaces(virtual, key, *_load_pose_transfer(virtual.generator_name))


def _load_pose_transfer(generator_name: str) -> tuple[PoseTransfer, tuple[str, ...]]:
    """The shipped pose basis, with the generator's latent pose control where ``weights/``
    holds one for it; and the names of the weights used."""
    from faceanon import weights
    from faceanon.landmarks import Landmarks68
    from faceanon.pose_transfer import LandmarkWarp, LatentPose, PoseBasis

    basis = weights.default_entry("pose-basis")["name"]
    latent_entry = next((m for m in weights.entries() if m["kind"] == "latent-pose"
                         and m.get("generator") == generator_name), None)
    if latent_entry is None:
        latent, names = None, (basis,)
    else:
        latent = LatentPose.from_state_dict(weights.load_weights(latent_entry["name"]))
        names = (basis, latent_entry["name"])
    pose = LandmarkWarp(PoseBasis.from_state_dict(weights.load_weights(basis)), Landmarks68(),
                        latent=latent)
    return pose, names
