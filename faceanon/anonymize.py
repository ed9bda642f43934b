"""The anonymize pipeline: detect every face, let the method replace it, check the result and
fall back to the fail-safe; the dataset job runs it over a folder or archive, keeping its layout.

The methods (``kfaar``, the default, ``ivfg``, ``blur``, ``pixelate``, ``obfuscate``) live in
``faceanon.methods``, one module each, and are looked up by name. This module knows none of
them: it asks each for new faces and reads from it which way its post-check goes.

Fail-closed: after pasting, each face is embedded again by the recognizer and compared with its
original; a face that still matches is replaced again with a retry code and, if it still
matches, replaced by the fail-safe (a heavy pixelation). Such faces are flagged in the manifest.
(``obfuscate`` inverts the check; see ``faceanon.methods.base.PostCheck``.) No code path writes
an original face: an image whose faces cannot all be processed fails as a whole.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from faceanon import datasets, records
from faceanon.arrays import ArraySource
from faceanon.composite import (DEFAULT_NO_FACE_POLICY, NO_FACE_POLICIES, NoFacePolicy,
                                apply_no_face_policy)
from faceanon.datasets import NO_FACE, OK, Entry, Job, Result
from faceanon.detect import Detector, Face
from faceanon.errors import FaceanonError
from faceanon.identity import Recognizer, cosine_similarity
from faceanon.images import encode
from faceanon.keys import Key
from faceanon.methods import all_methods, get_method
from faceanon.methods.base import FaceBatch, FaceReplacer, MethodSetup
from faceanon.obscure import obscure
from faceanon.pseudonyms import INFO as PSEUDONYM_INFO
from faceanon.pseudonyms import Pseudonyms
from faceanon.reversible import INFO as REVERSIBLE_INFO
from faceanon.reversible import Sealer, sealer_for

MIN_EYE_DISTANCE = 6.0  # px in the photo; smaller faces get the fail-safe directly
RETRIES = 2
FAIL_SAFE_CELLS = 6     # the fail-safe pixelates a face to this many blocks across
FACES_PER_PASS = 8      # faces replaced together; bounds a step's memory, however crowded


@dataclass(frozen=True)
class Anonymized:
    """One image anonymized: the image to publish (None: left out, ``--no-face skip``), the
    faces found in it and the report on them (``{"faces": [{"box", "score", "flag"?}]}``)."""

    image: np.ndarray | None
    faces: list[Face]
    report: dict[str, Any]


@dataclass
class Anonymizer:
    """Turns images into anonymized images; ``settings`` identify what it does (for resume)."""

    method: str              # the name ``replacer`` is registered under
    replacer: FaceReplacer
    detector: Detector
    recognizer: Recognizer   # the identity embeddings (the generator's E) and the post-check's R
    key: Key | None = None
    no_face: NoFacePolicy = DEFAULT_NO_FACE_POLICY
    sealer: Sealer | None = None  # --reversible: each output gets a restore payload

    @property
    def settings(self) -> dict[str, Any]:
        # "reversible" appears only when on, so outputs made before it existed still resume.
        return {"method": self.method, "no_face": self.no_face,
                **({"reversible": REVERSIBLE_INFO} if self.sealer else {}),
                **self.replacer.settings,
                "key_fingerprint": self.key.fingerprint if self.key else None,
                "detector": {"min_face_size": self.detector.min_face_size,
                             "thresholds": list(self.detector.thresholds),
                             "max_faces": self.detector.max_faces},
                "post_check": {"recognizer": self.recognizer.name,
                               "threshold": self.recognizer.match_threshold},
                "models": self.replacer.model_ids}

    def anonymize(self, images: Sequence[np.ndarray]) -> list[Anonymized]:
        """Every face of every image replaced (new faces made together, at most
        ``FACES_PER_PASS`` at a time); an image without a face goes by the no-face policy."""
        # One image per detector call: batched detection rounds differently with the batch's
        # make-up, and an image's output must not depend on its neighbours (determinism, resume).
        faces = [self.detector(image) for image in images]
        replaced: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        for group in passes([len(f) for f in faces], FACES_PER_PASS):
            replaced.update(self.replace_faces({i: images[i] for i in group},
                                               {i: faces[i] for i in group}))
        return [Anonymized(replaced[i][0], faces[i], replaced[i][1]) if faces[i] else
                Anonymized(apply_no_face_policy(image, self.no_face), [], {"faces": []})
                for i, image in enumerate(images)]

    def step(self, entries: list[Entry]) -> list[Result]:
        """The dataset job's step: a batch of entries anonymized into results."""
        loaded: dict[int, np.ndarray] = {}
        failed: dict[int, str] = {}
        for i, entry in enumerate(entries):
            try:
                loaded[i] = entry.load()
            except FaceanonError as e:
                failed[i] = e.reason
        done = dict(zip(loaded, self.anonymize(list(loaded.values()))))
        return [Result(datasets.FAILED, reason=failed[i]) if i in failed
                else self._result(entry, loaded[i], done[i]) for i, entry in enumerate(entries)]

    def _result(self, entry: Entry, image: np.ndarray, done: Anonymized) -> Result:
        data = None if done.image is None else encode(done.image, entry.relpath)
        boxes = np.stack([f.box for f in done.faces]) if done.faces else np.zeros((0, 4))
        seal = sealer_for(self.sealer, entry, image, done.image, data, boxes)
        if done.faces:
            return Result(OK, data=data, extra=done.report, seal=seal)
        return Result(NO_FACE, data=data, reason=f"no face found; policy {self.no_face}",
                      seal=seal)

    def replace_faces(self, images: dict[int, np.ndarray], faces: dict[int, list[Face]],
                      identities: np.ndarray | None = None, attempts: np.ndarray | None = None
                      ) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """Every face of every image replaced and checked; the new images and their reports.

        ``identities`` (one row per face, in ``faces`` order) are the codes the new faces are
        drawn from where they are not the faces' own embeddings (a video: one per track); the
        post-check compares with each face's own all the same. ``attempts`` (one per face,
        default 0) are the draws they start from (a video: the one chosen for each track)."""
        if not images:
            return {}
        batch = self._batch(images, faces, identities, attempts)
        small = too_small(batch)
        flags: list[str | None] = ["too small; fail-safe" if s else None for s in small]
        replaced = self.replacer.replace(batch)
        missed = replaced.missed & ~small
        for j in np.flatnonzero(missed):
            flags[j] = "virtual face misses the detected face; fail-safe"
        unusable = small | missed
        outputs = fail_safe(replaced.images, batch, unusable)
        check = self.replacer.post_check
        for attempt in range(1, RETRIES + 2):
            still = self.post_check_fails(outputs, batch) & ~unusable
            if not still.any():
                break
            again = replaced.retry(still, attempt) if attempt <= RETRIES else None
            if again is not None:
                # Every face is pasted again: those that had the fail-safe get it again.
                outputs = fail_safe(again, batch, unusable)
                for j in np.flatnonzero(still):  # the draw it has now (a track's own + the retry)
                    drawn = int(batch.attempts[j]) + attempt
                    flags[j] = f"{check.failure}; regenerated (attempt {drawn})"
                continue
            if check.fail_safe:
                outputs = fail_safe(outputs, batch, still)
            for j in np.flatnonzero(still):
                flags[j] = f"{check.failure}; {check.gave_up}"
            break
        return {i: (outputs[i], report(faces[i], [flags[j] for j in
                                                  np.flatnonzero(batch.owners == i)]))
                for i in images}

    def try_new_faces(self, images: dict[int, np.ndarray], faces: dict[int, list[Face]],
                      identities: np.ndarray, attempts: Sequence[int]
                      ) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
        """New faces drawn from ``identities`` at each of ``attempts``, with no retry: what a
        clip's track is judged by before its attempt is chosen. Returns the post-check's
        shortfall (``PostCheck.shortfall``) per face and attempt (faces, attempts), and per
        attempt the images with every face drawn at it. The originals are embedded and the
        faces aligned once: each further draw is the replacement's own retry of every face.
        Faces that get the fail-safe whatever the draw (too small, or the new face misses the
        detected one) are -inf: they say nothing of the draw."""
        batch = self._batch(images, faces, identities)
        replaced = self.replacer.replace(batch)
        unusable = too_small(batch) | replaced.missed
        every = np.ones(len(identities), bool)
        shortfalls, drawn = [], []
        for attempt in attempts:
            outputs = (replaced.retry(every, attempt) if attempt else None) or replaced.images
            shortfall = self.replacer.post_check.shortfall(
                self.similarity(outputs, batch), self.recognizer.match_threshold)
            shortfalls.append(np.where(unusable, -np.inf, shortfall))
            drawn.append(outputs)
        return np.stack(shortfalls, axis=1), drawn

    def _batch(self, images: dict[int, np.ndarray], faces: dict[int, list[Face]],
               codes: np.ndarray | None = None, attempts: np.ndarray | None = None
               ) -> FaceBatch:
        """The faces of ``images`` in one order, with the identity embeddings of the originals:
        the generator's input (E) and the post-check's reference (R), one network in KFAAR.
        One face per call, so that a face's embedding (and so its virtual face) does not depend
        on the other faces around it."""
        owners = np.array([i for i in images for _ in faces[i]])
        landmarks = np.concatenate([np.stack([f.landmarks5 for f in faces[i]]) for i in images])
        boxes = np.concatenate([np.stack([f.box for f in faces[i]]) for i in images])
        identities = np.concatenate([self.recognizer.embed_faces(images[i], lm[None])
                                     for i, lm in zip(owners, landmarks)])
        return FaceBatch(images, owners, landmarks, boxes,
                         identities if codes is None else codes, identities,
                         np.zeros(len(owners), int) if attempts is None
                         else np.asarray(attempts, int))

    def similarity(self, outputs: dict[int, np.ndarray], batch: FaceBatch) -> np.ndarray:
        """Per face: the recognizer's cosine between the output there and the original."""
        after = np.concatenate([self.recognizer.embed_faces(outputs[i],
                                                            batch.landmarks[batch.owners == i])
                                for i in outputs])
        return cosine_similarity(after, batch.originals)

    def post_check_fails(self, outputs: dict[int, np.ndarray], batch: FaceBatch) -> np.ndarray:
        """Per face: whether the recognizer's verdict on the output is not what the method's
        post-check demands."""
        return self.replacer.post_check.fails(self.similarity(outputs, batch),
                                              self.recognizer.match_threshold)


