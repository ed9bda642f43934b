"""Dataset commands: ``pack``, ``unpack``, ``detect`` and ``prepare`` (each a resumable job)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from faceanon.cli.base import (app, parse_thresholds, report_job, run_with_progress,
                               user_errors)

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


@app.command()
@user_errors
def detect(input_path: Path = typer.Argument(..., metavar="INPUT",
                                             help="Folder of images or faceanon .h5 archive."),
           out_path: Path = typer.Option(..., "--out", "-o", help="JSON-lines file to write."),
           preview: Optional[Path] = typer.Option(
               None, "--preview", help="Also write each image with boxes and landmarks drawn here."),
           min_face_size: float = typer.Option(20.0, "--min-face-size",
                                               help="Smallest face to find, in pixels (>= 12)."),
           thresholds: str = typer.Option("0.6,0.7,0.7", "--thresholds",
                                          help="MTCNN P,R,O-net score thresholds."),
           max_faces: Optional[int] = typer.Option(None, "--max-faces",
                                                   help="Keep at most this many faces per image."),
           device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
           json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Detect faces: one JSON line per image with boxes, scores, 5 and 68 landmarks.

    Review the output (or the --preview images) to choose thresholds before anonymizing.
    Unreadable images get a line with an "error" field; the command goes on. Re-run to resume.
    """
    from faceanon.datasets import open_input
    from faceanon.detect import Detector
    from faceanon.detections import run_detect
    from faceanon.landmarks import Landmarks68

    source = open_input(input_path)
    thresholds_ = parse_thresholds(thresholds)
    detector = Detector(min_face_size, thresholds_, max_faces, device)
    settings = {"min_face_size": min_face_size, "thresholds": list(thresholds_),
                "max_faces": max_faces, "preview": None if preview is None else str(preview)}
    job, counts = run_with_progress("detecting", lambda **kw: run_detect(
        source, out_path, detector, Landmarks68(), preview, settings, **kw))
    report_job(job, counts, json_out)


@app.command()
@user_errors
def prepare(input_path: Path = typer.Argument(..., metavar="INPUT",
                                              help="Folder of images or faceanon .h5 archive."),
            out_path: Path = typer.Option(..., "--out", "-o", help="Aligned archive to write (.h5)."),
            size: int = typer.Option(128, "--size", help="Crop side in pixels."),
            template: str = typer.Option("faceanon", "--template", help="Alignment template: "
                                         "faceanon (head and hair) or face (the paste region)."),
            people: Optional[Path] = typer.Option(
                None, "--people", help="Keep only these identities (LFW people list)."),
            device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N] for detection."),
            json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Make a generator training set: detect the central face, align it, pack crops + identities.

    Identities are the images' folder names (LFW layout). Re-run to resume after a kill.
    """
    from faceanon.detect import Detector
    from faceanon.training.aligned import prepare as prepare_aligned

    detector = Detector(device=device)
    job, counts = run_with_progress("aligning", lambda **kw: prepare_aligned(
        input_path, out_path, size, people, detector, template=template, **kw))
    report_job(job, counts, json_out)
