"""``obfuscate``: faces that people no longer recognise but the recognizer still matches
(``faceanon.obfuscate``); its post-check is inverted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from faceanon.methods.aligned import AlignedReplacer
from faceanon.methods.base import STILL_MATCHED, MethodSetup
from faceanon.methods.registry import register

if TYPE_CHECKING:
    from faceanon.obfuscate import Obfuscator


class ObfuscatedFaces(AlignedReplacer):
    """Each face obfuscated on its aligned crop; a retry optimises it again with more steps."""

    post_check = STILL_MATCHED
    match_colour = False  # the obfuscated face keeps the original's colours already
    retry_draws_another_face = False

    def __init__(self, obfuscator: Obfuscator) -> None:
        from faceanon.obfuscate import TEMPLATE

        self.obfuscator = obfuscator
        self.template, self.crop_size = TEMPLATE, obfuscator.crop

    @property
    def settings(self) -> dict[str, Any]:
        return {"strength": self.obfuscator.strength}

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        return self.obfuscator(crops, identities, attempt)


@register("obfuscate", "people cannot recognise the face, the project's recognizer still "
          "matches it", options=("strength",))
def obfuscate(setup: MethodSetup) -> ObfuscatedFaces:
    from faceanon.obfuscate import DEFAULT_STRENGTH, Obfuscator

    strength = DEFAULT_STRENGTH if setup.strength is None else setup.strength
    return ObfuscatedFaces(Obfuscator(setup.recognizer, setup.require_key(), strength))
