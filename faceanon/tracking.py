"""Faces followed across the frames of a video: per-frame detections linked into tracks.

Three things go wrong when a video is anonymized frame by frame, and each has its remedy here:

- the detector misses a face for a frame or two (motion blur, a hand, a turn): the real face
  would flash between anonymized frames. A miss of up to ``MAX_GAP`` frames inside a track is
  bridged with a box and landmarks interpolated from the detections on either side.
- detector landmarks jitter by a pixel or two from frame to frame, and a face pasted on them
  shivers. They are smoothed with a centred local quadratic fit (Savitzky-Golay): a quadratic
  follows a moving or accelerating face with no lag, which an exponential average does not.
- an identity drawn per frame flickers between virtual people: ``best_frames`` picks the frames
  a track's one identity code is computed from.

Pure numpy: no models, so it is tested on made-up detections.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # only the detector's result type; tracking itself needs no model
    from faceanon.detect import Face

MAX_GAP = 5       # frames: the longest detector miss bridged inside a track
MIN_IOU = 0.3     # overlap of a detection with a track's predicted box to join it
WINDOW = 7        # frames in the centred smoothing window
BEST_FRAMES = 5   # frames a track's identity is computed from
SPREAD_FRAMES = 8  # frames spread over a track (besides its best) its first draw is tried on
STEADY_RUNS, STEADY_LENGTH = 4, 6  # runs of consecutive frames a track's draws are watched in


@dataclass(frozen=True)
class Detections:
    """The faces found in one frame: (n, 4) boxes x1, y1, x2, y2, (n, 5, 2) landmarks (eyes,
    nose, mouth corners) and (n,) scores."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def of(cls, faces: Sequence[Face]) -> Detections:
        """The detector's faces of one frame as arrays (empty ones, of the right shapes, for
        a frame without a face)."""
        return cls(np.array([f.box for f in faces], float).reshape(-1, 4),
                   np.array([f.landmarks5 for f in faces], float).reshape(-1, 5, 2),
                   np.array([f.score for f in faces], float))


@dataclass(frozen=True)
class Track:
    """One face over consecutive frames ``start`` .. ``start + len - 1``: its box, landmarks
    and score in each, and whether the detector found it there (False: bridged)."""

    start: int
    boxes: np.ndarray      # (T, 4)
    landmarks: np.ndarray  # (T, 5, 2)
    scores: np.ndarray     # (T,)
    detected: np.ndarray   # (T,) bool

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def frames(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self))

    @property
    def end(self) -> int:
        """The frame after its last."""
        return self.start + len(self)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of boxes (x1, y1, x2, y2)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def match_faces(orig_boxes: np.ndarray, other_boxes: np.ndarray,
                min_iou: float = MIN_IOU) -> list[int | None]:
    """For each original box, the index of its other box (greedy by overlap, one-to-one), or
    None when nothing overlaps at least ``min_iou``."""
    iou = box_iou(orig_boxes, other_boxes)
    match: list[int | None] = [None] * iou.shape[0]
    while iou.size and iou.max() >= min_iou:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        match[int(i)] = int(j)
        iou[i, :], iou[:, j] = -1.0, -1.0
    return match


class _Open:
    """A track being built: the frames where it was detected and what was found there."""

    def __init__(self, frame: int, dets: Detections, j: int) -> None:
        self.frames: list[int] = []
        self.boxes: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.scores: list[float] = []
        self.add(frame, dets, j)

    def add(self, frame: int, dets: Detections, j: int) -> None:
        self.frames.append(frame)
        self.boxes.append(np.asarray(dets.boxes[j], float))
        self.landmarks.append(np.asarray(dets.landmarks[j], float))
        self.scores.append(float(dets.scores[j]))

    def predict(self, frame: int) -> np.ndarray:
        """Where the box should be at ``frame``: moved on at its last velocity, so fast motion
        still overlaps."""
        if len(self.frames) < 2:
            return self.boxes[-1]
        step = (self.boxes[-1] - self.boxes[-2]) / (self.frames[-1] - self.frames[-2])
        return self.boxes[-1] + step * (frame - self.frames[-1])

    def close(self) -> Track:
        """The track over every frame from its first detection to its last, gaps bridged by
        linear interpolation of box and landmarks."""
        frames = np.array(self.frames)
        span = np.arange(frames[0], frames[-1] + 1)
        marks = np.stack(self.landmarks).reshape(len(frames), 10)
        detected = np.isin(span, frames)
        scores = np.zeros(len(span))
        scores[detected] = self.scores
        return Track(int(frames[0]), _interpolate(span, frames, np.stack(self.boxes)),
                     _interpolate(span, frames, marks).reshape(-1, 5, 2), scores, detected)


