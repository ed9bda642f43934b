"""``faceanon eval`` on videos: per clip, what an evaluator sees in the anonymized frames.

- **frames left visible**: frames where the evaluator's recognizer, reading the anonymized
  frame where the original face was (at the original's landmarks), matches it to the original
  face of that frame. Each such frame is listed: it is a privacy failure.
- **identity consistency**: within each track of the original, the share of pairs of frames
  whose virtual faces match each other — one virtual person per real person, not a flicker.
- **landmark jitter**: the mean frame-to-frame acceleration of the five landmarks (second
  difference, in eye distances), found by the detector in the output and in the input over the
  same frames; a ratio above 1 means the pasted faces shiver more than the real ones moved.
  The ratio of the medians beside it tells a steady shiver (both high) from the detector's
  landmarks jumping between two places in some frames (the mean high, the median near 1).
- **throughput**: frames per second, as the anonymizing run recorded it.
- **synchronism across clips** (of a folder): where the evaluator takes tracks in two clips for
  one person, the share of their frame pairs whose virtual faces match too — a person is one
  virtual person in every clip under one key, as in every photo; and where it takes them for
  two people, the share that match all the same.

Frames are paired by presentation time, so frames that ``--no-face skip`` left out are not
paired (and are counted).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from faceanon import records, video
from faceanon.detect import Detector
from faceanon.errors import FaceanonError
from faceanon.identity import Recognizer, cosine_similarity
from faceanon.tracking import Detections, acceleration, link, match_faces

Progress = Callable[[int, int], None]
MAX_TRACK_FRAMES = 60  # frames per track whose virtual faces are compared pairwise


@dataclass(frozen=True)
class ClipPair:
    """An original clip, its anonymized version and the anonymizing run's record of it."""

    name: str
    orig: Path
    anon: Path
    record: dict[str, Any]


@dataclass(frozen=True)
class TrackFaces:
    """One track of an original clip as the evaluator saw it: (D,) the original face's unit
    mean embedding and (n, D) the virtual faces' embeddings at frames spread over it. Held only
    while the clips are measured: embeddings of real faces are not written to the report."""

    orig: np.ndarray
    anon: np.ndarray


@dataclass
class _Seen:
    """What the evaluator found in one paired frame."""

    orig: Detections
    anon_marks: list[np.ndarray | None]  # per original face: the output's landmarks there
    emb_orig: np.ndarray                 # (n, D) the original faces
    emb_anon: np.ndarray                 # (n, D) the output read at the original landmarks
    visible: list[int] = field(default_factory=list)  # original faces still matched


def clip_pairs(anon: Path, orig: Path) -> list[ClipPair]:
    """The clips of an anonymized output with their originals, by its manifest: a clip file
    itself, or the clips of a folder."""
    manifest = [r for r in records.read_manifest(anon) if "video" in r and r.get("output")]
    if anon.is_file() and video.is_video_name(anon.name):
        rec = manifest[0] if manifest else {}
        return [ClipPair(anon.name, orig, anon, rec)] if orig.is_file() else []
    return [ClipPair(r["path"], orig / r["path"], anon / r["output"], r)
            for r in manifest if (orig / r["path"]).is_file() and (anon / r["output"]).is_file()]


def _paired_frames(pair: ClipPair) -> Iterator[tuple[np.ndarray, np.ndarray] | None]:
    """(original, anonymized) frames by presentation time; None for an original frame with
    no anonymized one."""
    anon = video.read_frames(pair.anon.read_bytes(), str(pair.anon))
    pending = next(anon, None)
    for t, rgb in video.read_frames(pair.orig.read_bytes(), str(pair.orig)):
        while pending is not None and pending[0] < t - 1e-3:
            pending = next(anon, None)
        if pending is not None and abs(pending[0] - t) <= 1e-3:
            yield rgb, pending[1]
            pending = next(anon, None)
        else:
            yield None


