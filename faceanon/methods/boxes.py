"""The classical baselines: each detector box blurred or pixelated in the photo itself."""

from __future__ import annotations

import numpy as np

from faceanon.methods.base import FaceBatch, FaceReplacer, Replacement
from faceanon.obscure import obscure


class ObscureBoxes(FaceReplacer):
    """Blurs (``cells`` None) or pixelates each face box; nothing to align, nothing to retry."""

    draws_from_identity = False

    def __init__(self, cells: int | None) -> None:
        self.cells = cells

    def replace(self, batch: FaceBatch) -> Replacement:
        images = {i: obscure(image, batch.boxes[batch.owners == i], self.cells)
                  for i, image in batch.images.items()}
        return Replacement(images, np.zeros(len(batch.owners), bool))
