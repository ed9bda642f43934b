"""The pipeline's fail-closed core, driven by stub methods with the real detector and
recognizer: a face the post-check rejects is replaced again and then pixelated (an
identity-preserving method keeps its face instead), and a face too small, or missed by its new
face, is pixelated without a check. Each test fails if ``faceanon.anonymize`` loses its
post-check or its fail-safe."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import REPO
from faceanon.anonymize import Anonymizer, build_anonymizer
from faceanon.detect import Face
from faceanon.identity import cosine_similarity
from faceanon.images import load_image
from faceanon.methods.aligned import AlignedReplacer
from faceanon.methods.base import STILL_MATCHED, UNRECOGNISABLE, FaceReplacer

ASTRONAUT = REPO / "examples" / "images" / "astronaut.jpg"


class Unchanged(AlignedReplacer):
    """A generator that gives back the face it was given: the original face, pasted back."""

    template, crop_size = "faceanon", 128

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        self.attempts.append(attempt)
        return crops.copy()


class Checkerboard(Unchanged):
    """An identity-preserving method that never preserves the identity: every new face a
    checkerboard, which no recognizer matches to anyone."""

    post_check = STILL_MATCHED
    match_colour = False

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        super().new_faces(crops, identities, attempt)
        y, x = np.mgrid[:crops.shape[1], :crops.shape[2]]
        board = np.where((x // 4 + y // 4) % 2, 255, 0).astype(np.uint8)
        return np.broadcast_to(board[..., None], crops.shape).copy()


@pytest.fixture(scope="module")
def pipeline() -> Anonymizer:
    """The shipped detector and recognizer; each test puts its stub method in."""
    return build_anonymizer("blur", None)


@pytest.fixture(scope="module")
def astronaut(pipeline: Anonymizer) -> tuple[np.ndarray, Face]:
    image = load_image(ASTRONAUT)
    (face,) = pipeline.detector(image)
    return image, face


def using(pipeline: Anonymizer, replacer: FaceReplacer) -> Anonymizer:
    return dataclasses.replace(pipeline, method="stub", replacer=replacer)


def similarity(pipeline: Anonymizer, out: np.ndarray, image: np.ndarray, face: Face) -> float:
    lm = face.landmarks5[None]
    return float(cosine_similarity(pipeline.recognizer.embed_faces(out, lm),
                                   pipeline.recognizer.embed_faces(image, lm))[0])


def change(out: np.ndarray, image: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute change inside the middle half of ``box``."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
    inner = np.s_[round(y1 + dy):round(y2 - dy), round(x1 + dx):round(x2 - dx)]
    return float(np.abs(out[inner].astype(int) - image[inner]).mean())


def small_face() -> Face:
    """A face whose eyes are 5 px apart (a far profile) in a textured part of the photo."""
    cx, cy = 350.0, 365.0
    marks = np.array([[-2.5, -10], [2.5, -10], [0, 0], [-2, 12], [2, 12]]) + [cx, cy]
    return Face(np.array([cx - 30, cy - 35, cx + 30, cy + 35]), 0.99, marks)


def missed_face(real: Face) -> Face:
    """A face whose landmarks lie 300 px from its box, so its new face is pasted elsewhere."""
    return Face(np.array([60.0, 300.0, 120.0, 370.0]), 0.99, real.landmarks5 + [0.0, 300.0])


def test_a_face_still_matched_is_replaced_again_then_pixelated(pipeline, astronaut) -> None:
    image, face = astronaut
    stub = Unchanged()
    (done,) = using(pipeline, stub).anonymize([image])
    assert stub.attempts == [0, 1, 2]
    assert done.report["faces"][0]["flag"] == "matched original; fail-safe"
    assert similarity(pipeline, done.image, image, face) < pipeline.recognizer.match_threshold


def test_an_identity_preserving_method_keeps_its_face_when_the_match_is_lost(
        pipeline, astronaut) -> None:
    image, face = astronaut
    stub = Checkerboard()
    (done,) = using(pipeline, stub).anonymize([image])
    assert stub.attempts == [0, 1, 2]
    assert done.report["faces"][0]["flag"] == "no longer matches original; kept obfuscated"
    x1, y1, x2, y2 = face.box
    cx, cy = round((x1 + x2) / 2), round((y1 + y2) / 2)
    assert done.image[cy - 10:cy + 10, cx - 10:cx + 10].std() > 60, "the checkerboard, unpixelated"


def test_too_small_and_missed_faces_are_pixelated_unchecked(pipeline, astronaut) -> None:
    image, face = astronaut
    stub = Unchanged()
    faces = [small_face(), missed_face(face)]
    out, report = using(pipeline, stub).replace_faces({0: image}, {0: faces})[0]
    assert [f["flag"] for f in report["faces"]] == [
        "too small; fail-safe", "virtual face misses the detected face; fail-safe"]
    assert stub.attempts == [0], "neither face is checked, so neither is replaced again"
    for f in faces:
        assert change(out, image, f.box) > 5  # pasted back unpixelated: under 1


def test_a_retry_keeps_the_fail_safe_of_the_other_faces(pipeline, astronaut) -> None:
    """Faces of one batch are pasted again together when some are replaced again: those that
    had the fail-safe keep it, in their image and in its neighbours, and an image's output does
    not depend on the images batched with it."""
    image, face = astronaut
    anonymizer = using(pipeline, Unchanged())
    together = anonymizer.replace_faces({0: image, 1: image}, {0: [face, small_face()],
                                                               1: [small_face()]})
    alone = anonymizer.replace_faces({1: image}, {1: [small_face()]})
    assert [f.get("flag") for f in together[0][1]["faces"]] == [
        "matched original; fail-safe", "too small; fail-safe"]
    for out, _ in together.values():
        assert change(out, image, small_face().box) > 5
    assert np.array_equal(together[1][0], alone[1][0])


def test_a_cosine_at_the_threshold_is_no_match_for_either_check() -> None:
    """A match is a cosine above the threshold: at it, an anonymized face passes and an
    obfuscated one fails."""
    similarity, threshold = np.array([0.5, 0.6, 0.7]), 0.6
    assert UNRECOGNISABLE.fails(similarity, threshold).tolist() == [False, False, True]
    assert STILL_MATCHED.fails(similarity, threshold).tolist() == [True, True, False]
