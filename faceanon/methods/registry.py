"""The methods by name: each module under ``faceanon.methods`` registers a factory with
``@register``, and ``--method`` offers exactly what is registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from faceanon.errors import FaceanonError
from faceanon.methods.base import FaceReplacer, MethodSetup

Factory = Callable[[MethodSetup], FaceReplacer]


@dataclass(frozen=True)
class Method:
    """A registered method: its name, a line for ``--help``, how to build it (models load
    then), and the options that only it takes."""

    name: str
    summary: str
    build: Factory
    options: tuple[str, ...] = ()


_METHODS: dict[str, Method] = {}


def register(name: str, summary: str,
             options: tuple[str, ...] = ()) -> Callable[[Factory], Factory]:
    """Decorator: register a factory ``MethodSetup -> FaceReplacer`` as method ``name``."""

    def add(build: Factory) -> Factory:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = Method(name, summary, build, options)
        return build

    return add


def all_methods() -> tuple[Method, ...]:
    """The registered methods, in the order they were registered."""
    return tuple(_METHODS.values())


def get_method(name: str) -> Method:
    if name not in _METHODS:
        raise FaceanonError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}")
    return _METHODS[name]
