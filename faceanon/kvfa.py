"""Key-conditioned verification: is this virtual face that person? (KFAAR Algorithm 2)

The owner of a key proves that a virtual face is theirs by comparing its keyed KVFA feature with
the KVFA feature of an original photo, or of an enrolment made from it earlier (so the photo
itself need not be kept). Without the right key the similarity is that of a stranger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceanon.detect import Detector, main_face
from faceanon.errors import FaceanonError
from faceanon.identity import Recognizer
from faceanon.images import load_image
from faceanon.keys import Key
from faceanon.nets.kvfa import KVFA


@dataclass
class Verdict:
    similarity: float
    threshold: float

    @property
    def match(self) -> bool:
        return self.similarity >= self.threshold


class Verifier:
    """KVFA on top of the detector and the backbone recognizer."""

    def __init__(self, model: KVFA, recognizer: Recognizer, detector: Detector, model_id: str,
                 threshold: float) -> None:
        self.model = model.eval().requires_grad_(False)
        self.recognizer, self.detector = recognizer, detector
        self.model_id, self.threshold = model_id, threshold

    @classmethod
    def load(cls, device: str = "cpu", name: str | None = None) -> "Verifier":
        """The shipped KVFA model (``weights/manifest.json``) with its calibrated threshold."""
        from faceanon.models import create_model, registry_entry

        entry = registry_entry("kvfa", name)
        return cls(create_model("kvfa", entry["name"], device),
                   create_model("recognizer", "dlib", device), Detector(device=device),
                   entry["name"], float(entry["threshold"]))

    def embedding(self, path: str | Path) -> np.ndarray:
        """The backbone embedding of the main face (``faceanon.detect.main_face``) of an image
        file."""
        image = load_image(path)
        faces = self.detector(image)
        main = main_face(np.array([f.box for f in faces]).reshape(-1, 4), image.shape)
        if main is None:
            raise FaceanonError("no face found", path)
        return self.recognizer.embed_faces(image, faces[main].landmarks5[None])

    def original_feature(self, path: str | Path) -> np.ndarray:
        return self.features(self.embedding(path))[0]

    def virtual_feature(self, path: str | Path, key: Key) -> np.ndarray:
        return self.features(self.embedding(path), key)[0]

    def features(self, embeddings: np.ndarray, key: Key | None = None) -> np.ndarray:
        """KVFA features (N, dim) of backbone embeddings (N, d): an original's without a key,
        a virtual face's under ``key``. Scoring many faces (``faceanon eval``) goes through
        here too, so it measures exactly what ``verify`` decides on."""
        e = torch.from_numpy(np.asarray(embeddings, np.float32)).to(
            next(self.model.parameters()).device)
        with torch.inference_mode():
            if key is None:
                f = self.model.features(e)
            else:
                code = torch.from_numpy(key.code(self.model_id, self.model.key_dim)).to(e.device)
                f = self.model.keyed(e, code)
        return f.cpu().numpy()

    def reference(self, ref: str | Path, key: Key, ref_is_virtual: bool) -> np.ndarray:
        """An enrolment file (.npy), an original photo, or (``ref_is_virtual``) a virtual one."""
        ref = Path(ref)
        if ref.suffix.lower() == ".npy":
            return load_enrolment(ref, self.model.dim)
        return self.virtual_feature(ref, key) if ref_is_virtual else self.original_feature(ref)

    def verify(self, virtual: str | Path, key: Key, ref: str | Path, ref_is_virtual: bool = False,
               threshold: float | None = None) -> Verdict:
        a = self.virtual_feature(virtual, key)
        b = self.reference(ref, key, ref_is_virtual)
        sim = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        return Verdict(sim, self.threshold if threshold is None else threshold)


def save_enrolment(feature: np.ndarray, path: str | Path) -> None:
    """An enrolment: the KVFA feature of an original face (no pixels, no backbone embedding)."""
    import io

    from faceanon.fsutil import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.asarray(feature, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue(), mode=0o600)


def load_enrolment(path: str | Path, dim: int) -> np.ndarray:
    try:
        feature = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FaceanonError(f"not an enrolment file: {e}"[:200], path) from None
    if feature.shape != (dim,) or not np.isfinite(feature).all():
        raise FaceanonError(f"not an enrolment of this KVFA model (shape {feature.shape})", path)
    return feature.astype(np.float32)
