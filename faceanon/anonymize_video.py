"""Anonymizing a video: every face tracked through the clip and replaced frame by frame by the
same pipeline as an image's faces, with one virtual identity per track.

The clip is read several times and written once, so no decoded frame is ever held for long:

1. every frame goes through the detector; the detections are linked into tracks, short misses
   bridged and landmarks smoothed (``faceanon.tracking``);
2. each track's identity code is the mean embedding of its best frames (largest, most frontal),
   so a person is one virtual person for the whole clip, whatever the angle of each frame;
3. each track's virtual face is drawn ``TRACK_DRAWS`` times (attempt 0, then the draws of the
   image retries) and tried, in one more pass, on a sample of its frames and on a few runs of
   consecutive frames (``tracking.tried_frames``). Of the draws that stay ``SAFE_MARGIN`` below
   the post-check's threshold on every tried frame (by the pipeline's own recognizer: for
   kfaar and ivfg, draws unlike the original), the track starts from the one on which the
   detector finds the five landmarks most steadily over the runs; where none is that safe,
   from the one furthest below the threshold. A face that fails the check in a frame is drawn
   again for that frame alone, which shows another virtual person there, so a track must not
   pass only narrowly (on a real talking-head clip, 92 of 249 frames failed before this step);
   and what the pipeline's recognizer still finds close, another recognizer may match (over
   three real clips under two keys, the evaluator matched 187 frames when tracks started from
   the first draw passing by a cosine margin of 0.02, 104 with the furthest draw). Draws
   differ in steadiness too: some virtual faces are smeared enough that the detector places
   their features anew in every frame, and on two real clips the whole-clip landmark jitter of
   one track went from 2.39 to 0.88 (and 1.99 to 0.74, 2.41 to 0.87) between draws. A clip has
   a handful of tracks, so trying every draw on about 40 frames each costs little beside a
   clip of minutes. Which draw is safest and steadiest depends on the clip, so a person seen
   earlier in the run (a track of an earlier clip, or of this one, whose identity code the
   pipeline's recognizer matches) keeps the draw they got then, where it is safe here and shakes
   at most ``KEPT_SHAKING`` times as much as the steadiest safe draw: one person under one key
   is then one virtual person in every clip of a run, as in every photo (by the evaluator, on
   three real clips of two people, synchronism across clips went 0.005 → 0.505 under one key
   and 0.52 → 1.00 under another). The run's private record keeps them sealed under the key
   (``faceanon.people``), so a run resumed after a kill draws them alike; a separate run
   chooses afresh. Obfuscate's retries work on the same face longer instead of drawing
   another (``FaceReplacer.retry_draws_another_face``), so its tracks start at attempt 0;
4. for a method with a pose transfer (kfaar), each track's original landmarks, read on its
   aligned crop in every frame, are smoothed over time like the track's own (one more pass):
   read anew in each frame they shake by a pixel or two, and the pasted features with them;
5. each frame's tracked faces go through ``Anonymizer.replace_faces`` with their track's code
   and attempt: the method, the post-check against the frame's own face, the retries and the
   fail-safe are those of images, so a face that cannot be replaced safely is obscured, never
   passed on. A frame without a face goes by the no-face policy, as an image does.

Nothing is written until the whole clip has been decoded once, so a truncated or damaged file
fails with its reason and no output.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from faceanon import video
from faceanon.align import align
from faceanon.anonymize import Anonymizer
from faceanon.composite import apply_no_face_policy
from faceanon.datasets import FAILED, NO_FACE, OK, Entry, Result, file_stamp
from faceanon.detect import Face
from faceanon.errors import FaceanonError
from faceanon.methods.aligned import AlignedReplacer
from faceanon.memo import content_key
from faceanon.people import People
from faceanon.tracking import (Detections, Track, acceleration, best_frames, smooth_series,
                               steady_runs, track_faces, tried_frames)

if TYPE_CHECKING:
    from faceanon.pose_transfer import LandmarkWarp

Step = Callable[[list[Entry]], list[Result]]
# Progress within a clip, for a long one: (stage, frames done, frames in all or None while the
# first pass has not counted them yet). Stages: "tracking", then "replacing".
FrameProgress = Callable[[str, int, "int | None"], None]
# Draws each track is tried with before its clip is written (step 3 of the module docstring):
# more than an image's retries, since a whole clip's frames hang on the choice and a draw costs
# only some frames. On a talking-head clip under one key, the first three draws passed dlib's
# post-check by at most 0.003 and the fourth by 0.069: draws differ that much.
TRACK_DRAWS = 6
# How far below the post-check's threshold (cosine) a draw must stay on all its tried frames
# for steadiness to choose among the draws: on the 480p and head-turning clips, whose draws
# stayed 0.026 to 0.12 below, it leaves out only the narrowest (the earlier rule of taking the
# first draw that passed by 0.02 left many frames to the evaluator).
SAFE_MARGIN = 0.03
# How much more than the steadiest safe draw (``try_draws``' shaking) a person's draw from an
# earlier clip of the run may shake and still be kept (step 3 of the module docstring): half as
# much again, the margin the issue allows a clip's jitter over its input's.
KEPT_SHAKING = 1.5


@dataclass
class VideoReport:
    """The manifest's account of one clip (its ``video`` field)."""

    frames_in: int = 0
    frames_out: int = 0
    faces: int = 0             # faces replaced, counted once per frame they are in
    tracks: int = 0
    redrawn_tracks: int = 0    # tracks whose faces start from a retry's draw (see step 3)
    kept_tracks: int = 0       # tracks that start from their person's draw in an earlier clip
    bridged_faces: int = 0     # of ``faces``: detector misses, placed from their track
    no_face_frames: int = 0    # frames that went by the no-face policy
    flagged_frames: int = 0    # frames with a face replaced again or given the fail-safe
    fail_safe_frames: int = 0  # frames with a face given the fail-safe
    audio: str = "none"
    frames_per_second: float = 0.0  # throughput: frames in over the whole clip's time
    flags: dict[str, int] = field(default_factory=dict)  # each flag and how many faces had it

    def count(self, flags: list[str]) -> None:
        """Add one frame's face flags."""
        self.flagged_frames += bool(flags)
        # The pipeline's flags for a face given the fail-safe all end so (faceanon.anonymize).
        self.fail_safe_frames += any(f.endswith("fail-safe") for f in flags)
        for flag in flags:
            self.flags[flag] = self.flags.get(flag, 0) + 1


