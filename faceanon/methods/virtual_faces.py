"""Methods that replace each face with a virtual face from a face generator
(``faceanon.generators``): ivfg as it is, kfaar re-posed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceanon.keys import Key
from faceanon.memo import Memo
from faceanon.methods.aligned import AlignedReplacer

if TYPE_CHECKING:
    from faceanon.generators import FaceGenerator


class VirtualFaceReplacer(AlignedReplacer):
    """Each face replaced by the virtual face of its identity under the key, aligned on the
    generator's template and crop size; a retry draws another with the retry's own key code.

    The faces last drawn are kept (``faceanon.memo``): every frame of a clip's track asks for
    the same one."""

    MEMO_FACES = 64

    def __init__(self, generator: FaceGenerator, key: Key) -> None:
        self.generator, self.key = generator, key
        self.template, self.crop_size = generator.template, generator.crop_size
        self._drawn: Memo[np.ndarray] = Memo(self.MEMO_FACES)

    @property
    def model_ids(self) -> dict[str, str]:
        return self.generator.model_ids

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        """The virtual faces of ``identities``; those not kept are drawn together (a face does
        not depend on the others it is drawn with, see ``FaceGenerator.generate``)."""
        names = [np.asarray(code, np.float32).tobytes() + attempt.to_bytes(4, "big")
                 for code in identities]
        faces = [self._drawn.find(name) for name in names]
        new = [j for j, face in enumerate(faces) if face is None]
        if new:
            for j, face in zip(new, self.generator.generate(identities[new], self.key, attempt)):
                faces[j] = self._drawn.put(names[j], face.copy())  # not a view of the batch
        return np.stack(faces)
