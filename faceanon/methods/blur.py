"""``blur``: the classical baseline, each face box blurred."""

from __future__ import annotations

from faceanon.methods.base import MethodSetup
from faceanon.methods.boxes import ObscureBoxes
from faceanon.methods.registry import register


@register("blur", "classical baseline, faces blurred")
def blur(setup: MethodSetup) -> ObscureBoxes:
    return ObscureBoxes(cells=None)
