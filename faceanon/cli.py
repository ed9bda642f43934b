"""The ``faceanon`` command: a thin Typer layer over the library.

Every command turns a ``FaceanonError`` into one line on stderr and exit code 2; data go to
stdout (a rich table, or with ``--json`` one JSON object as the last line).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

from faceanon import __version__
from faceanon.errors import FaceanonError

app = typer.Typer(help="Anonymize face-image datasets with a secret key (KFAAR).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
train_app = typer.Typer(help="Train the project's networks.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: recognizer accuracy, throughput.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes, documented in the README.
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def user_errors(fn: F) -> F:
    """Print a FaceanonError as one line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FaceanonError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            err.print("interrupted; re-run the same command to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    """Print one JSON object as the last stdout line (for ``--json``)."""
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        out.print(f"faceanon {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Anonymize face-image datasets with a secret key; verify identities with it (KFAAR)."""


# --- commands: keys ---

# --- commands: datasets ---

# --- commands: geometry ---

# --- commands: identity ---

# --- commands: generator ---
