"""KVFA commands: ``verify`` (is this virtual face that person, with the key) and ``enroll``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from faceanon.cli.base import EXIT_OK, app, emit_json, out, pick_device, user_errors
from faceanon.errors import FaceanonError

@app.command()
@user_errors
def verify(virtual: Path = typer.Argument(..., help="Image with the virtual face."),
           key_path: Path = typer.Option(..., "--key", "-k", help="The key it was made with."),
           ref: Path = typer.Option(..., "--ref", help="Original photo, enrolment (.npy) or, with "
                                    "--ref-virtual, another virtual face."),
           ref_virtual: bool = typer.Option(False, "--ref-virtual",
                                            help="The reference is a virtual face too."),
           threshold: Optional[float] = typer.Option(None, help="Decision threshold (default: "
                                                     "the model's calibrated EER threshold)."),
           device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
           json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """Is this virtual face that person? KVFA with the key. Exit 0 match, 1 no match, 2 error."""
    from faceanon import keys
    from faceanon.kvfa import Verifier

    key = keys.load(key_path)
    verdict = Verifier.load(pick_device(device)).verify(virtual, key, ref, ref_virtual, threshold)
    result = {"similarity": round(verdict.similarity, 4), "threshold": round(verdict.threshold, 4),
              "match": verdict.match}
    if json_out:
        emit_json(result)
    else:
        out.print(f"{'match' if verdict.match else 'no match'}: similarity "
                  f"{verdict.similarity:.3f} (threshold {verdict.threshold:.3f})", highlight=False)
    raise typer.Exit(EXIT_OK if verdict.match else 1)


@app.command()
@user_errors
def enroll(original: Path = typer.Argument(..., help="Photo of the person."),
           out_path: Path = typer.Option(..., "--out", "-o", help="Enrolment file to write (.npy)."),
           device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
           force: bool = typer.Option(False, help="Overwrite an existing file.")) -> None:
    """Store a person's KVFA feature so that `verify --ref` needs no photo later."""
    from faceanon.kvfa import Verifier, save_enrolment

    if out_path.suffix.lower() != ".npy":
        raise FaceanonError("enrolment file name must end in .npy", out_path)
    if out_path.exists() and not force:
        raise FaceanonError("file exists; pass --force to overwrite it", out_path)
    save_enrolment(Verifier.load(pick_device(device)).original_feature(original), out_path)
    out.print(f"wrote {out_path}", highlight=False)
