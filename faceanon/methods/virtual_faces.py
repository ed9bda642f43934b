"""Methods that replace each face with a virtual face from the generator (``faceanon.virtual``):
ivfg as it is, kfaar re-posed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceanon.keys import Key
from faceanon.methods.aligned import CROP, AlignedReplacer

if TYPE_CHECKING:
    from faceanon.virtual import VirtualFaces


class VirtualFaceReplacer(AlignedReplacer):
    """Each face replaced by the virtual face of its identity under the key; a retry draws
    another with the retry's own key code."""

    def __init__(self, virtual: VirtualFaces, key: Key, more_models: tuple[str, ...] = ()) -> None:
        from faceanon import weights

        self.virtual, self.key = virtual, key
        names = (virtual.model_id, virtual.generator_name, *more_models)
        self._model_ids = {n: weights.entry(n)["sha256"][:16] for n in names}

    @property
    def model_ids(self) -> dict[str, str]:
        return self._model_ids

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        return self.virtual.generate(identities, self.key, CROP, attempt)
