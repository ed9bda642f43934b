"""``ivfg``: a virtual face per identity under the key (``faceanon.generators``: KFAAR's
generator without its pose stage)."""

from __future__ import annotations

from faceanon.methods.base import MethodSetup
from faceanon.methods.registry import register
from faceanon.methods.virtual_faces import VirtualFaceReplacer


@register("ivfg", "virtual face")
def ivfg(setup: MethodSetup) -> VirtualFaceReplacer:
    from faceanon.models import create_model

    key = setup.require_key()
    return VirtualFaceReplacer(create_model("face-generator", device=setup.device), key)
