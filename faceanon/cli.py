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

@app.command()
@user_errors
def keygen(out_path: Path = typer.Option(Path("faceanon.key"), "--out", "-o",
                                         help="Where to write the key (mode 0600)."),
           bits: int = typer.Option(256, help="Key length in bits (at least 128)."),
           force: bool = typer.Option(False, help="Overwrite an existing key file."),
           json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Make a new random secret key. Only its fingerprint is printed, never the key."""
    from faceanon import keys

    key = keys.generate(bits)
    keys.save(key, out_path, force=force)
    if json_out:
        emit_json({"path": str(out_path), "bits": key.bits, "fingerprint": key.fingerprint})
    else:
        out.print(f"wrote {out_path} ({key.bits}-bit key, fingerprint {key.fingerprint})")


@app.command()
@user_errors
def keyinfo(path: Path = typer.Argument(..., help="A key file from `faceanon keygen`."),
            json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Check a key file and show its bit length, fingerprint, format version and creation time."""
    from faceanon import keys

    key = keys.load(path)
    if keys.readable_by_others(path):
        err.print(f"[yellow]warning:[/yellow] {path}: readable by group or others; "
                  f"run chmod 600 {path}", highlight=False)
    info = {"path": str(path), "bits": key.bits, "fingerprint": key.fingerprint,
            "format_version": keys.FORMAT_VERSION, "created": key.created_iso}
    if json_out:
        emit_json(info)
    else:
        for name, value in info.items():
            out.print(f"{name:>15}  {value}", highlight=False)

# --- commands: datasets ---

def run_with_progress(label: str, job_fn: Callable[..., Any], *args: Any) -> Any:
    """Run a dataset job under a rich progress bar (quiet when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        return job_fn(*args, progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))


def report_job(job: Any, counts: dict[str, int], json_out: bool) -> None:
    """Print a job's counts and exit 1 when some inputs failed (see the README's exit codes)."""
    summary = {"output": str(job.out), "manifest": str(job.manifest_path), **counts}
    if json_out:
        emit_json(summary)
    else:
        out.print(", ".join(f"{k} {v}" for k, v in counts.items()) + f"; manifest {job.manifest_path}",
                  highlight=False)
    if counts.get("failed"):
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
@user_errors
def pack(folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
         archive: Path = typer.Argument(..., help="Archive to write (.h5)."),
         json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Pack a folder of images into one faceanon HDF5 archive, byte for byte.

    Labels are the images' parent folder names (LFW-style). Re-run to resume after a kill.
    """
    from faceanon import datasets

    job, counts = run_with_progress("packing", datasets.pack, folder, archive)
    report_job(job, counts, json_out)


@app.command()
@user_errors
def unpack(archive: Path = typer.Argument(..., help="A faceanon .h5 archive."),
           folder: Path = typer.Argument(..., help="Folder to write the images into."),
           json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Write an archive's images back to files, byte for byte, at their stored paths."""
    from faceanon import datasets

    job, counts = run_with_progress("unpacking", datasets.unpack, archive, folder)
    report_job(job, counts, json_out)

# --- commands: geometry ---

# --- commands: identity ---

# --- commands: generator ---