def too_small(batch: FaceBatch) -> np.ndarray:
    """Per face: eyes closer than ``MIN_EYE_DISTANCE`` px, too small to replace or to check."""
    return np.linalg.norm(batch.landmarks[:, 1] - batch.landmarks[:, 0], axis=1) \
        < MIN_EYE_DISTANCE


def passes(counts: Sequence[int], limit: int) -> list[list[int]]:
    """The images with faces (indices into ``counts``, each image's number of faces) in
    consecutive groups of at most ``limit`` faces; an image with more is a group of its own.
    A batch of crowded photos would otherwise hold all its faces' crops, activations and
    full-size pastes at once, and the heap keeps that high-water mark for the rest of the run."""
    groups: list[list[int]] = []
    total = limit
    for i, n in enumerate(counts):
        if not n:
            continue
        if total + n > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def report(faces: list[Face], flags: list[str | None]) -> dict[str, Any]:
    """The manifest's entry on an image's faces: each one's box and score, and its flag where
    it was replaced again or pixelated."""
    return {"faces": [{"box": [round(float(v), 1) for v in f.box],
                       "score": round(float(f.score), 4), **({"flag": flag} if flag else {})}
                      for f, flag in zip(faces, flags)]}


def fail_safe(images: dict[int, np.ndarray], batch: FaceBatch, which: np.ndarray
              ) -> dict[int, np.ndarray]:
    """``images`` with the faces ``which`` heavily pixelated on their detector boxes."""
    return {i: obscure(image, batch.boxes[(batch.owners == i) & which], FAIL_SAFE_CELLS)
            for i, image in images.items()}


