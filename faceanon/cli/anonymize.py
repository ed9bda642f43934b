"""``faceanon anonymize`` and ``restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from faceanon.cli.base import (DATASET_HELP, app, err, parse_thresholds, pick_device, report_job,
                               run_with_progress, user_errors)
from faceanon.composite import NO_FACE_POLICY_HELP
from faceanon.methods import all_methods

@app.command()
@user_errors
def anonymize(input_path: Path = typer.Argument(..., metavar="INPUT",
                                                help="Folder of images and videos, faceanon .h5 "
                                                     "archive, or video file."),
              key_path: Optional[Path] = typer.Option(None, "--key", "-k",
                                                      help="Key file (needed by kfaar and ivfg)."),
              out_path: Path = typer.Option(..., "--out", "-o",
                                            help="Output folder, or .h5 archive, same layout."),
              method: str = typer.Option("kfaar", help=", ".join(
                  f"{m.name} ({m.summary})" for m in all_methods()) + "."),
              strength: Optional[float] = typer.Option(
                  None, "--strength", help="obfuscate only, in (0, 1] (default 0.75): how heavily "
                  "the face is changed; higher hides it better from people and keeps it less "
                  "recognisable for machines."),
              no_face: str = typer.Option("blur", "--no-face", help=NO_FACE_POLICY_HELP),
              min_face_size: float = typer.Option(20.0, "--min-face-size",
                                                  help="Smallest face to find, in pixels."),
              thresholds: str = typer.Option("0.6,0.7,0.7", "--thresholds",
                                             help="MTCNN P,R,O-net score thresholds (see detect)."),
              keep_names: bool = typer.Option(False, "--keep-names",
                                              help="Keep folder and file names and labels as they "
                                                   "are (default: keyed pseudonyms)."),
              reversible: bool = typer.Option(
                  False, "--reversible", help="Store with each output image its original "
                  "pixels (with each clip its original file), encrypted under --key "
                  "(AES-256-GCM), for `faceanon restore`. ANYONE WHO HAS THE KEY CAN RESTORE "
                  "THE ORIGINAL FACES from the output."),
              device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
              batch_size: int = typer.Option(8, "--batch-size", min=1,
                                             help="Images per detection/generation batch."),
              dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
              json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Replace every face of every image; the output mirrors the input's layout.

    Re-run the same command to resume. Same key + same input gives byte-identical output
    on the same machine and thread count.
    A face that the recognizer still matches to its original is regenerated, else pixelated,
    and flagged in the manifest; no original face is ever written. Names in paths and labels
    become keyed pseudonyms; the manifest and run record go to OUT.private, beside OUT.
    """
    from faceanon.anonymize import build_anonymizer, run_anonymize
    from faceanon.datasets import open_input

    source = open_input(input_path, dataset, videos=True)  # refused before models load
    anonymizer = build_anonymizer(method, key_path, no_face, min_face_size, pick_device(device),
                                  parse_thresholds(thresholds), reversible, strength)
    job, counts = run_with_progress("anonymizing", lambda **kw: run_anonymize(
        source, out_path, anonymizer, batch_size, keep_names=keep_names, **kw), clips=True)
    report_job(job, counts, json_out)


@app.command()
@user_errors
def restore(anon: Path = typer.Argument(..., metavar="ANON", help="Output of `faceanon anonymize "
                                        "--reversible` (folder, .h5 archive or clip)."),
            key_path: Path = typer.Option(..., "--key", "-k", help="The key ANON was made with."),
            out_path: Path = typer.Option(..., "--out", "-o",
                                          help="Folder, .h5 archive or clip for the originals."),
            json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Put back the originals of a reversible output, under their original names: pixels
    identical to the decoded originals (JPEG originals are written as NAME.jpg.png), clips
    byte-identical to the input files (a single clip is written to --out).

    An image whose payload does not open (wrong key, altered, moved to another image) or whose
    published file was changed is not written: one error line each, exit 1. Re-run to resume.
    Anyone who holds the key can restore the faces: keep it secret.
    """
    from faceanon import keys
    from faceanon.records import FAILED, read_manifest
    from faceanon.reversible import run_restore

    job, counts = run_with_progress("restoring", run_restore, anon, out_path, keys.load(key_path))
    for rec in read_manifest(out_path):
        if rec["status"] == FAILED:
            err.print(f"[red]error:[/red] {rec['path']}: {rec.get('reason')}", highlight=False,
                      soft_wrap=True)
    report_job(job, counts, json_out)
