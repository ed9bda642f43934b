"""The anonymize job: every face of every image replaced, the dataset's layout kept.

Methods: ``kfaar`` (virtual face + pose/expression transfer, the default), ``ivfg`` (virtual
face without pose transfer), the classical baselines ``blur`` and ``pixelate``, and
``obfuscate`` (identity-preserving: people no longer recognise the face, the recognizer still
matches it; see ``faceanon.obfuscate``, whose post-check is the inverse).

Fail-closed: after pasting, each face is embedded again by the recognizer and compared with its
original; a face that still matches is regenerated with a retry code and, if it still matches,
replaced by the fail-safe (a heavy pixelation). Such faces are flagged in the manifest. No code
path writes an original face: an image whose faces cannot all be processed fails as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, get_args

import cv2
import numpy as np

from faceanon import datasets
from faceanon.align import align, transform_points
from faceanon.arrays import ArraySource
from faceanon.composite import (DEFAULT_NO_FACE_POLICY, NO_FACE_POLICIES, NoFacePolicy,
                                apply_no_face_policy, ellipse_mask, paste_faces)
from faceanon.datasets import NO_FACE, OK, Entry, Job, Result
from faceanon.detect import Detector, Face
from faceanon.errors import FaceanonError
from faceanon.identity import MATCH_THRESHOLDS, Recognizer, cosine_similarity
from faceanon.images import encode
from faceanon.keys import Key
from faceanon.pseudonyms import INFO as PSEUDONYM_INFO
from faceanon.pseudonyms import Pseudonyms
from faceanon.reversible import INFO as REVERSIBLE_INFO
from faceanon.reversible import Sealer, sealer_for

if TYPE_CHECKING:
    from faceanon.obfuscate import Obfuscator
    from faceanon.pose_transfer import PoseTransfer
    from faceanon.virtual import VirtualFaces

Method = Literal["kfaar", "ivfg", "blur", "pixelate", "obfuscate"]
METHODS: tuple[str, ...] = get_args(Method)
CROP = 128           # every face is processed on the generator's template at this size
MIN_EYE_DISTANCE = 6.0  # px in the photo; smaller faces get the fail-safe directly
MIN_COVERAGE = 0.7      # share of the detector box's inner ellipse the pasted face must cover
RETRIES = 2


@dataclass
class Anonymizer:
    """Turns images into anonymized images; ``settings`` identify what it does (for resume)."""

    method: Method
    detector: Detector
    key: Key | None = None
    no_face: NoFacePolicy = DEFAULT_NO_FACE_POLICY
    recognizer: Recognizer | None = None   # E and the post-check's R; None skips the post-check
    match_threshold: float = 0.0           # cosine above which a face still "is" the original
    virtual: VirtualFaces | None = None    # kfaar and ivfg
    pose: PoseTransfer | None = None       # kfaar
    model_ids: dict[str, str] = field(default_factory=dict)
    sealer: Sealer | None = None           # --reversible: each output gets a restore payload
    obfuscator: Obfuscator | None = None   # obfuscate; it replaces the virtual faces

    @property
    def settings(self) -> dict[str, Any]:
        # "reversible" appears only when on, so outputs made before it existed still resume.
        return {"method": self.method, "no_face": self.no_face,
                **({"reversible": REVERSIBLE_INFO} if self.sealer else {}),
                **({"strength": self.obfuscator.strength} if self.obfuscator else {}),
                "key_fingerprint": self.key.fingerprint if self.key else None,
                "detector": {"min_face_size": self.detector.min_face_size,
                             "thresholds": list(self.detector.thresholds),
                             "max_faces": self.detector.max_faces},
                "post_check": {"recognizer": self.recognizer.name if self.recognizer else None,
                               "threshold": self.match_threshold},
                "models": self.model_ids}

    # ------------------------------------------------------------------------------ batch step

    def step(self, entries: list[Entry]) -> list[Result]:
        """Anonymize a batch of images (virtual faces generated together)."""
        images: list[np.ndarray | None] = []
        errors: dict[int, str] = {}
        for i, entry in enumerate(entries):
            try:
                images.append(entry.load())
            except FaceanonError as e:
                images.append(None)
                errors[i] = e.reason
        ok = [i for i, im in enumerate(images) if im is not None]
        # One image per detector call: batched detection rounds differently with the batch's
        # make-up, and an image's output must not depend on its neighbours (determinism, resume).
        faces: dict[int, list[Face]] = {i: self.detector(images[i]) for i in ok}  # type: ignore
        replaced = self.replace_faces({i: images[i] for i in ok if faces[i]},  # type: ignore[misc]
                                      {i: faces[i] for i in ok if faces[i]})
        results = []
        for i, entry in enumerate(entries):
            if i in errors:
                results.append(Result(datasets.FAILED, reason=errors[i]))
            elif not faces[i]:
                out = apply_no_face_policy(images[i], self.no_face)  # type: ignore[arg-type]
                data = None if out is None else encode(out, entry.relpath)
                results.append(Result(NO_FACE, data=data,
                                      reason=f"no face found; policy {self.no_face}",
                                      seal=sealer_for(self.sealer, entry, images[i], out, data,
                                                      np.zeros((0, 4)))))
            else:
                out, report = replaced[i]
                data = encode(out, entry.relpath)
                boxes = np.stack([f.box for f in faces[i]])
                results.append(Result(OK, data=data, extra=report, seal=sealer_for(
                    self.sealer, entry, images[i], out, data, boxes)))
        return results

    def replace_faces(self, images: dict[int, np.ndarray], faces: dict[int, list[Face]]
                      ) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """Every face of every image replaced; returns the new images and a manifest report."""
        if not images:
            return {}
        owners = np.array([i for i in images for _ in faces[i]])
        landmarks = np.concatenate([np.stack([f.landmarks5 for f in faces[i]]) for i in images])
        boxes = np.concatenate([np.stack([f.box for f in faces[i]]) for i in images])
        originals = self._embed(images, owners, landmarks)
        small = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1) < MIN_EYE_DISTANCE
        flags: list[str | None] = ["too small; fail-safe" if s else None for s in small]
        if self.method in ("blur", "pixelate"):
            outputs = {i: obscure(images[i], boxes[owners == i], self.method) for i in images}
        else:
            crops, mats = align_all(images, owners, landmarks)
            new = self._virtual(crops, originals, attempt=0)  # type: ignore[arg-type]
            outputs = self._paste(images, owners, new, mats)
            # Landmarks of profile or occluded faces can put the aligned crop beside the face:
            # where the pasted region misses much of the detector's box, pixelate the box.
            missed = np.array([mask_coverage(images[owners[j]].shape[:2], mats[j], boxes[j])
                               < MIN_COVERAGE for j in range(len(owners))]) & ~small
            for j in np.flatnonzero(missed):
                flags[j] = "virtual face misses the detected face; fail-safe"
            small = small | missed
        outputs = {i: obscure(outputs[i], boxes[(owners == i) & small], "failsafe") for i in images}
        for attempt in range(1, RETRIES + 2):
            still = self._post_check_fails(outputs, owners, landmarks, originals) & ~small
            if not still.any():
                break
            failure = "no longer matches original" if self.obfuscator else "matched original"
            if attempt <= RETRIES and self.method in ("kfaar", "ivfg", "obfuscate"):
                new[still] = self._virtual(crops[still], originals[still], attempt)  # type: ignore
                outputs = self._paste(images, owners, new, mats)
                for j in np.flatnonzero(still):
                    flags[j] = f"{failure}; regenerated (attempt {attempt})"
                continue
            if self.obfuscator is None:  # an obfuscated face protects people all the same
                outputs = {i: obscure(outputs[i], boxes[(owners == i) & still], "failsafe")
                           for i in images}
            for j in np.flatnonzero(still):
                flags[j] = f"{failure}; {'kept obfuscated' if self.obfuscator else 'fail-safe'}"
            break
        result = {}
        for i in images:
            report = {"faces": [{"box": [round(float(v), 1) for v in boxes[j]],
                                 "score": round(float(f.score), 4),
                                 **({"flag": flags[j]} if flags[j] else {})}
                                for f, j in zip(faces[i], np.flatnonzero(owners == i))]}
            result[i] = (outputs[i], report)
        return result

    # ---------------------------------------------------------------------------------- parts

    def _virtual(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        """Virtual faces for aligned crops; kfaar also gives them the originals' pose.
        (obfuscate: the obfuscated crops instead.)"""
        if self.obfuscator is not None:
            return self.obfuscator(crops, identities, attempt)
        assert self.key is not None
        assert self.virtual is not None
        virtual = self.virtual.generate(identities, self.key, CROP, attempt)
        if self.method == "kfaar":
            assert self.pose is not None
            shift = self.pose.latent_shift(virtual, crops)
            if shift is not None:
                virtual = self.virtual.generate(identities, self.key, CROP, attempt, shift)
            virtual = np.stack([self.pose(v, o) for v, o in zip(virtual, crops)])
        return virtual

    def _embed(self, images: dict[int, np.ndarray], owners: np.ndarray, landmarks: np.ndarray
               ) -> np.ndarray | None:
        """Identity embeddings of the original faces: the generator's input (E) and the
        post-check's reference (R), one network in KFAAR. One face per call, so that a face's
        embedding (and so its virtual face) does not depend on the other faces around it."""
        if self.recognizer is None:
            return None
        return np.concatenate([self.recognizer.embed_faces(images[i], lm[None])
                               for i, lm in zip(owners, landmarks)])

    def _paste(self, images: dict[int, np.ndarray], owners: np.ndarray, new: np.ndarray,
               mats: np.ndarray) -> dict[int, np.ndarray]:
        # An obfuscated face keeps the original's colours already; matching would change it.
        return {i: paste_faces(images[i], new[owners == i], mats[owners == i],
                               match_colour=self.obfuscator is None) for i in images}

    def _post_check_fails(self, outputs: dict[int, np.ndarray], owners: np.ndarray,
                          landmarks: np.ndarray, originals: np.ndarray | None) -> np.ndarray:
        if self.recognizer is None or originals is None:
            return np.zeros(len(owners), bool)
        after = np.concatenate([self.recognizer.embed_faces(outputs[i], landmarks[owners == i])
                                for i in outputs])
        matches = cosine_similarity(after, originals) > self.match_threshold
        return ~matches if self.obfuscator is not None else matches  # obfuscate: must match


def mask_coverage(shape: tuple[int, int], matrix: np.ndarray, box: np.ndarray) -> float:
    """Share of the ellipse inscribed in the detector's ``box`` (shrunk to 60 %: the eyes, nose and mouth) that the paste
    mask of a crop aligned by ``matrix`` covers at more than half strength."""
    x1, y1, x2, y2 = box
    cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, 0.3 * (x2 - x1), 0.3 * (y2 - y1)
    h, w = shape
    xs, ys = np.meshgrid(np.arange(max(int(cx - ax), 0), min(int(cx + ax) + 1, w)),
                         np.arange(max(int(cy - ay), 0), min(int(cy + ay) + 1, h)))
    inside = ((xs - cx) / max(ax, 1e-6)) ** 2 + ((ys - cy) / max(ay, 1e-6)) ** 2 <= 1
    if not inside.any():
        return 1.0
    pts = np.stack([xs[inside], ys[inside]], 1).astype(np.float64)
    crop_pts = transform_points(matrix, pts)
    mask = ellipse_mask("faceanon", CROP)
    u = np.clip(np.round(crop_pts).astype(int), 0, CROP - 1)
    within = (crop_pts >= 0).all(1) & (crop_pts <= CROP - 1).all(1)
    return float(((mask[u[:, 1], u[:, 0]] > 0.5) & within).mean())


def align_all(images: dict[int, np.ndarray], owners: np.ndarray, landmarks: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops and matrices of all faces, in ``owners`` order."""
    crops, mats = zip(*(align(images[i], landmarks[owners == i], "faceanon", CROP)
                        for i in images))
    return np.concatenate(crops), np.concatenate(mats)


