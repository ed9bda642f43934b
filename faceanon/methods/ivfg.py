"""``ivfg``: a virtual face per identity under the key (``faceanon.virtual``: KFAAR's generator
without its pose stage)."""

from __future__ import annotations

from faceanon.methods.base import MethodSetup
from faceanon.methods.registry import register
from faceanon.methods.virtual_faces import VirtualFaceReplacer


@register("ivfg", "virtual face")
def ivfg(setup: MethodSetup) -> VirtualFaceReplacer:
    from faceanon.virtual import load_virtual_faces

    key = setup.require_key()
    return VirtualFaceReplacer(load_virtual_faces(setup.device), key)