class ClipEvaluator:
    """Measures clips with an evaluator's detector and recognizer at its match threshold."""

    def __init__(self, detector: Detector, recognizer: Recognizer, threshold: float) -> None:
        self.detector, self.recognizer, self.threshold = detector, recognizer, threshold

    def _see(self, orig: np.ndarray, anon: np.ndarray) -> _Seen:
        found = self.detector(orig)
        dets = Detections.of(found)
        out = self.detector(anon)
        match = match_faces(dets.boxes, np.array([f.box for f in out]).reshape(-1, 4))
        marks = [None if j is None else out[j].landmarks5 for j in match]
        if not found:
            none = np.zeros((0, self.recognizer.dim))
            return _Seen(dets, marks, none, none)
        emb_o = self.recognizer.embed_faces(orig, dets.landmarks)
        emb_a = self.recognizer.embed_faces(anon, dets.landmarks)
        visible = np.flatnonzero(cosine_similarity(emb_o, emb_a) >= self.threshold)
        return _Seen(dets, marks, emb_o, emb_a, [int(k) for k in visible])

    def evaluate(self, pair: ClipPair) -> tuple[list[TrackFaces], dict[str, Any]]:
        """The clip's tracks as the evaluator saw them, and its figures."""
        seen: list[_Seen] = []
        unpaired = 0
        for frames in _paired_frames(pair):
            if frames is None:
                unpaired += 1
                none = np.zeros((0, self.recognizer.dim))
                seen.append(_Seen(Detections.of([]), [], none, none))
            else:
                seen.append(self._see(*frames))
        tracks = _track_rows(seen)
        visible = [i for i, s in enumerate(seen) if s.visible]
        faces = _track_faces(seen, tracks)
        consistency, n_pairs = self._consistency(faces)
        return faces, {"frames": len(seen), "frames_unpaired": unpaired,
                "faces": int(sum(len(s.orig) for s in seen)), "tracks": len(tracks),
                "frames_left_visible": len(visible), "visible_frames": visible,
                "identity_consistency": consistency, "consistency_pairs": n_pairs,
                **_jitter_figures(*_jitter(seen, tracks)),
                "frames_per_second": (pair.record.get("video") or {}).get("frames_per_second")}

    def _consistency(self, faces: list[TrackFaces]) -> tuple[float | None, int]:
        """Share of frame pairs within a track whose virtual faces match each other."""
        matched = total = 0
        for track in faces:
            a, b = np.triu_indices(len(track.anon), 1)
            matched += int((cosine_similarity(track.anon[a], track.anon[b])
                            >= self.threshold).sum())
            total += len(a)
        return (matched / total if total else None), total

    def across_clips(self, clips: list[list[TrackFaces]]) -> dict[str, Any]:
        """Synchronism across clips: over pairs of tracks in different clips whose originals
        the evaluator takes for one person (their mean embeddings match), the share of frame
        pairs whose virtual faces match as well; and over pairs it takes for two people, the
        share whose virtual faces match all the same (two people made one)."""
        counts = {True: [0, 0, 0], False: [0, 0, 0]}  # track pairs, frame pairs, matched
        for first, second in itertools.combinations(clips, 2):
            for one, other in itertools.product(first, second):
                same = bool(cosine_similarity(one.orig[None], other.orig[None])[0]
                            >= self.threshold)
                a, b = np.meshgrid(np.arange(len(one.anon)), np.arange(len(other.anon)))
                sims = cosine_similarity(one.anon[a.ravel()], other.anon[b.ravel()])
                got = counts[same]
                got[0], got[1] = got[0] + 1, got[1] + len(sims)
                got[2] += int((sims >= self.threshold).sum())

        def share(got: list[int]) -> float | None:
            return got[2] / got[1] if got[1] else None
        return {"same_person_track_pairs": counts[True][0], "synchronism": share(counts[True]),
                "synchronism_frame_pairs": counts[True][1],
                "other_person_track_pairs": counts[False][0],
                "other_person_matched": share(counts[False])}


def _track_faces(seen: list[_Seen], tracks: list[list[tuple[int, int]]]) -> list[TrackFaces]:
    """Each track's original as one unit mean embedding, and its virtual faces at up to
    ``MAX_TRACK_FRAMES`` frames spread over it."""
    faces = []
    for rows in tracks:
        orig = np.stack([seen[f].emb_orig[k] for f, k in rows])
        orig = orig / np.maximum(np.linalg.norm(orig, axis=1, keepdims=True), 1e-12)
        mean = orig.mean(0)
        pick = np.linspace(0, len(rows) - 1, min(len(rows), MAX_TRACK_FRAMES)).astype(int)
        faces.append(TrackFaces(mean / max(float(np.linalg.norm(mean)), 1e-12),
                                np.stack([seen[rows[p][0]].emb_anon[rows[p][1]] for p in pick])))
    return faces


def _track_rows(seen: list[_Seen]) -> list[list[tuple[int, int]]]:
    """The original faces linked into tracks (no bridging): each track's (frame, face index)
    rows, frames where it was detected."""
    rows = []
    for track in link([s.orig for s in seen], max_gap=0):
        got = []
        for t, frame in enumerate(track.frames):
            boxes = seen[frame].orig.boxes
            got.append((int(frame), int(np.argmin(np.abs(boxes - track.boxes[t]).sum(1)))))
        rows.append(got)
    return rows