def _interpolate(span: np.ndarray, frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(len(span), K) ``values`` (one row per frame of ``frames``) at every frame of
    ``span``, linearly between the known ones."""
    return np.stack([np.interp(span, frames, v) for v in values.T], 1)


def link(frames: Sequence[Detections], max_gap: int = MAX_GAP,
         min_iou: float = MIN_IOU) -> list[Track]:
    """Detections linked into tracks by greedy matching on the overlap with each open track's
    predicted box, best overlap first; a track unmatched for more than ``max_gap`` frames is
    closed. Tracks come ordered by their first frame."""
    open_: list[_Open] = []
    closed: list[Track] = []
    for i, dets in enumerate(frames):
        live = [t for t in open_ if i - t.frames[-1] - 1 <= max_gap]
        closed += [t.close() for t in open_ if t not in live]
        open_ = live
        predicted = np.array([t.predict(i) for t in open_]).reshape(-1, 4)
        match = match_faces(predicted, dets.boxes, min_iou)
        for track, j in zip(open_, match):
            if j is not None:
                track.add(i, dets, j)
        taken = {j for j in match if j is not None}
        open_ += [_Open(i, dets, j) for j in range(len(dets)) if j not in taken]
    tracks = closed + [t.close() for t in open_]
    return sorted(tracks, key=lambda t: t.start)


def smooth_series(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """(T, ...) values smoothed over time: each replaced by a least-squares quadratic through
    the points within ``window`` // 2 frames of it, evaluated there (centred, so no lag; near
    the ends the window is cut short and the fit falls to a line or a constant)."""
    flat = np.asarray(values, float).reshape(len(values), -1)
    half, out = window // 2, np.empty_like(flat)
    for t in range(len(flat)):
        lo, hi = max(t - half, 0), min(t + half + 1, len(flat))
        x = np.arange(lo, hi) - t
        degree = min(2, len(x) - 1)
        design = np.vander(x, degree + 1, increasing=True)
        coef = np.linalg.lstsq(design, flat[lo:hi], rcond=None)[0]
        out[t] = coef[0]  # the fit's value at x = 0
    return out.reshape(np.shape(values))


def smooth(track: Track, window: int = WINDOW) -> Track:
    """The track with its landmarks and boxes smoothed over time (``smooth_series``)."""
    return replace(track, boxes=smooth_series(track.boxes, window),
                   landmarks=smooth_series(track.landmarks, window))


def track_faces(frames: Sequence[Detections]) -> list[Track]:
    """The video's faces as smoothed tracks with short misses bridged."""
    return [smooth(t) for t in link(frames)]


def frontality(landmarks: np.ndarray) -> np.ndarray:
    """(N,) in [0, 1]: 1 when the nose is midway between the eyes (a frontal face), falling as
    the head turns and one eye comes closer to the nose."""
    left = np.linalg.norm(landmarks[:, 2] - landmarks[:, 0], axis=1)
    right = np.linalg.norm(landmarks[:, 2] - landmarks[:, 1], axis=1)
    return 1 - np.abs(left - right) / np.maximum(left + right, 1e-9)


def best_frames(track: Track, k: int = BEST_FRAMES) -> np.ndarray:
    """The (up to) ``k`` detected frames of ``track`` that show the face best — largest and
    most frontal — from which its identity is computed: a profile or a small face gives a
    poor embedding, and one poor frame must not decide a whole clip's virtual person."""
    sides = track.boxes[:, 2:] - track.boxes[:, :2]
    quality = np.sqrt(np.prod(np.clip(sides, 0, None), axis=1)) * frontality(track.landmarks)
    quality = np.where(track.detected, quality, -np.inf)
    order = np.argsort(-quality, kind="stable")[:min(k, int(track.detected.sum()))]
    return np.sort(track.frames[order])


def sample_frames(track: Track, spread: int = SPREAD_FRAMES) -> np.ndarray:
    """The frames a track's virtual face is tried on before the clip is written: its best
    frames and ``spread`` frames evenly over it (so a turn of the head late in the clip is
    among them), in order, without repeats."""
    even = track.frames[np.linspace(0, len(track) - 1, min(spread, len(track))).round()
                        .astype(int)]
    return np.union1d(best_frames(track), even)


def steady_runs(track: Track, runs: int = STEADY_RUNS, length: int = STEADY_LENGTH
                ) -> list[np.ndarray]:
    """``runs`` stretches of ``length`` consecutive frames spread evenly over ``track`` (fewer
    on a short track): where its draws are watched for how steadily their features are found."""
    length = min(length, len(track))
    starts = np.linspace(0, len(track) - length, min(runs, len(track) // length)).round()
    return [track.frames[int(s):int(s) + length] for s in np.unique(starts)]


def tried_frames(track: Track) -> np.ndarray:
    """The frames a track's draws are tried on before its clip is written: its sampled frames
    and its steady runs, in order, without repeats."""
    return np.union1d(sample_frames(track), np.concatenate(steady_runs(track)))


def acceleration(marks: np.ndarray, eyes: float) -> np.ndarray:
    """(T - 2,) the mean acceleration of five landmarks over consecutive frames (T, 5, 2), in
    ``eyes`` (an eye distance, px) per frame²: how much a face shakes, whatever its size. A
    steady or evenly moving face scores 0."""
    second = marks[:-2] - 2 * marks[1:-1] + marks[2:]
    return np.linalg.norm(second, axis=2).mean(axis=1) / max(eyes, 1.0)
