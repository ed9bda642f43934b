"""Tracking on made-up detections: linking, bridging a detector miss, smoothing without lag, and
the frames a track's identity comes from and those its virtual face is tried on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from faceanon.tracking import (BEST_FRAMES, MAX_GAP, SPREAD_FRAMES, STEADY_LENGTH, STEADY_RUNS,
                               Detections, Track, acceleration, best_frames, link,
                               sample_frames, smooth_series, steady_runs, track_faces,
                               tried_frames)


def face(x: float, y: float = 100.0, side: float = 80.0, turn: float = 0.0) -> tuple:
    """A box and 5 landmarks of a face at (x, y), ``turn`` moving the nose towards an eye."""
    box = np.array([x, y, x + side, y + side])
    s = side / 80
    marks = np.array([[25, 35], [55, 35], [40 + 14 * turn, 50], [28, 65], [52, 65]]) * s
    return box, marks + [x, y]


def frame(*faces: tuple) -> Detections:
    if not faces:
        return Detections(np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0))
    boxes, marks = zip(*faces)
    return Detections(np.stack(boxes), np.stack(marks), np.full(len(faces), 0.99))


def test_two_faces_moving_fast_stay_two_tracks() -> None:
    # 12 px a frame, a fifth of the box: the velocity prediction keeps each on its track.
    frames = [frame(face(10 + 12 * i), face(400 - 12 * i, y=300)) for i in range(20)]
    tracks = link(frames)
    assert len(tracks) == 2
    assert [len(t) for t in tracks] == [20, 20]
    assert tracks[0].boxes[-1, 0] == 10 + 12 * 19 and tracks[1].boxes[-1, 1] == 300


def test_a_short_miss_is_bridged_by_interpolation() -> None:
    frames = [frame(face(10 + 5 * i)) for i in range(20)]
    for i in range(8, 8 + MAX_GAP):
        frames[i] = frame()
    (track,) = link(frames)
    assert len(track) == 20 and track.detected.sum() == 20 - MAX_GAP
    assert not track.detected[8:8 + MAX_GAP].any()
    # Bridged frames carry the face where it was: linear motion is recovered exactly.
    np.testing.assert_allclose(track.boxes[10], face(10 + 5 * 10)[0])
    np.testing.assert_allclose(track.landmarks[12], face(10 + 5 * 12)[1])


def test_a_long_miss_splits_the_track() -> None:
    frames = [frame(face(10 + 2 * i)) for i in range(20)]
    for i in range(5, 6 + MAX_GAP):
        frames[i] = frame()
    tracks = link(frames)
    assert [(t.start, len(t)) for t in tracks] == [(0, 5), (6 + MAX_GAP, 20 - 6 - MAX_GAP)]


def test_smoothing_removes_jitter_without_lag() -> None:
    t = np.arange(60, dtype=float)
    path = 0.15 * t ** 2          # an accelerating face, up to 9 px a frame
    noisy = path + np.random.default_rng(0).normal(0, 1.5, t.shape)
    smoothed = smooth_series(noisy)
    inner = slice(3, -3)
    assert np.abs(smoothed - path)[inner].mean() < 0.75 * np.abs(noisy - path)[inner].mean()
    # No lag: a quadratic is followed exactly, where an exponential average trails behind.
    np.testing.assert_allclose(smooth_series(path), path, atol=1e-6)
    ema = np.copy(path)
    for i in range(1, len(ema)):
        ema[i] = 0.5 * ema[i - 1] + 0.5 * path[i]
    assert (path - ema)[-1] > 10


def test_track_faces_smooths_landmarks() -> None:
    rng = np.random.default_rng(1)
    frames = []
    for i in range(30):
        box, marks = face(50 + 3 * i)
        frames.append(frame((box, marks + rng.normal(0, 2, marks.shape))))
    (track,) = track_faces(frames)
    truth = np.stack([face(50 + 3 * i)[1] for i in range(30)])
    raw = np.stack([f.landmarks[0] for f in frames])
    assert np.abs(track.landmarks - truth).mean() < 0.7 * np.abs(raw - truth).mean()


def test_best_frames_are_large_frontal_detected_ones() -> None:
    frames = [frame(face(100, side=60 + 2 * i, turn=1.0 if i % 2 else 0.0)) for i in range(20)]
    frames[18] = frame()  # bridged frames never count
    (track,) = link(frames)
    best = best_frames(track, 3)
    assert all(i % 2 == 0 and i != 18 for i in best)  # frontal (even) frames only
    assert list(best) == [12, 14, 16]


def gliding_track(n: int) -> Track:
    """One face detected in ``n`` frames, moving a pixel to the right in each."""
    frames = [Detections(np.array([[10.0 + t, 10, 60 + t, 70]]),
                         np.array([[[25.0 + t, 30], [45 + t, 30], [35 + t, 42], [27 + t, 55],
                                    [43 + t, 55]]]), np.array([0.99])) for t in range(n)]
    track, = link(frames)
    return track


def test_a_track_is_sampled_at_its_best_frames_and_evenly_over_it() -> None:
    track = gliding_track(40)
    sampled = sample_frames(track)
    assert set(best_frames(track)) <= set(sampled.tolist())
    assert sampled[0] == 0 and sampled[-1] == 39, "the ends are tried, where a head may turn"
    assert np.all(np.diff(sampled) > 0) and len(sampled) <= BEST_FRAMES + SPREAD_FRAMES
    short = replace(track, boxes=track.boxes[:3], landmarks=track.landmarks[:3],
                    scores=track.scores[:3], detected=track.detected[:3])
    assert sample_frames(short).tolist() == [0, 1, 2]


def test_draws_are_watched_in_runs_of_consecutive_frames_spread_over_a_track() -> None:
    track = gliding_track(40)
    runs = steady_runs(track)
    assert len(runs) == STEADY_RUNS and runs[0][0] == 0 and runs[-1][-1] == 39
    assert all(len(r) == STEADY_LENGTH and np.all(np.diff(r) == 1) for r in runs)
    tried = tried_frames(track)
    assert set(sample_frames(track)) | set(np.concatenate(runs)) == set(tried.tolist())
    short = replace(track, boxes=track.boxes[:4], landmarks=track.landmarks[:4],
                    scores=track.scores[:4], detected=track.detected[:4])
    assert [r.tolist() for r in steady_runs(short)] == [[0, 1, 2, 3]]


def test_acceleration_is_zero_for_even_motion_and_scales_with_the_face() -> None:
    marks = np.array([[[30.0, 40], [50, 40], [40, 50], [32, 60], [48, 60]]])
    moving = marks + np.arange(4)[:, None, None] * np.array([3.0, 1.0])
    assert np.allclose(acceleration(moving, 20.0), 0.0)
    shaken = moving.copy()
    shaken[1] += [2.0, 0.0]  # one frame 2 px off
    assert np.allclose(acceleration(shaken, 20.0), [0.2, 0.1])  # 2·2 px, then 2 px, over 20
    assert np.allclose(acceleration(shaken * 2, 40.0), acceleration(shaken, 20.0))