def _jitter(seen: list[_Seen], tracks: list[list[tuple[int, int]]]
            ) -> tuple[list[float], list[float]]:
    """Landmark acceleration (in eye distances per frame²) of the originals and of the output,
    one figure per run of three frames where both were detected."""
    orig, anon = [], []
    for rows in tracks:
        for (f0, k0), (f1, k1), (f2, k2) in zip(rows, rows[1:], rows[2:]):
            out = [seen[f].anon_marks[k] for f, k in ((f0, k0), (f1, k1), (f2, k2))]
            if any(m is None for m in out):
                continue
            src = [seen[f].orig.landmarks[k] for f, k in ((f0, k0), (f1, k1), (f2, k2))]
            eyes = float(np.linalg.norm(src[1][1] - src[1][0]))
            orig.append(float(acceleration(np.stack(src), eyes)[0]))
            anon.append(float(acceleration(np.stack(out), eyes)[0]))
    return orig, anon


def _jitter_figures(orig: list[float], anon: list[float]) -> dict[str, float | None]:
    """The means of ``_jitter``'s figures and the ratios of their means and medians (output
    over input); None where no three frames in a row were measured or the input never moved."""
    if not orig:
        return dict.fromkeys(("jitter_orig", "jitter_anon", "jitter_ratio",
                              "jitter_median_ratio"))
    mean_in, mean_out = float(np.mean(orig)), float(np.mean(anon))
    median_in, median_out = float(np.median(orig)), float(np.median(anon))
    return {"jitter_orig": mean_in, "jitter_anon": mean_out,
            "jitter_ratio": mean_out / mean_in if mean_in else None,
            "jitter_median_ratio": median_out / median_in if median_in else None}


def evaluate_clips(pairs: list[ClipPair], detector: Detector, recognizer: Recognizer,
                   threshold: float, progress: Progress | None = None) -> dict[str, Any]:
    """Every clip's figures, and the totals over them; a clip that cannot be read (damaged
    after anonymizing) gets ``{"error": reason}`` and counts in no total."""
    evaluator = ClipEvaluator(detector, recognizer, threshold)
    clips: dict[str, Any] = {}
    tracks: list[list[TrackFaces]] = []
    for n, pair in enumerate(pairs):
        try:
            faces, clips[pair.name] = evaluator.evaluate(pair)
            tracks.append(faces)
        except FaceanonError as e:
            clips[pair.name] = {"error": e.reason}
        if progress:
            progress(n + 1, len(pairs))
    measured = [c for c in clips.values() if "error" not in c]
    frames = sum(c["frames"] for c in measured)
    visible = sum(c["frames_left_visible"] for c in measured)
    return {"recognizer": {"name": recognizer.name, "threshold": threshold},
            "clips": clips, "frames": frames, "frames_left_visible": visible,
            "across_clips": evaluator.across_clips(tracks)}


def video_lines(report: dict[str, Any]) -> list[str]:
    """The video part of an eval report, a line per clip, for the terminal."""
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    videos = report.get("videos")
    if not videos:
        return []
    lines = [f"videos ({videos['recognizer']['name']} at cos "
             f"{videos['recognizer']['threshold']:.3f}): {videos['frames_left_visible']} of "
             f"{videos['frames']} frames with an original face left visible"]
    for name, c in videos["clips"].items():
        if "error" in c:
            lines.append(f"  {name}: not measured: {c['error']}")
            continue
        lines.append(f"  {name}: {c['frames']} frames, {c['tracks']} tracks; left visible "
                     f"{c['frames_left_visible']} {c['visible_frames'][:20]}; consistency "
                     f"{fmt(c['identity_consistency'], '.3f')} ({c['consistency_pairs']} pairs); "
                     f"jitter ratio {fmt(c['jitter_ratio'], '.2f')} (median "
                     f"{fmt(c['jitter_median_ratio'], '.2f')}); "
                     f"{fmt(c['frames_per_second'], '.2f')} frames/s")
    across = videos["across_clips"]
    if across["same_person_track_pairs"] or across["other_person_track_pairs"]:
        lines.append(f"  across clips: synchronism {fmt(across['synchronism'], '.3f')} over "
                     f"{across['same_person_track_pairs']} pairs of one person's tracks; other "
                     f"people's tracks matched {fmt(across['other_person_matched'], '.3f')} "
                     f"({across['other_person_track_pairs']} pairs)")
    return lines