_OBSCURE = {"blur": None, "pixelate": 10, "failsafe": 6}  # blocks across the face (None: blur)


def obscure(image: np.ndarray, boxes: np.ndarray, mode: str) -> np.ndarray:
    """Blur or pixelate each face box (enlarged to take in forehead and chin) under a feathered
    ellipse: the classical anonymizers, and the fail-safe when a virtual face cannot be used.

    Works on the detector's boxes, not on the alignment, so profile faces whose landmarks are
    unreliable are covered all the same.
    """
    out = image.copy()
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.3, (y2 - y1) * 1.4
        xa, ya = max(int(cx - bw / 2), 0), max(int(cy - bh / 2), 0)
        xb, yb = min(int(np.ceil(cx + bw / 2)), w), min(int(np.ceil(cy + bh / 2)), h)
        if xb - xa < 2 or yb - ya < 2:
            continue
        region = out[ya:yb, xa:xb]
        cells = _OBSCURE[mode]
        if cells is None:
            done = cv2.GaussianBlur(region, (0, 0), max(bw, bh) * 0.08)
        else:
            small = cv2.resize(region, (cells, max(1, round(cells * bh / bw))),
                               interpolation=cv2.INTER_AREA)
            done = cv2.resize(small, (xb - xa, yb - ya), interpolation=cv2.INTER_NEAREST)
        mask = np.zeros(region.shape[:2], np.float32)
        cv2.ellipse(mask, (round(cx - xa), round(cy - ya)), (round(bw * 0.45), round(bh * 0.45)),
                    0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(bw, bh) * 0.04)[..., None]
        out[ya:yb, xa:xb] = np.clip(region + mask * (done.astype(np.float32) - region) + 0.5,
                                    0, 255).astype(np.uint8)
    return out