def build_anonymizer(method: str, key: Key | str | Path | None,
                     no_face: str = DEFAULT_NO_FACE_POLICY, min_face_size: float = 20.0,
                     device: str = "cpu", thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                     reversible: bool = False, strength: float | None = None) -> Anonymizer:
    """An Anonymizer with the shipped models, checked before any image is touched. ``key`` is a
    key or a key file; ``reversible`` adds an encrypted restore payload to every output
    (faceanon.reversible); ``strength`` is obfuscate's (None: its default)."""
    from faceanon import keys
    from faceanon.models import create_model

    spec = get_method(method)
    if no_face not in NO_FACE_POLICIES:
        raise FaceanonError(f"unknown --no-face policy {no_face!r}; choose one of "
                            f"{', '.join(NO_FACE_POLICIES)}")
    if strength is not None and "strength" not in spec.options:
        raise FaceanonError("--strength is a setting of --method " + " / ".join(
            m.name for m in all_methods() if "strength" in m.options))
    if reversible and key is None:
        raise FaceanonError("--reversible needs --key: the restore payloads are encrypted with it")
    if isinstance(key, (str, Path)):
        key = keys.load(key)
    recognizer = create_model("recognizer", "dlib", device)
    replacer = spec.build(MethodSetup(method, key, recognizer, device, strength))
    return Anonymizer(method, replacer, Detector(min_face_size, thresholds, device=device),
                      recognizer, key, no_face,  # type: ignore[arg-type]
                      Sealer(key) if reversible else None)  # type: ignore[arg-type]


