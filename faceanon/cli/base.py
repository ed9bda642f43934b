"""What every ``faceanon`` command shares: the app and its groups, one-line errors, exit
codes, ``--json`` output, the progress bar and the options several commands take.

Every command turns a ``FaceanonError`` into one line on stderr and exit code 2; data go to
stdout (a rich table, or with ``--json`` one JSON object as the last line).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from faceanon import __version__
from faceanon.errors import FaceanonError

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DATASET_HELP = ("Array archives: the image dataset (e.g. train/images), when the file holds "
                "more than one image-shaped array.")

# Exit codes, documented in the README.
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


class OneLineErrors(TyperGroup):
    """The top-level command group: a missing or bad option of any command is one line
    ``error: …`` and exit 2, as every other error is, instead of Click's boxed usage text.

    Subcommands are parsed inside this group's ``main``, so handling usage errors here covers
    every command (and the tests' CliRunner, which calls ``main`` too) in one place.
    """

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # bare ``faceanon`` or ``faceanon train``: show help
            if e.format_message().strip():
                err.print(e.format_message(), highlight=False, markup=False)
            code = EXIT_ERROR
        except UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            err.print(f"[red]error:[/red] {where}{e.format_message()}", highlight=False,
                      soft_wrap=True)
            code = EXIT_ERROR
        except typer.Abort:
            err.print("aborted", highlight=False)
            code = EXIT_SOME_FAILED
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else EXIT_OK)


app = typer.Typer(help="Anonymize face-image datasets with a secret key (KFAAR).", cls=OneLineErrors,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
train_app = typer.Typer(help="Train the project's networks.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: recognizer accuracy, throughput.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")


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


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FaceanonError(f"--device {device}: CUDA is not available on this machine")
    return device


def _version(value: bool) -> None:
    if value:
        out.print(f"faceanon {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Anonymize face-image datasets with a secret key; verify identities with it (KFAAR)."""


def run_with_progress(label: str, job_fn: Callable[..., Any], *args: Any,
                      clips: bool = False) -> Any:
    """Run a dataset job under a rich progress bar (quiet when stderr is not a terminal);
    with ``clips``, a second bar follows the frames of the clip in hand (``clip_progress``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        frames: list[Any] = []  # the bar of the clip stage in hand

        def clip_progress(stage: str, done: int, total: int | None) -> None:
            if done == 1:  # a new stage: a fresh bar, so no total or speed carries over
                if frames:
                    bar.remove_task(frames.pop())
                frames.append(bar.add_task(f"  clip: {stage} frames", total=total))
            bar.update(frames[-1], completed=done, visible=done != total)

        return job_fn(*args, progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total),
                      **({"clip_progress": clip_progress} if clips else {}))


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


def parse_thresholds(text: str) -> tuple[float, float, float]:
    """``"0.6,0.7,0.7"`` → the P/R/O-net thresholds."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise FaceanonError(f"--thresholds needs three numbers in [0, 1] like 0.6,0.7,0.7, got {text!r}")
    return values  # type: ignore[return-value]


# The evaluator's options, shared by eval and audit (audit's face check is eval's anonymity).
EVAL_RECOGNIZER = typer.Option("dlib", "--eval-recognizer",
                               help="dlib | mobilefacenet:CKPT (an independent evaluator).")
MATCH_THRESHOLD = typer.Option(None, "--threshold", help="Cosine from which two faces match "
                               "(default: the recognizer's EER threshold on LFW pairs.txt).")