def build_anonymizer(method: str, key_path: str | Path | None, no_face: str = DEFAULT_NO_FACE_POLICY,
                     min_face_size: float = 20.0, device: str = "cpu",
                     thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                     reversible: bool = False, strength: float | None = None) -> Anonymizer:
    """An Anonymizer with the shipped models, checked before any image is touched;
    ``reversible`` adds an encrypted restore payload to every output (faceanon.reversible);
    ``strength`` is obfuscate's (None: its default)."""
    from faceanon import keys, weights
    from faceanon.identity import load_recognizer

    if method not in METHODS:
        raise FaceanonError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if no_face not in NO_FACE_POLICIES:
        raise FaceanonError(f"unknown --no-face policy {no_face!r}; choose one of "
                            f"{', '.join(NO_FACE_POLICIES)}")
    if method in ("kfaar", "ivfg", "obfuscate") and key_path is None:
        raise FaceanonError(f"method {method} needs --key (make one with 'faceanon keygen')")
    if reversible and key_path is None:
        raise FaceanonError("--reversible needs --key: the restore payloads are encrypted with it")
    key = keys.load(key_path) if key_path is not None else None
    recognizer = load_recognizer("dlib", device)
    anonymizer = Anonymizer(method, Detector(min_face_size, thresholds, device=device), key,  # type: ignore[arg-type]
                            no_face, recognizer, MATCH_THRESHOLDS["dlib"])  # type: ignore[arg-type]
    if reversible:
        anonymizer.sealer = Sealer(key)  # type: ignore[arg-type]
    if method == "obfuscate":
        from faceanon.obfuscate import DEFAULT_STRENGTH, Obfuscator

        anonymizer.obfuscator = Obfuscator(recognizer, key,  # type: ignore[arg-type]
                                           DEFAULT_STRENGTH if strength is None else strength)
    elif strength is not None:
        raise FaceanonError("--strength is a setting of --method obfuscate")
    if method in ("kfaar", "ivfg"):
        from faceanon.virtual import load_virtual_faces

        anonymizer.virtual = load_virtual_faces(device)
        names = [anonymizer.virtual.model_id, anonymizer.virtual.generator_name]
        if method == "kfaar":
            from faceanon.landmarks import Landmarks68
            from faceanon.pose_transfer import LandmarkWarp, LatentPose, PoseBasis

            basis_entry = weights.default_entry("pose-basis")
            names.append(basis_entry["name"])
            latent_entry = next((m for m in weights.entries() if m["kind"] == "latent-pose"
                                 and m.get("generator") == anonymizer.virtual.generator_name), None)
            latent = None
            if latent_entry is not None:
                names.append(latent_entry["name"])
                latent = LatentPose.from_state_dict(weights.load_weights(latent_entry["name"]))
            anonymizer.pose = LandmarkWarp(PoseBasis.from_state_dict(
                weights.load_weights(basis_entry["name"])), Landmarks68(), latent=latent)
        anonymizer.model_ids = {n: weights.entry(n)["sha256"][:16] for n in names}
    return anonymizer


def run_anonymize(source: str | Path | datasets.Source, out: str | Path, anonymizer: Anonymizer,
                  batch_size: int = 8, progress: Callable[[int, int], None] | None = None,
                  keep_names: bool = False) -> tuple[Job, dict[str, int]]:
    """Run ``anonymizer`` over a folder or archive into ``out`` (resumable, manifest, atomic).

    ``source`` is a path or an input already opened with ``datasets.open_input`` (to check it
    before loading the models, or to choose an array archive's dataset). Folder and file names
    and archive labels are pseudonymized under the anonymizer's key (see
    ``faceanon.pseudonyms``) unless ``keep_names``; either choice is in the run record. An array
    archive keeps its rows in place and pseudonymizes its identifying datasets instead.
    """
    if isinstance(source, (str, Path)):
        source = datasets.open_input(source)
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
    return job, job.run_batches(anonymizer.step, batch_size, progress)
