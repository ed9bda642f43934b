"""The ``faceanon`` command: a thin Typer layer over the library, one module per command group.

Importing a group's module registers its commands on ``app``; each command parses its options,
calls the library and prints. Nothing here decides how data are processed.
"""

from faceanon.cli import anonymize, data, evaluate, keys, kvfa, train  # noqa: F401  (registers)
from faceanon.cli.base import app

__all__ = ["app"]
