"""What an anonymization method is to the pipeline: it gets a batch of detected faces and gives
back the images with every face replaced, and says what the post-check must find afterwards.

Detection, the post-check and the fail-safe stay in the pipeline (``faceanon.anonymize``), so
that no method can skip them; a method only replaces faces, and may offer other faces for the
ones that fail the check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.keys import Key

if TYPE_CHECKING:  # the CLI lists the methods without loading torch
    from faceanon.identity import Recognizer


@dataclass(frozen=True)
class FaceBatch:
    """Every face of a batch of images, in one order: the image it is in (``owners``, keys of
    ``images``), its 5 landmarks, its detector box, the identity code its new face is drawn
    from, its own identity embedding, and the attempt its new face is drawn at first."""

    images: dict[int, np.ndarray]
    owners: np.ndarray      # (N,)
    landmarks: np.ndarray   # (N, 5, 2)
    boxes: np.ndarray       # (N, 4) x1, y1, x2, y2
    identities: np.ndarray  # (N, D): the generator's input
    # (N, D): the post-check's reference, each face's own embedding. For an image it is the
    # generator's input too; a video's faces are drawn from one code per track instead.
    originals: np.ndarray
    # (N,) int: 0 for an image; a clip's track starts all its faces at the attempt chosen for
    # it (faceanon.anonymize_video), and a retry counts on from there.
    attempts: np.ndarray


@dataclass
class Replacement:
    """A batch's images with every face replaced, and the faces whose replacement misses the
    detected face (the pipeline pixelates those)."""

    images: dict[int, np.ndarray]
    missed: np.ndarray  # (N,) bool

    def retry(self, which: np.ndarray, attempt: int) -> dict[int, np.ndarray] | None:
        """The images with the faces ``which`` replaced by other ones (retry ``attempt`` 1,
        2, ..., counted on from each face's ``FaceBatch.attempts``), or None where the method
        has no other face to offer: here, since it would replace them the same way again."""
        return None


@dataclass(frozen=True)
class PostCheck:
    """What the recognizer must find when it compares a replaced face with its original.

    Most methods must make the face unrecognisable: one still matched is a privacy failure and
    ends pixelated by the fail-safe. An identity-preserving method (obfuscate) must keep the
    match instead; a face that loses it is still hidden from people, so it is kept as it is.
    """

    must_match: bool
    failure: str  # the manifest's flag for a face that fails the check
    gave_up: str  # and what became of it once the retries are spent

    def shortfall(self, similarity: np.ndarray, threshold: float) -> np.ndarray:
        """Per face: how far the recognizer's cosine to the original lies on the wrong side of
        ``threshold``: above 0 the check fails (at 0 too, for a check that must match, since a
        match is a cosine above the threshold); below 0, the margin it passes by."""
        return threshold - similarity if self.must_match else similarity - threshold

    def fails(self, similarity: np.ndarray, threshold: float) -> np.ndarray:
        """Per face: whether the check fails (the recognizer matches where a match is a cosine
        above ``threshold``)."""
        short = self.shortfall(similarity, threshold)
        return short >= 0 if self.must_match else short > 0

    @property
    def fail_safe(self) -> bool:
        """Whether a face that fails the check for good gets the fail-safe."""
        return not self.must_match


UNRECOGNISABLE = PostCheck(must_match=False, failure="matched original", gave_up="fail-safe")
STILL_MATCHED = PostCheck(must_match=True, failure="no longer matches original",
                          gave_up="kept obfuscated")


@dataclass(frozen=True)
class MethodSetup:
    """What a method may take to build itself: the run's key, the recognizer that makes the
    identity embeddings, the device and the method's own options."""

    method: str
    key: Key | None
    recognizer: Recognizer
    device: str
    strength: float | None = None

    def require_key(self) -> Key:
        """The key, for methods whose faces are drawn from it."""
        if self.key is None:
            raise FaceanonError(f"method {self.method} needs --key "
                                "(make one with 'faceanon keygen')")
        return self.key


class FaceReplacer(ABC):
    """An anonymization method, as the pipeline uses it."""

    post_check: ClassVar[PostCheck] = UNRECOGNISABLE
    # Whether new faces are drawn from ``FaceBatch.identities``: a clip's tracks need identity
    # codes (an extra pass over the clip) only for such methods.
    draws_from_identity: ClassVar[bool] = True
    # Whether a retry draws another face (kfaar, ivfg) rather than working on the same one
    # longer (obfuscate): only then would a retry in one frame of a clip show another person
    # there, so only then does a track try several draws before it starts.
    retry_draws_another_face: ClassVar[bool] = True

    @property
    def settings(self) -> dict[str, Any]:
        """Settings of the method that change its outputs, recorded in the run's settings (a
        resumed run must have the same)."""
        return {}

    @property
    def model_ids(self) -> dict[str, str]:
        """The shipped models it uses, by name: the first 16 hex digits of their SHA-256."""
        return {}

    @abstractmethod
    def replace(self, batch: FaceBatch) -> Replacement:
        """Every face of ``batch`` replaced."""
