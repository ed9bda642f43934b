"""What ``faceanon eval --out`` draws and writes: the ROC plot, the contact sheet of sampled and
flagged faces, and ``report.json``; drawn with OpenCV so no plotting library is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceanon.align import align
from faceanon.datasets import Entry
from faceanon.errors import FaceanonError
from faceanon.evaluation.faces import EvalFace, load_or_none
from faceanon.fsutil import atomic_write_bytes, atomic_write_text
from faceanon.metrics import roc_auc, roc_curve

__all__ = ["draw_roc", "contact_sheet", "write_outputs", "report_dir", "write_report"]

# At most this many flagged faces are drawn (all are listed in report.json).
MAX_SHEET_FLAGGED = 64


def draw_roc(curves: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int]]],
             size: int = 480) -> np.ndarray:
    """An RGB ROC plot (false accept rate → true accept rate) of ``(label, fpr, tpr, colour)``
    curves, drawn with OpenCV so no plotting library is needed."""
    margin = 56
    img = np.full((size, size, 3), 255, np.uint8)
    side = size - 2 * margin

    def xy(fpr: float, tpr: float) -> tuple[int, int]:
        return int(round(margin + fpr * side)), int(round(size - margin - tpr * side))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(6):
        t = k / 5
        cv2.line(img, xy(t, 0), xy(t, 1), (225, 225, 225), 1)
        cv2.line(img, xy(0, t), xy(1, t), (225, 225, 225), 1)
        cv2.putText(img, f"{t:.1f}", (xy(t, 0)[0] - 10, size - margin + 18), font, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{t:.1f}", (margin - 30, xy(0, t)[1] + 4), font, 0.4, (0, 0, 0), 1)
    cv2.line(img, xy(0, 0), xy(1, 1), (170, 170, 170), 1, cv2.LINE_AA)
    cv2.rectangle(img, xy(0, 1), xy(1, 0), (0, 0, 0), 1)
    cv2.putText(img, "false accept rate", (size // 2 - 60, size - 14), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, "true accept rate", (6, margin - 20), font, 0.45, (0, 0, 0), 1)
    for k, (label, fpr, tpr, colour) in enumerate(curves):
        pts = np.array([xy(f, t) for f, t in zip(fpr, tpr)], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        y = xy(0, 0)[1] - 14 - 18 * k
        cv2.line(img, (xy(0.45, 0)[0], y - 4), (xy(0.52, 0)[0], y - 4), colour, 2)
        cv2.putText(img, label, (xy(0.54, 0)[0], y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def contact_sheet(rows: list[tuple[EvalFace, str]], orig: dict[str, Entry], anon: dict[str, Entry],
                   anon2: dict[str, Entry] | None, crop: tuple[str, int]) -> np.ndarray:
    """One row per face: original | virtual | other key (when given), each cropped (on
    ``crop``'s template and size) at the original's landmarks so the columns show the same
    place, with a caption."""
    cols = 3 if anon2 is not None else 2
    text_w, cell = 300, crop[1]
    sheet = np.full((len(rows) * cell, cols * cell + text_w, 3), 255, np.uint8)
    for r, (face, why) in enumerate(rows):
        sources = [orig, anon] + ([anon2] if anon2 is not None else [])
        for c, src in enumerate(sources):
            image = load_or_none(src[face.relpath])
            if image is None:
                continue
            face_crop, _ = align(image, face.landmarks5[None], *crop)
            sheet[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = face_crop[0]
        lines = [face.relpath[-40:], f"face {face.index}: {why}",
                 f"cosine to original {face.cosine:.3f}"] + face.flags
        for k, line in enumerate(lines):
            cv2.putText(sheet, line, (cols * cell + 6, r * cell + 20 + 18 * k),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.line(sheet, (0, (r + 1) * cell - 1), (sheet.shape[1], (r + 1) * cell - 1), (200, 200, 200), 1)
    return sheet


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_outputs(out_dir: Path, report: dict[str, Any], faces: list[EvalFace],
                  flagged: list[EvalFace],
                   orig: dict[str, Entry], anon: dict[str, Entry], anon2: dict[str, Entry] | None,
                   synchronism_curves: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                   sample: int, rng: np.random.Generator,
                   crop: tuple[str, int]) -> dict[str, str]:
    files: dict[str, str] = {}
    report_dir(out_dir)
    if synchronism_curves is not None:
        scores_a, scores_o, same = synchronism_curves
        curves = []
        for label, scores, colour in (("virtual, same key", scores_a, (200, 40, 40)),
                                      ("originals (baseline)", scores_o, (40, 90, 200))):
            fpr, tpr, _ = roc_curve(scores, same)
            curves.append((f"{label} AUC {roc_auc(scores, same):.3f}", fpr, tpr, colour))
        atomic_write_bytes(out_dir / "roc.png", _png(draw_roc(curves)))
        files["roc"] = str(out_dir / "roc.png")
    picks = sorted(rng.choice(len(faces), min(sample, len(faces)), replace=False).tolist())
    rows = [(faces[i], "random sample") for i in picks] + \
        [(f, "flagged") for f in flagged[:MAX_SHEET_FLAGGED]]
    if rows:
        sheet = contact_sheet(rows, orig, anon, anon2, crop)
        atomic_write_bytes(out_dir / "contact_sheet.png", _png(sheet))
        files["contact_sheet"] = str(out_dir / "contact_sheet.png")
    files["report"] = write_report(out_dir, {**report, "files": files})
    return files


def report_dir(out_dir: str | Path) -> Path:
    """The report folder, created if need be."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaceanonError(f"cannot create the report folder: {e.strerror or e}", out_dir) from None
    return out_dir


def write_report(out_dir: Path, report: dict[str, Any]) -> str:
    """``report.json`` in ``out_dir``; its path."""
    atomic_write_text(out_dir / "report.json",
                      json.dumps(report, indent=2, sort_keys=True, default=_jsonable) + "\n")
    return str(out_dir / "report.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)