def anonymize_image(image: np.ndarray, key: Key | None, method: str = "kfaar", *,
                    no_face: str = DEFAULT_NO_FACE_POLICY, strength: float | None = None,
                    min_face_size: float = 20.0,
                    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                    device: str = "cpu") -> tuple[np.ndarray | None, dict[str, Any]]:
    """One (H, W, 3) uint8 RGB image anonymized as ``faceanon anonymize`` would: the new image
    (None where no face was found and ``no_face`` is ``"skip"``) and the report on its faces,
    ``{"faces": [{"box", "score", "flag"?}]}``. The models load on the first call with a set of
    arguments and are kept for the next ones."""
    done = _anonymizer(method, key, no_face, strength, min_face_size, thresholds,
                       device).anonymize([image])[0]
    return done.image, done.report


@functools.lru_cache(maxsize=4)
def _anonymizer(method: str, key: Key | None, no_face: str, strength: float | None,
                min_face_size: float, thresholds: tuple[float, float, float],
                device: str) -> Anonymizer:
    return build_anonymizer(method, key, no_face, min_face_size, device, thresholds,
                            strength=strength)


def run_anonymize(source: str | Path | datasets.Source, out: str | Path, anonymizer: Anonymizer,
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None,
                  keep_names: bool = False,
                  clip_progress: Callable[[str, int, int | None], None] | None = None
                  ) -> tuple[Job, dict[str, int]]:
    """Run ``anonymizer`` over a folder or archive into ``out`` (resumable, manifest, atomic);
    ``progress`` follows the inputs, ``clip_progress`` the frames of each clip
    (``faceanon.anonymize_video.FrameProgress``).

    ``source`` is a path or an input already opened with ``datasets.open_input`` (to check it
    before loading the models, or to choose an array archive's dataset). Folder and file names
    and archive labels are pseudonymized under the anonymizer's key (see
    ``faceanon.pseudonyms``) unless ``keep_names``; either choice is in the run record. An array
    archive keeps its rows in place and pseudonymizes its identifying datasets instead.
    """
    if isinstance(source, (str, Path)):
        source = datasets.open_input(source, videos=True)
    if keep_names:
        names, names_setting = None, "kept (--keep-names)"
    elif anonymizer.key is None:
        raise FaceanonError("names are pseudonymized with the key: give --key, or pass "
                            "--keep-names to publish the input's names as they are")
    else:
        names, names_setting = Pseudonyms(anonymizer.key), f"pseudonymized ({PSEUDONYM_INFO})"
    if isinstance(source, ArraySource):
        if anonymizer.sealer is not None:
            raise FaceanonError("--reversible does not support array archives yet", source.path)
        if names is not None:
            source.pseudonymize_labels(names)
        names = None  # rows are addressed by index: there is no path to rewrite
    job = Job(f"anonymize --method {anonymizer.method}", source, Path(out),
              {**anonymizer.settings, "names": names_setting}, names)
    from faceanon.anonymize_video import media_step  # it builds on this module

    step = media_step(anonymizer, clip_progress, records.private_dir(job.out) / records.PEOPLE)
    return job, job.run_batches(step, batch_size, progress)
