"""Video: a round trip keeps what a clip is (frames, size, rate, audio); the dataset job takes
clips beside images, tracks faces, bridges a detector miss, gives each track one identity, never
passes a face through, and gives bad files a one-line reason; a killed run restarts cleanly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from clips import face_frames, probe, write_clip, write_tone
from conftest import REPO
from faceanon import datasets, keys, records, video
from faceanon.anonymize import Anonymizer, build_anonymizer, run_anonymize
from faceanon.anonymize_video import (TRACK_DRAWS, VideoAnonymizer, choose_draws,
                                      keeps_earlier_draw)
from faceanon.cli import app
from faceanon.errors import FaceanonError
from faceanon.evaluation.video import ClipPair, evaluate_clips
from faceanon.people import People
from faceanon.methods.aligned import AlignedReplacer
from faceanon.methods.base import FaceReplacer
from faceanon.tracking import best_frames, smooth_series, tried_frames


runner = CliRunner()


class Recorder(AlignedReplacer):
    """A method that draws grey faces and remembers the identity code of every face it was
    asked for (a grey face matches nobody, so the post-check passes)."""

    template, crop_size = "faceanon", 128

    def __init__(self) -> None:
        self.codes: list[np.ndarray] = []

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        self.codes += list(identities)
        return np.full_like(crops, 128)


class Unchanged(Recorder):
    """A method that gives back the original face: the post-check must catch every one."""

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        return crops.copy()


class PassesFromAttempt(Recorder):
    """A method that gives back the original face at attempt 0 and draws grey faces from
    attempt 1 on."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[int] = []

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        self.attempts += [attempt] * len(crops)
        return crops.copy() if attempt == 0 else np.full_like(crops, 128)


@pytest.fixture(scope="module")
def pipeline() -> Anonymizer:
    return build_anonymizer("blur", None)


def using(pipeline: Anonymizer, replacer: FaceReplacer, **changes: object) -> Anonymizer:
    return dataclasses.replace(pipeline, method="stub", replacer=replacer, **changes)


def decoded(path: Path) -> list[np.ndarray]:
    return [rgb for _, rgb in video.read_frames(path.read_bytes(), path.name)]


