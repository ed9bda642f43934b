"""``pixelate``: the classical baseline, each face box pixelated."""

from __future__ import annotations

from faceanon.methods.base import MethodSetup
from faceanon.methods.boxes import ObscureBoxes
from faceanon.methods.registry import register

CELLS = 10  # blocks across the face


@register("pixelate", "classical baseline, faces pixelated")
def pixelate(setup: MethodSetup) -> ObscureBoxes:
    return ObscureBoxes(CELLS)
