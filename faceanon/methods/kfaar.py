"""``kfaar`` (the default): ivfg's virtual face given the original's head pose and expression
(``faceanon.pose_transfer``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceanon.keys import Key
from faceanon.methods.base import MethodSetup
from faceanon.methods.registry import register
from faceanon.methods.virtual_faces import VirtualFaceReplacer

if TYPE_CHECKING:
    from faceanon.generators import FaceGenerator
    from faceanon.pose_transfer import LandmarkWarp


class PosedVirtualFaces(VirtualFaceReplacer):
    """Virtual faces re-posed like the faces they replace: first by the generator itself where
    it has pose control, then in the image."""

    pose: LandmarkWarp

    def __init__(self, generator: FaceGenerator, key: Key, pose: LandmarkWarp,
                 pose_model: str) -> None:
        super().__init__(generator, key)
        self.pose, self.pose_model = pose, pose_model

    @property
    def model_ids(self) -> dict[str, str]:
        from faceanon.models import model_ids

        return {**super().model_ids, **model_ids((self.pose_model,)),
                **self.generator.pose_model_ids}

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        virtual = super().new_faces(crops, identities, attempt)
        if self.generator.pose_control:
            virtual = self.generator.generate(identities, self.key, attempt,
                                              self.pose.goal(virtual, crops))
        return np.stack([self.pose(v, o) for v, o in zip(virtual, crops)])


@register("kfaar", "virtual face, pose kept")
def kfaar(setup: MethodSetup) -> PosedVirtualFaces:
    from faceanon.landmarks import Landmarks68
    from faceanon.models import create_model, registry_entry
    from faceanon.pose_transfer import LandmarkWarp

    key = setup.require_key()
    generator = create_model("face-generator", device=setup.device)
    basis = registry_entry("pose-basis")["name"]
    pose = LandmarkWarp(create_model("pose-basis", basis), Landmarks68(), generator.template)
    return PosedVirtualFaces(generator, key, pose, basis)