@dataclass(frozen=True)
class FrameFaces:
    """The tracked faces in one frame, and the identity code of each one's track."""

    faces: list[Face]
    codes: np.ndarray
    attempts: np.ndarray
    bridged: int


class VideoAnonymizer:
    """Anonymizes whole clips with an image ``Anonymizer``'s detector, method and checks; one
    per run, since it remembers the draw each person got (step 3 of the module docstring)."""

    def __init__(self, anonymizer: Anonymizer, progress: FrameProgress | None = None,
                 people: People | None = None) -> None:
        self.anonymizer = anonymizer
        self.progress = progress or (lambda stage, done, total: None)
        # The people drawn so far in this run (step 3 of the module docstring); in memory only
        # unless the run keeps them in its private record.
        self.people = people if people is not None else People()

    def anonymize(self, clip: video.Clip, name: str) -> tuple[bytes | None, VideoReport]:
        """The encoded anonymized clip (None when the no-face policy left every frame out) and
        its report; ``name``'s extension is the container of both."""
        started = time.perf_counter()
        tracks, frames = self.track(clip, name)
        codes = self.identity_codes(clip, name, tracks)
        try:
            self.steady_poses(clip, name, tracks)
            attempts, kept = self.first_attempts(clip, name, tracks, codes)
            by_frame = faces_by_frame(tracks, codes, attempts)
            report = VideoReport(tracks=len(tracks), redrawn_tracks=int((attempts > 0).sum()),
                                 kept_tracks=int(kept.sum()))
            encoded, stats = video.rewrite(clip, name, lambda i, rgb: self._frame(
                rgb, by_frame.get(i), report, (i + 1, frames)))
        finally:
            if pose := self._pose():
                pose.release()
        if stats.frames_in != frames:
            raise FaceanonError(f"decoded {stats.frames_in} frames, then {frames}: "
                                "the file changed while it was read", name)
        report.frames_in, report.frames_out, report.audio = (stats.frames_in, stats.frames_out,
                                                             stats.audio)
        report.frames_per_second = round(frames / (time.perf_counter() - started), 3)
        return (encoded if stats.frames_out else None), report

    def track(self, clip: video.Clip, name: str) -> tuple[list[Track], int]:
        """The clip's face tracks, and its number of frames."""
        detections = []
        for _, rgb in video.read_frames(clip, name):
            detections.append(Detections.of(self.anonymizer.detector(rgb)))
            self.progress("tracking", len(detections), None)
        return track_faces(detections), len(detections)

    def identity_codes(self, clip: video.Clip, name: str, tracks: list[Track]) -> np.ndarray:
        """(tracks, D): each track's identity code, the unit mean of the unit embeddings of its
        best frames (the generator normalizes its input, so the length carries nothing); zeros
        for a method that draws nothing from them (blur, pixelate), without reading the clip."""
        if not self.anonymizer.replacer.draws_from_identity:
            return np.zeros((len(tracks), self.anonymizer.recognizer.dim))
        sums = np.zeros((len(tracks), self.anonymizer.recognizer.dim))
        for i, rgb, ks in frames_of_tracks(clip, name, [best_frames(t) for t in tracks]):
            for k in ks:
                marks = tracks[k].landmarks[i - tracks[k].start]
                emb = self.anonymizer.recognizer.embed_faces(rgb, marks[None])[0]
                sums[k] += emb / max(float(np.linalg.norm(emb)), 1e-12)
        return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

    def steady_poses(self, clip: video.Clip, name: str, tracks: list[Track]) -> None:
        """Step 4 of the module docstring: the method's pose transfer holds each track's
        original landmarks smoothed over the track's frames, by the aligned crops the method
        will be given (the same frame, landmarks and template give the same bytes)."""
        pose, replacer = self._pose(), self.anonymizer.replacer
        if pose is None or not isinstance(replacer, AlignedReplacer):
            return
        keys: list[list[bytes]] = [[] for _ in tracks]
        marks: list[list[np.ndarray]] = [[] for _ in tracks]
        for i, rgb, ks in frames_of_tracks(clip, name, [t.frames for t in tracks]):
            five = np.stack([tracks[k].landmarks[i - tracks[k].start] for k in ks])
            crops, _ = align(rgb, five, replacer.template, replacer.crop_size)
            for k, crop in zip(ks, crops):
                keys[k].append(content_key(crop))
                marks[k].append(pose.landmarks(crop))
        for k in range(len(tracks)):
            pose.hold(keys[k], smooth_series(np.stack(marks[k])))

    def _pose(self) -> LandmarkWarp | None:
        """The method's pose transfer, if it has one (``AlignedReplacer.pose``)."""
        replacer = self.anonymizer.replacer
        return replacer.pose if isinstance(replacer, AlignedReplacer) else None

    def first_attempts(self, clip: video.Clip, name: str, tracks: list[Track], codes: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(tracks,) the attempt each track's faces start from (step 3 of the module
        docstring), and (tracks,) whether it is the draw its person got earlier in the run.
        Zeros without a pass for a method that draws nothing from identities (its attempts
        are all alike) or whose retries draw no other face."""
        replacer = self.anonymizer.replacer
        kept = np.zeros(len(tracks), bool)
        if not (replacer.draws_from_identity and replacer.retry_draws_another_face):
            return np.zeros(len(tracks), int), kept
        worst, shaking = self.try_draws(clip, name, tracks, codes)
        attempts = choose_draws(worst, shaking)
        for k, code in enumerate(codes):
            earlier = self.people.find(code, self.anonymizer.recognizer.match_threshold)
            if earlier is None:
                self.people.add(code, int(attempts[k]))
            elif keeps_earlier_draw(worst[k], shaking[k], int(attempts[k]), earlier):
                attempts[k], kept[k] = earlier, True
        return attempts, kept

    def try_draws(self, clip: video.Clip, name: str, tracks: list[Track], codes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Each track's ``TRACK_DRAWS`` tried on its sampled frames and steady runs, in one more
        pass: (tracks, draws) the post-check's shortfall on the track's worst tried frame, and
        how much the detector's landmarks on the pasted face shake over the runs
        (``tracking.acceleration``, mean; inf where it found the face in no three frames in a
        row)."""
        runs = [steady_runs(t) for t in tracks]
        watched = [set(np.concatenate(r).tolist()) for r in runs]
        tried = [tried_frames(t) for t in tracks]
        worst = np.full((len(tracks), TRACK_DRAWS), -np.inf)
        found: dict[tuple[int, int], list[np.ndarray | None]] = {}
        for i, rgb, ks in frames_of_tracks(clip, name, tried):
            faces = [track_face(tracks[k], i - tracks[k].start) for k in ks]
            short, drawn = self.anonymizer.try_new_faces({0: rgb}, {0: faces}, codes[ks],
                                                         range(TRACK_DRAWS))
            worst[ks] = np.maximum(worst[ks], short)
            for k, face in zip(ks, faces):
                if i in watched[k]:
                    found[k, i] = [self._landmarks_near(out[0], face.box) for out in drawn]
        shaking = np.full((len(tracks), TRACK_DRAWS), np.inf)
        for k, track in enumerate(tracks):
            for d in range(TRACK_DRAWS):
                accs = [float(acceleration(np.stack(three), _eyes(track, run[1]))[0])
                        for run in runs[k] for three in _triples([found[k, i][d] for i in run])]
                shaking[k, d] = np.mean(accs) if accs else np.inf
        return worst, shaking

    def _landmarks_near(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The five landmarks the detector finds on the face at ``box`` in ``rgb``, searched in
        the region around it (a box's size on each side) rather than the whole frame; None
        where it finds none."""
        x1, y1, x2, y2 = box
        left, top = max(int(2 * x1 - x2), 0), max(int(2 * y1 - y2), 0)
        faces = self.anonymizer.detector(rgb[top:max(int(2 * y2 - y1), top + 1),
                                             left:max(int(2 * x2 - x1), left + 1)])
        if not faces:
            return None
        centre = np.array([(x1 + x2) / 2 - left, (y1 + y2) / 2 - top])
        near = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2
                                                             - centre)))
        return near.landmarks5 + np.array([left, top])

    def _frame(self, rgb: np.ndarray, tracked: FrameFaces | None, report: VideoReport,
               position: tuple[int, int]) -> np.ndarray | None:
        """One frame anonymized: its tracked faces replaced, or the no-face policy."""
        self.progress("replacing", *position)
        if tracked is None:
            report.no_face_frames += 1
            return apply_no_face_policy(rgb, self.anonymizer.no_face)
        (out, faces), = self.anonymizer.replace_faces({0: rgb}, {0: tracked.faces},
                                                      tracked.codes, tracked.attempts).values()
        report.faces += len(tracked.faces)
        report.bridged_faces += tracked.bridged
        report.count([f["flag"] for f in faces["faces"] if "flag" in f])
        return out

    def result(self, entry: Entry) -> Result:
        """A clip of the dataset job anonymized into its result. A clip on disk is read from its
        file in each pass and must not change from when the job hashed it (``Entry.stamp``) to
        the end; only ``--reversible`` reads it whole, since its payload is the original file."""
        stamp = entry.stamp or (None if entry.path is None else file_stamp(entry.path))
        sealer = self.anonymizer.sealer
        original = entry.read_bytes() if sealer is not None or entry.path is None else None
        data, report = self.anonymize(entry.path if original is None else original,
                                      entry.relpath)
        if entry.path is not None and file_stamp(entry.path) != stamp:
            raise FaceanonError("the file changed while it was read", entry.relpath)
        extra = {"video": asdict(report)}
        seal = None if sealer is None or data is None else functools.partial(
            sealer.seal_clip, original=original, published=data, source=entry.relpath,
            label=entry.label)
        if report.tracks:
            return Result(OK, data=data, extra=extra, seal=seal)
        return Result(NO_FACE, data=data, extra=extra, seal=seal,
                      reason=f"no face found in any frame; policy {self.anonymizer.no_face}")


def choose_draws(worst: np.ndarray, shaking: np.ndarray) -> np.ndarray:
    """(tracks,) the draw each track starts from, given ``try_draws``' figures: of the draws
    that pass the post-check by ``SAFE_MARGIN`` on every tried frame, the one whose features the
    detector finds most steadily; where none does (or none was found in three frames in a
    row), the one furthest below the threshold. The first such on a tie."""
    safe = worst <= -SAFE_MARGIN
    steadiest = np.where(safe, shaking, np.inf).argmin(1)
    return np.where((safe & np.isfinite(shaking)).any(1), steadiest, worst.argmin(1))


def keeps_earlier_draw(worst: np.ndarray, shaking: np.ndarray, chosen: int, earlier: int
                       ) -> bool:
    """Whether a track keeps the draw ``earlier`` its person got in an earlier clip rather than
    ``chosen`` (by ``choose_draws`` on the track's own figures): where it stays ``SAFE_MARGIN``
    below the threshold on every tried frame and shakes at most ``KEPT_SHAKING`` times as much."""
    return bool(worst[earlier] <= -SAFE_MARGIN
                and shaking[earlier] <= KEPT_SHAKING * shaking[chosen])


def _triples(marks: list[np.ndarray | None]) -> Iterator[list[np.ndarray]]:
    """Each three consecutive entries of ``marks`` in which the face was found."""
    for j in range(len(marks) - 2):
        three = marks[j:j + 3]
        if all(m is not None for m in three):
            yield three  # type: ignore[misc]


def _eyes(track: Track, frame: int) -> float:
    """The track's eye distance at ``frame``, px."""
    marks = track.landmarks[frame - track.start]
    return float(np.linalg.norm(marks[1] - marks[0]))


def faces_by_frame(tracks: list[Track], codes: np.ndarray, attempts: np.ndarray
                   ) -> dict[int, FrameFaces]:
    """Each frame's tracked faces (bridged ones scored 0) with their tracks' codes and
    attempts."""
    found: dict[int, list[tuple[Face, int, bool]]] = {}
    for k, track in enumerate(tracks):
        for t, frame in enumerate(track.frames):
            found.setdefault(int(frame), []).append((track_face(track, t), k,
                                                     not track.detected[t]))
    return {i: FrameFaces([f for f, _, _ in got], codes[[k for _, k, _ in got]],
                          attempts[[k for _, k, _ in got]], sum(b for _, _, b in got))
            for i, got in found.items()}


def frames_of_tracks(clip: video.Clip, name: str, wanted: list[Sequence[int]]
                     ) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    """One more pass over the clip, as far as needed: each frame some track wants (``wanted``,
    its frame numbers per track), its pixels and the tracks that want it. A frame the tracking
    pass decoded but this one does not find means the file changed while it was read."""
    by_frame: dict[int, list[int]] = {}
    for k, frames in enumerate(wanted):
        for i in frames:
            by_frame.setdefault(int(i), []).append(k)
    if by_frame:
        for i, (_, rgb) in enumerate(video.read_frames(clip, name)):
            if i in by_frame:
                yield i, rgb, by_frame.pop(i)
            if not by_frame:
                return
        raise FaceanonError("fewer frames than before: the file changed while it was read",
                            name)


def track_face(track: Track, t: int) -> Face:
    """The face of ``track`` in its ``t``-th frame (a bridged one scored 0)."""
    return Face(track.boxes[t], float(track.scores[t]), track.landmarks[t])


def media_step(anonymizer: Anonymizer, progress: FrameProgress | None = None,
               people: Path | None = None) -> Step:
    """The dataset job's step for inputs that mix images and videos: images in batches as
    ever, each video whole (``progress`` follows its frames); a video that fails is one failed
    entry with its reason. ``people`` is where the run keeps the people its clips drew, sealed
    under its key (``faceanon.people``), so that a resumed run draws them alike."""
    videos = VideoAnonymizer(anonymizer, progress, People(anonymizer.key, people))

    def step(entries: list[Entry]) -> list[Result]:
        images = iter(anonymizer.step([e for e in entries if not video.is_video_name(e.relpath)]))
        return [_video_result(videos, e) if video.is_video_name(e.relpath) else next(images)
                for e in entries]
    return step


def _video_result(videos: VideoAnonymizer, entry: Entry) -> Result:
    try:
        return videos.result(entry)
    except FaceanonError as e:
        return Result(FAILED, reason=e.reason)