def face_change(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute difference of two frames inside ``box``."""
    x1, y1, x2, y2 = np.asarray(box, int)
    return float(np.abs(a[y1:y2, x1:x2].astype(float) - b[y1:y2, x1:x2]).mean())


@pytest.mark.parametrize("suffix", video.VIDEO_SUFFIXES)
def test_round_trip_keeps_frames_size_rate_and_audio(tmp_path: Path, suffix: str) -> None:
    clip = write_clip(tmp_path / f"in{suffix}", face_frames(12, size=(160, 120), face=60))
    data, stats = video.rewrite(clip.read_bytes(), clip.name, lambda i, rgb: 255 - rgb)
    out = tmp_path / f"out{suffix}"
    out.write_bytes(data)
    assert probe(out) == probe(clip)
    assert (stats.frames_in, stats.frames_out, stats.audio) == (12, 12, "copied")
    # The edit is what was encoded (up to the codec's loss).
    first = decoded(out)[0].astype(float)
    assert np.abs(first - (255 - decoded(clip)[0])).mean() < 6
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        times = [[f.time for f in box.decode(box.streams.video[0])] for box in (a, b)]
    assert times[0] == times[1]


def test_audio_longer_than_the_video_is_not_truncation(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mkv", face_frames(8, size=(160, 120), face=60),
                      audio_seconds=2.0)
    data, stats = video.rewrite(clip.read_bytes(), clip.name, lambda i, rgb: rgb)
    assert len(decoded(clip)) == stats.frames_out == 8
    (tmp_path / "out.mkv").write_bytes(data)
    assert probe(tmp_path / "out.mkv") == probe(clip)


def test_a_left_out_frame_keeps_the_others_times(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mkv", face_frames(10, size=(160, 120), face=60))
    data, stats = video.rewrite(clip.read_bytes(), clip.name,
                                lambda i, rgb: None if i == 4 else rgb)
    out = tmp_path / "out.mkv"
    out.write_bytes(data)
    assert (stats.frames_in, stats.frames_out) == (10, 9)
    with av.open(str(out)) as box:
        times = [round(f.time, 3) for f in box.decode(box.streams.video[0])]
    assert times == [round(i / 25, 3) for i in range(10) if i != 4]


def bad_inputs(folder: Path) -> dict[str, str]:
    """Each kind of bad clip, and the reason it must fail with."""
    small = face_frames(40, size=(160, 120), face=60)
    data = write_clip(folder / "good.mp4", small, faststart=True).read_bytes()
    (folder / "cut.mkv").write_bytes(
        write_clip(folder / "x.mkv", small).read_bytes()[:9000])
    (folder / "x.mkv").unlink()
    (folder / "cut.mp4").write_bytes(data[:len(data) // 2])
    (folder / "noindex.mp4").write_bytes(  # the index last, as most cameras write it
        write_clip(folder / "x.mp4", small).read_bytes()[:len(data) // 2])
    (folder / "x.mp4").unlink()
    (folder / "empty.mp4").write_bytes(b"")
    with av.open(str(folder / "sound.mp4"), "w") as out:  # audio only
        write_tone(out, out.add_stream("aac", rate=48000), 0.5)
    (folder / "notes.avi").write_bytes(b"this is not a video\n" * 50)
    return {"cut.mkv": "truncated video", "cut.mp4": "truncated video",
            "noindex.mp4": "not a readable video (Invalid data found when processing input)",
            "empty.mp4": "empty file (0 bytes)", "sound.mp4": "no video stream (audio only)",
            "notes.avi": "not a readable video (Invalid data found when processing input)"}


def test_bad_clips_fail_with_a_one_line_reason_and_the_run_goes_on(
        pipeline: Anonymizer, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    reasons = bad_inputs(src)
    (src / "good.mp4").unlink()
    (src / "a.jpg").write_bytes((REPO / "examples" / "images" / "astronaut.jpg").read_bytes())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    _, counts = run_anonymize(src, tmp_path / "out", pipeline, keep_names=True)
    assert counts["ok"] == 1 and counts["failed"] == len(reasons)
    got = {r["path"]: r for r in records.read_manifest(tmp_path / "out")}
    for name, reason in reasons.items():
        assert got[name]["status"] == "failed"
        assert got[name]["reason"].startswith(reason), got[name]["reason"]
        assert "\n" not in got[name]["reason"]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.jpg"]
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}


def test_a_clip_is_read_from_its_file_not_held_whole(pipeline: Anonymizer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Images are read whole, a clip on disk is not: the step reads it from its file pass by
    pass, and its record's hash is still the file's."""
    src = tmp_path / "in"
    src.mkdir()
    clip = write_clip(src / "clip.mp4", face_frames(4), audio=False)
    (src / "a.jpg").write_bytes((REPO / "examples" / "images" / "astronaut.jpg").read_bytes())
    read: list[str] = []
    whole = datasets.Entry.read_bytes
    monkeypatch.setattr(datasets.Entry, "read_bytes",
                        lambda self: read.append(self.relpath) or whole(self))
    _, counts = run_anonymize(src, tmp_path / "out", pipeline, keep_names=True)
    assert counts["ok"] == 2 and "a.jpg" in read and "clip.mp4" not in read
    got = {r["path"]: r for r in records.read_manifest(tmp_path / "out")}
    assert got["clip.mp4"]["input_sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert got["clip.mp4"]["video"]["frames_out"] == 4


def test_a_clip_that_changes_while_it_is_read_fails(pipeline: Anonymizer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(4), audio=False)
    videos = VideoAnonymizer(pipeline)
    anonymize = videos.anonymize

    def touching(clip_in, name):  # type: ignore[no-untyped-def]
        out = anonymize(clip_in, name)
        with open(clip, "ab") as f:  # another program appends to the file meanwhile
            f.write(b"\0")
        return out

    monkeypatch.setattr(videos, "anonymize", touching)
    entry = datasets.Entry(clip.name, clip.read_bytes, path=clip)
    with pytest.raises(FaceanonError, match="the file changed while it was read"):
        videos.result(entry)
    # Changed between the job's hash (its stamp) and the step: the same.
    monkeypatch.undo()
    stamped = dataclasses.replace(entry, stamp=datasets.file_stamp(clip))
    videos.result(stamped)  # unchanged: fine
    clip.write_bytes(clip.read_bytes())  # same bytes, rewritten
    with pytest.raises(FaceanonError, match="the file changed while it was read"):
        videos.result(stamped)


@pytest.mark.slow
def test_a_clip_is_anonymized_with_its_audio_and_recorded(pipeline: Anonymizer,
                                                           tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(16))
    out = tmp_path / "anon.mp4"
    res = runner.invoke(app, ["anonymize", str(clip), "--out", str(out), "--method", "blur",
                              "--keep-names"])
    assert res.exit_code == 0, res.output
    assert probe(out) == probe(clip)
    (rec,) = records.read_manifest(out)
    assert rec["video"]["frames_in"] == rec["video"]["frames_out"] == 16
    assert rec["video"]["tracks"] >= 1 and rec["video"]["faces"] >= 16
    assert rec["video"]["audio"] == "copied"
    # Every frame's face is blurred.
    original, anonymized = decoded(clip), decoded(out)
    box = pipeline.detector(original[0])[0].box
    assert face_change(original[0], anonymized[0], box) > 8
    with pytest.raises(FaceanonError, match="output must be a .mp4 file"):
        run_anonymize(clip, tmp_path / "anon.mkv", pipeline, keep_names=True)
    res = runner.invoke(app, ["eval", str(out), "--no-fid", "--json"])
    assert res.exit_code == 0, res.output
    videos = json.loads(res.output.strip().splitlines()[-1])["videos"]
    assert videos["frames"] == 16 and videos["clips"]["anon.mp4"]["faces"] >= 16


@pytest.mark.parametrize("rotation,hflip,vflip", [(90, False, False), (180, False, False),
                                                   (0, True, False), (0, False, True),
                                                   (-90, True, False)])
def test_frames_are_read_as_a_player_shows_them(tmp_path: Path, rotation: int, hflip: bool,
                                                vflip: bool) -> None:
    """PyAV's ``set_display_rotation``: turn counter-clockwise by ``rotation``, then mirror.
    The stored frames are made so that a player shows ``shown``."""
    shown = face_frames(2)[0]
    stored = shown[:, ::-1] if hflip else shown[::-1] if vflip else shown
    stored = np.ascontiguousarray(np.rot90(stored, -rotation // 90))
    clip = tmp_path / "c.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuv420p"
        stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    (read,) = decoded(clip)
    assert read.shape == shown.shape and np.abs(read.astype(float) - shown).mean() < 4


def test_a_rotated_phone_clip_is_read_and_written_upright(pipeline: Anonymizer,
                                                          tmp_path: Path) -> None:
    """A clip stored sideways with a display rotation (as phones record portrait video) is
    anonymized the right way up and written upright, with no rotation left for a player."""
    shown = face_frames(8)
    stored = [np.ascontiguousarray(np.rot90(f, 1)) for f in shown]  # turned a quarter left
    clip = write_clip(tmp_path / "phone.mp4", stored, audio=False, rotation=-90)
    read = decoded(clip)
    assert read[0].shape == shown[0].shape
    assert np.abs(read[0].astype(float) - shown[0]).mean() < 4
    data, report = VideoAnonymizer(pipeline).anonymize(clip.read_bytes(), clip.name)
    assert report.no_face_frames == 0 and report.faces >= 8
    out = tmp_path / "anon.mp4"
    out.write_bytes(data)
    with av.open(str(out)) as container:
        first = next(container.decode(video=0))
        assert (first.width, first.height, first.rotation) == (320, 240, 0)
    box = pipeline.detector(shown[0])[0].box
    assert face_change(shown[0], decoded(out)[0], box) > 8


def test_audit_checks_published_clips(pipeline: Anonymizer, tmp_path: Path) -> None:
    """A clean anonymized clip gives no finding; tags, a clip copied through or re-encoded
    unchanged, and frames whose face the evaluator still matches each give one."""
    from faceanon.audit import audit

    src = tmp_path / "in"
    src.mkdir()
    write_clip(src / "clip.mp4", face_frames(8))
    out = tmp_path / "out"
    run_anonymize(src, out, dataclasses.replace(pipeline, key=keys.Key(bytes(range(32)), 0)))
    report = audit(out)
    assert report.findings == [] and report.checked["clips"] == 1
    (published,) = records.output_paths(out).values()
    write_clip(out / "tagged.mp4", face_frames(4, grow=0), audio=False,
               tags={"title": "holiday", "location": "+48.8577+002.2950/"})
    (out / "copy.mp4").write_bytes((src / "clip.mp4").read_bytes())
    data, _ = video.rewrite((src / "clip.mp4").read_bytes(), "clip.mp4", lambda i, rgb: rgb)
    (out / published).write_bytes(data)  # re-encoded but unchanged
    found = {(f.path, f.kind) for f in audit(out, src).findings}
    assert {("tagged.mp4", "gps"), ("tagged.mp4", "metadata"), ("copy.mp4", "copied image"),
            (published, "copied image"), (published, "face matches original")} <= found, found
    assert {kind for path, kind in found if path == published} == {
        "copied image", "face matches original"}


def test_progress_follows_the_frames_of_a_clip(pipeline: Anonymizer, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(6), audio=False)
    calls: list[tuple[str, int, int | None]] = []
    VideoAnonymizer(pipeline, lambda *a: calls.append(a)).anonymize(clip.read_bytes(), clip.name)
    assert calls == [("tracking", i, None) for i in range(1, 7)] + [
        ("replacing", i, 6) for i in range(1, 7)]


def test_a_reversible_clip_restores_byte_identical(pipeline: Anonymizer, tmp_path: Path) -> None:
    """--reversible on a folder with a clip and a photo: restore gives the clip back byte for
    byte and the photo pixel for pixel; another key restores nothing; a published clip changed
    afterwards is refused alone."""
    from faceanon.audit import audit
    from faceanon.reversible import Sealer, run_restore

    key, other = keys.Key(bytes(range(32)), 0), keys.Key(bytes(range(1, 33)), 0)
    src = tmp_path / "in"
    src.mkdir()
    clip = write_clip(src / "clip.mp4", face_frames(8))
    (src / "photo.png").write_bytes((REPO / "examples" / "images" / "cameraman.png").read_bytes())
    out = tmp_path / "out"
    _, counts = run_anonymize(src, out, dataclasses.replace(pipeline, key=key,
                                                              sealer=Sealer(key)))
    assert counts["ok"] == 2
    assert "reversible payload present: 2 of 2" in " ".join(audit(out).notices)
    _, counts = run_restore(out, tmp_path / "back", key)
    assert counts["ok"] == 2
    assert (tmp_path / "back" / "clip.mp4").read_bytes() == clip.read_bytes()
    _, counts = run_restore(out, tmp_path / "wrong", other)
    assert counts["ok"] == 0 and counts["failed"] == 2
    published = out / records.output_paths(out)["clip.mp4"]
    data = bytearray(published.read_bytes())
    data[len(data) // 2] ^= 1
    published.write_bytes(bytes(data))
    _, counts = run_restore(out, tmp_path / "changed", key)
    (rec,) = [r for r in records.read_manifest(tmp_path / "changed") if r["status"] == "failed"]
    assert counts["ok"] == 1 and "changed or re-encoded after anonymizing" in rec["reason"]


def test_a_single_reversible_clip_restores_from_the_command_line(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(6), audio=False)
    key = tmp_path / "k.bin"
    keys.save(keys.Key(bytes(range(32)), 0), key)
    res = runner.invoke(app, ["anonymize", str(clip), "--key", str(key), "--out",
                              str(tmp_path / "anon.mp4"), "--method", "blur", "--reversible"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "anon.mp4.faceanon-restore").is_file()
    res = runner.invoke(app, ["audit", str(tmp_path / "anon.mp4")])
    assert res.exit_code == 0 and "reversible payload present: 1 of 1" in res.output, res.output
    res = runner.invoke(app, ["restore", str(tmp_path / "anon.mp4"), "--key", str(key), "--out",
                              str(tmp_path / "back.mp4")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "back.mp4").read_bytes() == clip.read_bytes()


def test_a_detector_miss_is_bridged(pipeline: Anonymizer, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(16), audio=False)
    calls = {"n": 0}
    detect = pipeline.detector

    def missing(image: np.ndarray) -> list:
        calls["n"] += 1
        return [] if calls["n"] in (7, 8, 9) else detect(image)  # frames 6-8 missed

    videos = VideoAnonymizer(dataclasses.replace(pipeline, detector=missing))
    data, report = videos.anonymize(clip.read_bytes(), clip.name)
    assert report.bridged_faces == 3 and report.no_face_frames == 0
    (tmp_path / "anon.mp4").write_bytes(data)
    original, anonymized = decoded(clip), decoded(tmp_path / "anon.mp4")
    for i in (6, 7, 8):
        box = detect(original[i])[0].box
        assert face_change(original[i], anonymized[i], box) > 8, i
        # Only the face is blurred, not the whole frame (the no-face policy's way).
        assert face_change(original[i], anonymized[i], [0, 0, 20, 20]) < 4, i


def test_one_identity_code_per_track(pipeline: Anonymizer, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(12), audio=False)
    recorder = Recorder()
    videos = VideoAnonymizer(using(pipeline, recorder))
    data = clip.read_bytes()
    tracks, _ = videos.track(data, clip.name)
    main = max(tracks, key=len)
    _, report = videos.anonymize(data, clip.name)
    codes = np.stack(recorder.codes)
    # Each face once, and each track's tried frames once per draw when its attempt was
    # chosen (grey faces are alike, so the first draw).
    tried = TRACK_DRAWS * sum(len(tried_frames(t)) for t in tracks)
    assert report.faces >= 12 and len(codes) == report.faces + tried
    assert report.redrawn_tracks == 0
    # The main track's faces are all drawn from one code, the mean of its best frames.
    frames = decoded(clip)
    best = best_frames(main)
    own = np.stack([pipeline.recognizer.embed_faces(frames[i], main.landmarks[i][None])[0]
                    for i in best])
    mean = (own / np.linalg.norm(own, axis=1, keepdims=True)).mean(0)
    mean /= np.linalg.norm(mean)
    matching = np.isclose(codes @ mean, 1.0, atol=1e-5)
    assert matching.sum() == len(main) + TRACK_DRAWS * len(tried_frames(main))
    assert len(np.unique(codes[matching].round(6), axis=0)) == 1


def test_blur_reads_no_identity_codes(pipeline: Anonymizer, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """blur and pixelate draw nothing from an identity: a clip is not read again for codes."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(6), audio=False)
    embedded: list[int] = []
    embed = pipeline.recognizer.embed_faces
    monkeypatch.setattr(pipeline.recognizer, "embed_faces",
                        lambda rgb, marks: embedded.append(len(marks)) or embed(rgb, marks))
    _, report = VideoAnonymizer(pipeline).anonymize(clip.read_bytes(), clip.name)
    # The post-check alone: each face's original and its output, once per frame.
    assert report.faces == 6 and sum(embedded) == 2 * report.faces
    embedded.clear()
    drawn = VideoAnonymizer(using(pipeline, Recorder()))
    tracks, _ = drawn.track(clip.read_bytes(), clip.name)
    _, report = drawn.anonymize(clip.read_bytes(), clip.name)
    # A method that draws from identities: the best frames of each track besides, and its
    # tried frames when its attempt is chosen (the original once, each draw's output).
    assert sum(embedded) == 2 * report.faces + sum(
        len(best_frames(t)) + (1 + TRACK_DRAWS) * len(tried_frames(t)) for t in tracks)


def test_a_track_starts_from_a_draw_that_passes_on_its_sampled_frames(
        pipeline: Anonymizer, tmp_path: Path) -> None:
    """Had the first attempt been kept, every frame would have been drawn again on its own
    (flagged); every draw is tried on the track's tried frames first and the track starts at
    one that passes, so every frame gets the same virtual face and none is flagged."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    method = PassesFromAttempt()
    videos = VideoAnonymizer(using(pipeline, method))
    tracks, _ = videos.track(clip.read_bytes(), clip.name)
    tried = sum(len(tried_frames(t)) for t in tracks) * TRACK_DRAWS
    data, report = videos.anonymize(clip.read_bytes(), clip.name)
    assert report.redrawn_tracks == report.tracks == len(tracks) >= 1
    assert report.flagged_frames == 0 and report.faces >= 8
    assert sorted(method.attempts[:tried]) == sorted(list(range(TRACK_DRAWS)) * (
        tried // TRACK_DRAWS))
    # Draws 1 to 5 are alike (grey), so the first of them.
    assert method.attempts[tried:] == [1] * report.faces
    (tmp_path / "anon.mp4").write_bytes(data)
    for a, b in zip(decoded(clip), decoded(tmp_path / "anon.mp4")):
        for face in pipeline.detector(a):
            assert face_change(a, b, face.box) > 8


@pytest.mark.parametrize("worst, shaking, chosen", [
    # Of the draws safely below the threshold, the steadiest, not the furthest below.
    ([-0.08, -0.5, -0.2], [0.01, 0.03, 0.02], 0),
    # The steadiest draw passes only narrowly: the steadiest of the safe ones.
    ([-0.5, -0.01, -0.2], [0.03, 0.001, 0.02], 2),
    # None is safe: the one that misses least (or passes furthest).
    ([0.2, 0.05, -0.02], [0.01, 0.02, 0.03], 2),
    # Safe draws, but the face was never found three frames running: the furthest below.
    ([-0.08, -0.2, -0.1], [np.inf, np.inf, np.inf], 1),
])
def test_choose_draws(worst: list[float], shaking: list[float], chosen: int) -> None:
    assert list(choose_draws(np.array([worst]), np.array([shaking]))) == [chosen]


@pytest.mark.parametrize("first_frames, chosen", [
    # Draws alike in steadiness (here: the same frames): the first safely below the threshold.
    ([[-0.01, -0.08, -0.5, -0.3, -0.2, -0.4]], 1),
    # None passes: the one that misses least.
    ([[0.2, 0.05, 0.1, 0.3, 0.2, 0.4]], 1),
    # A draw is judged by its worst frame: draw 0 is far on one frame but close on the next.
    ([[-0.9, -0.3, -0.2, -0.1, -0.1, -0.1], [0.0, -0.3, -0.2, -0.1, -0.1, -0.1]], 1),
])
def test_a_track_draw_is_judged_on_its_worst_tried_frame(
        pipeline: Anonymizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        first_frames: list[list[float]], chosen: int) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    videos = VideoAnonymizer(using(pipeline, Recorder()))
    data = clip.read_bytes()
    tracks, _ = videos.track(data, clip.name)
    assert len(tracks) == 1 and len(tried_frames(tracks[0])) > len(first_frames)
    calls: list[list[int]] = []

    def try_new_faces(images, faces, identities, attempts):  # type: ignore[no-untyped-def]
        """``first_frames`` on the first tried frames, an easy pass on the rest; every draw
        shows the frame as it is."""
        frame = len(calls)
        calls.append(list(attempts))
        values = first_frames[frame] if frame < len(first_frames) else [-1.0] * TRACK_DRAWS
        return np.tile(values, (len(identities), 1)), [images] * len(attempts)

    monkeypatch.setattr(videos.anonymizer, "try_new_faces", try_new_faces)
    codes = videos.identity_codes(data, clip.name, tracks)
    assert list(videos.first_attempts(data, clip.name, tracks, codes)[0]) == [chosen]
    assert calls == [list(range(TRACK_DRAWS))] * len(tried_frames(tracks[0]))


def test_a_track_starts_from_the_steadier_of_two_safe_draws(
        pipeline: Anonymizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw 1 is further below the threshold, but its face shakes by 4 px from frame to frame
    where draw 0's moves as the clip's does: the track starts from draw 0."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    videos = VideoAnonymizer(using(pipeline, Recorder()))
    data = clip.read_bytes()
    tracks, _ = videos.track(data, clip.name)
    shifts = iter(range(100))

    def try_new_faces(images, faces, identities, attempts):  # type: ignore[no-untyped-def]
        shaken = {0: np.roll(images[0], 4 if next(shifts) % 2 else -4, axis=1)}
        drawn = [images, shaken] + [images] * (len(attempts) - 2)
        return np.tile([-0.08, -0.5] + [0.5] * (len(attempts) - 2), (len(identities), 1)), drawn

    monkeypatch.setattr(videos.anonymizer, "try_new_faces", try_new_faces)
    codes = videos.identity_codes(data, clip.name, tracks)
    assert list(videos.first_attempts(data, clip.name, tracks, codes)[0]) == [0]


@pytest.mark.parametrize("worst, shaking, kept", [
    # Safe, and shaking no more than half as much again as the chosen draw 0: kept.
    ([-0.2, -0.04], [0.02, 0.03], True),
    # Safe but shaking twice as much: not kept.
    ([-0.2, -0.04], [0.02, 0.04], False),
    # Steady but narrowly below the threshold: not kept.
    ([-0.2, -0.02], [0.02, 0.01], False),
])
def test_keeps_earlier_draw(worst: list[float], shaking: list[float], kept: bool) -> None:
    assert keeps_earlier_draw(np.array(worst), np.array(shaking), 0, 1) is kept


def test_a_person_keeps_their_draw_from_an_earlier_clip_of_the_run(
        pipeline: Anonymizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person seen earlier in the run starts from the draw they got then, where it is safe
    here too, so they are one virtual person in every clip; where it is not, from the clip's
    own choice. Someone else is drawn afresh. A resumed run reads the people back from the
    sealed record."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    key, sealed = keys.Key(bytes(range(32)), 0), tmp_path / "people.sealed"
    videos = VideoAnonymizer(using(pipeline, Recorder()), people=People(key, sealed))
    data = clip.read_bytes()
    tracks, _ = videos.track(data, clip.name)
    codes = videos.identity_codes(data, clip.name, tracks)
    assert len(tracks) == 1

    def first(safe: set[int], codes: np.ndarray = codes, run: VideoAnonymizer = videos
              ) -> tuple[list[int], list[bool]]:
        """The track's first attempt and whether it was kept, where the draws ``safe`` pass
        the post-check well and the others fail it; every draw shows the frame as it is, so
        all are equally steady."""
        def try_new_faces(images, faces, identities, attempts):  # type: ignore[no-untyped-def]
            shortfall = [-0.1 if d in safe else 0.5 for d in attempts]
            return np.tile(shortfall, (len(identities), 1)), [images] * len(attempts)

        monkeypatch.setattr(run.anonymizer, "try_new_faces", try_new_faces)
        attempts, kept = run.first_attempts(data, clip.name, tracks, codes)
        return list(attempts), list(kept)

    assert first({2, 4}) == ([2], [False])  # the first of the equally steady safe draws
    assert first({0, 2}) == ([2], [True])   # alone, this clip would start from draw 0
    assert first({0, 4}) == ([0], [False])  # draw 2 fails here
    assert first({0, 2}, -codes) == ([0], [False])  # another person
    resumed = VideoAnonymizer(using(pipeline, Recorder()), people=People(key, sealed))
    assert first({0, 2}, run=resumed) == ([2], [True])
    assert first({0, 2}, -codes, resumed) == ([0], [True])  # the other person, found too


def test_the_people_of_a_run_are_sealed_under_its_key(tmp_path: Path) -> None:
    """Identity codes are templates of real faces: never in the clear on disk, and a run
    resumed with another key cannot read them."""
    code = np.random.default_rng(0).normal(size=128)
    code /= np.linalg.norm(code)
    key, sealed = keys.Key(bytes(range(32)), 0), tmp_path / "people.sealed"
    People(key, sealed).add(code, 3)
    raw = sealed.read_bytes()
    assert code.tobytes()[:16] not in raw and code.astype(np.float32).tobytes()[:16] not in raw
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert People(key, sealed).find(code, 0.9) == 3
    assert People(key, sealed).find(-code, 0.9) is None
    with pytest.raises(FaceanonError, match="cannot be opened with this key"):
        People(keys.Key(bytes(32), 0), sealed)


def test_a_method_whose_retries_draw_no_other_face_starts_every_track_at_once(
        pipeline: Anonymizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """obfuscate's retries work on the same face longer, so a track tries no draws first."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    method = Recorder()
    method.retry_draws_another_face = False  # type: ignore[misc]
    videos = VideoAnonymizer(using(pipeline, method))
    data = clip.read_bytes()
    tracks, _ = videos.track(data, clip.name)
    monkeypatch.setattr(videos.anonymizer, "try_new_faces",
                        lambda *a: pytest.fail("no draw is tried"))
    codes = videos.identity_codes(data, clip.name, tracks)
    assert list(videos.first_attempts(data, clip.name, tracks, codes)[0]) == [0] * len(tracks)


def test_a_face_that_cannot_be_replaced_is_obscured(pipeline: Anonymizer,
                                                     tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", face_frames(8), audio=False)
    videos = VideoAnonymizer(using(pipeline, Unchanged()))
    data, report = videos.anonymize(clip.read_bytes(), clip.name)
    assert report.fail_safe_frames == 8
    (tmp_path / "anon.mp4").write_bytes(data)
    original, anonymized = decoded(clip), decoded(tmp_path / "anon.mp4")
    for a, b in zip(original, anonymized):
        for face in pipeline.detector(a):
            assert face_change(a, b, face.box) > 8


def test_frames_without_a_face_follow_the_no_face_policy(pipeline: Anonymizer,
                                                         tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.webm", face_frames(12, gap=(3, 9)))
    videos = VideoAnonymizer(dataclasses.replace(pipeline, no_face="skip"))
    data, report = videos.anonymize(clip.read_bytes(), clip.name)
    assert report.no_face_frames == 6 and report.frames_out == 6  # a gap too long to bridge
    videos = VideoAnonymizer(pipeline)  # blur: the whole frame
    data, report = videos.anonymize(clip.read_bytes(), clip.name)
    (tmp_path / "anon.webm").write_bytes(data)
    original, anonymized = decoded(clip), decoded(tmp_path / "anon.webm")
    detail = lambda rgb: np.abs(np.diff(rgb.astype(float), axis=1)).mean()  # noqa: E731
    assert detail(anonymized[6]) < 0.5 * detail(original[6])  # blurred as a whole
    assert detail(anonymized[2]) > 0.8 * detail(original[2])    # a face: only it is blurred


@pytest.mark.slow
def test_a_killed_run_restarts_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes((REPO / "examples" / "images" / "astronaut.jpg").read_bytes())
    write_clip(src / "b.mp4", face_frames(150))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "faceanon", "anonymize", str(src), "--out", str(out),
               "--method", "blur", "--keep-names", "--batch-size", "1"]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = records.private_dir(out) / records.MANIFEST
    deadline = time.time() + 60
    while time.time() < deadline and not (manifest.exists() and manifest.read_text()):
        time.sleep(0.05)
    time.sleep(0.5)  # well into the clip
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (out / "b.mp4").exists()
    (out / ".b.mp4.fa-torn0001.tmp").write_bytes(b"\x00" * 1000)  # as a kill mid-write leaves
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["a.jpg", "b.mp4"]
    assert probe(out / "b.mp4") == probe(src / "b.mp4")
    lines = (records.private_dir(out) / records.MANIFEST).read_text().splitlines()
    assert sorted(line.split('"path": "')[1].split('"')[0] for line in lines) == ["a.jpg", "b.mp4"]


def test_eval_finds_the_frames_left_visible(pipeline: Anonymizer, tmp_path: Path) -> None:
    frames = face_frames(10)
    clip = write_clip(tmp_path / "clip.mkv", frames, audio=False)
    hidden = []
    for i, rgb in enumerate(decoded(clip)):
        x1, y1, x2, y2 = pipeline.detector(rgb)[0].box.astype(int)
        if i != 3:
            rgb = rgb.copy()
            rgb[y1 + 5:y2, x1:x2] = 90  # all but frame 3 hidden
        hidden.append(rgb)
    anon = write_clip(tmp_path / "anon.mkv", hidden, audio=False)
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(anon.read_bytes()[:300])
    figures = evaluate_clips([ClipPair("clip.mkv", clip, clip, {}),
                              ClipPair("anon.mkv", clip, anon, {"video": {
                                  "frames_per_second": 2.5}}),
                              ClipPair("damaged.mkv", clip, damaged, {})],
                             pipeline.detector, pipeline.recognizer,
                             pipeline.recognizer.match_threshold)
    same, hid = figures["clips"]["clip.mkv"], figures["clips"]["anon.mkv"]
    assert "not a readable video" in figures["clips"]["damaged.mkv"]["error"]
    assert same["frames_left_visible"] == 10 and same["jitter_ratio"] == pytest.approx(1.0)
    assert same["jitter_median_ratio"] == pytest.approx(1.0)
    assert same["identity_consistency"] == 1.0
    assert hid["visible_frames"] == [3] and hid["frames_per_second"] == 2.5
    assert figures["frames_left_visible"] == 11


def test_eval_measures_synchronism_across_clips(pipeline: Anonymizer, tmp_path: Path) -> None:
    """Two clips of one person: kept as they are, the person is the same in both (1.0); with
    the face scrambled in one of them, no frame pair across the clips matches any more."""
    first = write_clip(tmp_path / "first.mkv", face_frames(6), audio=False)
    frames = face_frames(12, face=130, grow=0.1)
    second = write_clip(tmp_path / "second.mkv", frames, audio=False)
    rng = np.random.default_rng(0)
    scrambled = []
    for rgb in frames:
        x1, y1, x2, y2 = pipeline.detector(rgb)[0].box.astype(int)
        rgb = rgb.copy()
        patch = rgb[y1:y2, x1:x2].reshape(-1, 3)
        rgb[y1:y2, x1:x2] = patch[rng.permutation(len(patch))].reshape(y2 - y1, x2 - x1, 3)
        scrambled.append(rgb)
    hidden = write_clip(tmp_path / "hidden.mkv", scrambled, audio=False)

    def across(anon_second: Path) -> dict:
        return evaluate_clips([ClipPair("first.mkv", first, first, {}),
                               ClipPair("second.mkv", second, anon_second, {})],
                              pipeline.detector, pipeline.recognizer,
                              pipeline.recognizer.match_threshold)["across_clips"]

    kept = across(second)
    assert kept["same_person_track_pairs"] == 1 and kept["synchronism"] == 1.0
    assert kept["synchronism_frame_pairs"] == 6 * 12 and kept["other_person_track_pairs"] == 0
    assert across(hidden)["synchronism"] == 0.0


def test_eval_tells_a_jump_from_a_shiver(pipeline: Anonymizer, tmp_path: Path) -> None:
    """One frame whose face jumps by 8 px lifts the mean jitter ratio; the ratio of medians
    stays near 1, since the other frames move as the input does."""
    frames = face_frames(16)
    clip = write_clip(tmp_path / "clip.mkv", frames, audio=False)
    jumped = [np.roll(rgb, 8, axis=0) if i == 8 else rgb for i, rgb in enumerate(frames)]
    anon = write_clip(tmp_path / "anon.mkv", jumped, audio=False)
    got = evaluate_clips([ClipPair("anon.mkv", clip, anon, {})], pipeline.detector,
                         pipeline.recognizer, pipeline.recognizer.match_threshold
                         )["clips"]["anon.mkv"]
    assert got["jitter_ratio"] > 1.5
    assert got["jitter_median_ratio"] == pytest.approx(1.0, abs=0.3)


@pytest.mark.slow
def test_kfaar_clip_one_steady_virtual_person(pipeline: Anonymizer, tmp_path: Path) -> None:
    """The real method end to end: no frame left matching its original (the pipeline's own
    recognizer, which its post-check guarantees), and one virtual person through the track."""
    clip = write_clip(tmp_path / "clip.mp4", face_frames(12), audio=False)
    kfaar = build_anonymizer("kfaar", keys.Key(bytes(range(32)), 0))
    data, report = VideoAnonymizer(kfaar).anonymize(clip.read_bytes(), clip.name)
    assert report.frames_out == 12 and report.fail_safe_frames == 0
    anon = tmp_path / "anon.mp4"
    anon.write_bytes(data)
    figures = evaluate_clips([ClipPair("clip.mp4", clip, anon, {})], pipeline.detector,
                             pipeline.recognizer, pipeline.recognizer.match_threshold)
    got = figures["clips"]["clip.mp4"]
    assert got["frames_left_visible"] == 0
    assert got["identity_consistency"] >= 0.95


@pytest.mark.slow
def test_kfaar_tracks_hold_their_pose_landmarks_smoothed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """kfaar re-poses every frame's virtual face with the track's landmarks smoothed over time
    (held for the very crops it is given), not with those read anew in each frame; they are
    released with the clip."""
    from faceanon.memo import content_key
    from faceanon.pose_transfer import LandmarkWarp

    clip = write_clip(tmp_path / "clip.mp4", face_frames(12), audio=False)
    kfaar = build_anonymizer("kfaar", keys.Key(bytes(range(32)), 0))
    held: list[np.ndarray] = []
    read: list[np.ndarray] = []
    unheld: list[bytes] = []
    hold, landmarks, original = (LandmarkWarp.hold, LandmarkWarp.landmarks,
                                 LandmarkWarp.original_landmarks)
    monkeypatch.setattr(LandmarkWarp, "hold", lambda self, ks, marks: (
        held.append(np.array(marks)), hold(self, ks, marks))[1])
    monkeypatch.setattr(LandmarkWarp, "landmarks", lambda self, crop: (
        read.append(landmarks(self, crop)), read[-1])[1])
    monkeypatch.setattr(LandmarkWarp, "original_landmarks", lambda self, crop: (
        content_key(crop) in self._held or unheld.append(content_key(crop)),
        original(self, crop))[1])
    data, report = VideoAnonymizer(kfaar).anonymize(clip.read_bytes(), clip.name)
    assert report.frames_out == 12 and len(held) == 1 and held[0].shape == (12, 68, 2)
    raw = np.stack(read[:12])  # the steadying pass reads each frame's original first
    assert np.allclose(held[0], smooth_series(raw)) and not np.allclose(held[0], raw)
    assert unheld == [], "every original the warp was given had landmarks held for it"
    assert kfaar.replacer.pose._held == {}
