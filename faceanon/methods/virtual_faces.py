"""Methods that replace each face with a virtual face from a face generator
(``faceanon.generators``): ivfg as it is, kfaar re-posed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceanon.keys import Key
from faceanon.methods.aligned import AlignedReplacer

if TYPE_CHECKING:
    from faceanon.generators import FaceGenerator


class VirtualFaceReplacer(AlignedReplacer):
    """Each face replaced by the virtual face of its identity under the key, aligned on the
    generator's template and crop size; a retry draws another with the retry's own key code."""

    def __init__(self, generator: FaceGenerator, key: Key) -> None:
        self.generator, self.key = generator, key
        self.template, self.crop_size = generator.template, generator.crop_size

    @property
    def model_ids(self) -> dict[str, str]:
        return self.generator.model_ids

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        return self.generator.generate(identities, self.key, attempt)
