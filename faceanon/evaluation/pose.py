"""Head pose (yaw, pitch, roll in degrees) of detected faces, to check that a virtual face looks
where its original looked.

Two estimators behind one call signature: FSA-Net (Yang et al., 2019) from a user-supplied
ONNX pair, run with onnxruntime (an optional dependency), and — when no model is given — a
perspective-n-point fit of dlib's 68 landmarks to a generic 3-D face. The fallback needs no
extra weights but is coarser (one mean face shape for everyone), so compare errors measured by
the same estimator only; the report names which one ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from faceanon.errors import FaceanonError
from faceanon.evaluation import crop_box

__all__ = ["PoseEstimator", "FsaNetPose", "LandmarkPose", "load_pose", "angle_error",
           "FACE_MODEL_3D"]

# A mean adult face in millimetres, origin at the nose tip, x to the image's right, y down,
# z away from the camera, for dlib's 68-point indices. Widths and heights are anthropometric
# norms (Farkas): biocular width ex-ex 90, intercanthal en-en 32, mouth ch-ch 53, nasal height
# n-sn 50, upper lip sn-sto 22, lower face sn-me 70, nasal tip protrusion sn-prn 20. Depths
# behind the nose tip are coarse profile proportions; yaw/pitch errors are differences between
# two faces measured with this same model, so a shared bias cancels.
FACE_MODEL_3D: dict[int, tuple[float, float, float]] = {
    27: (0.0, -46.0, 22.0),   # nasion
    30: (0.0, 0.0, 0.0),      # nose tip (pronasale)
    33: (0.0, 4.0, 19.0),     # subnasale
    36: (-45.0, -38.0, 46.0), # outer eye corner, image left (exocanthion)
    39: (-16.0, -37.0, 30.0), # inner eye corner, image left (endocanthion)
    42: (16.0, -37.0, 30.0),  # inner eye corner, image right
    45: (45.0, -38.0, 46.0),  # outer eye corner, image right
    48: (-26.5, 27.0, 35.0),  # mouth corner, image left (cheilion)
    54: (26.5, 27.0, 35.0),   # mouth corner, image right
    8: (0.0, 74.0, 32.0),     # chin (menton)
}

# FSA-Net was trained on BGR crops scaled as (x - 127.5) / 128.
_FSA_SIZE = 64


class PoseEstimator(Protocol):
    """(N, 3) yaw, pitch, roll in degrees for the faces with these boxes and 5 landmarks."""

    name: str

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray) -> np.ndarray: ...


class FsaNetPose:
    """The mean of the FSA-Net ONNX models given (the shared pair: ``1x1`` and ``var``)."""

    def __init__(self, paths: list[Path]) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise FaceanonError("FSA-Net head pose needs onnxruntime; install it with: "
                                "pip install onnxruntime", paths[0]) from None
        self.name = "fsanet"
        self._sessions: list[Any] = []
        for p in paths:
            try:
                self._sessions.append(ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]))
            except Exception as e:  # onnxruntime raises its own types for bad files
                raise FaceanonError(f"not a readable ONNX model ({type(e).__name__})", p) from None

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        out = np.zeros((len(boxes), 3))
        for i, box in enumerate(np.asarray(boxes).reshape(-1, 4)):
            crop = crop_box(bgr, box, _FSA_SIZE).astype(np.float32)
            x = ((crop - 127.5) / 128.0).transpose(2, 0, 1)[None]
            # The exported graphs take a batch of one.
            out[i] = np.mean([s.run(None, {s.get_inputs()[0].name: x})[0][0]
                              for s in self._sessions], axis=0)
        return out


class LandmarkPose:
    """Pose from dlib's 68 landmarks fitted to :data:`FACE_MODEL_3D` by ``cv2.solvePnP``, with a
    pinhole camera whose focal length is the image's longer side (a normal lens)."""

    name = "landmark-pnp"

    def __init__(self) -> None:
        from faceanon.landmarks import Landmarks68

        self._lm68 = Landmarks68()
        self._index = np.array(list(FACE_MODEL_3D))
        self._model = np.array(list(FACE_MODEL_3D.values()), dtype=np.float64)

    def from_landmarks68(self, image_shape: tuple[int, ...], points68: np.ndarray) -> np.ndarray:
        """(3,) yaw, pitch, roll of one face from its (68, 2) landmarks."""
        h, w = image_shape[:2]
        f = float(max(h, w))
        camera = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)
        pts = np.asarray(points68, np.float64)
        # Start from a frontal face at the distance its eye span implies: without a guess the
        # solver may settle on the mirror solution behind the camera (a 180° roll).
        span = max(float(np.linalg.norm(pts[45] - pts[36])), 1.0)
        z = f * (FACE_MODEL_3D[45][0] - FACE_MODEL_3D[36][0]) / span
        tvec = np.array([[(pts[30, 0] - w / 2) * z / f], [(pts[30, 1] - h / 2) * z / f], [z]])
        ok, rvec, _ = cv2.solvePnP(self._model, pts[self._index], camera, None,
                                   np.zeros((3, 1)), tvec, useExtrinsicGuess=True,
                                   flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return np.full(3, np.nan)
        return _euler(cv2.Rodrigues(rvec)[0])

    def __call__(self, image: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        marks = np.asarray(landmarks5).reshape(-1, 5, 2)
        if not len(marks):
            return np.zeros((0, 3))
        return np.stack([self.from_landmarks68(image.shape, p) for p in self._lm68(image, marks)])


def _euler(r: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll (degrees) of R = Rz(roll)·Ry(yaw)·Rx(pitch), yaw in [−90°, 90°] so a
    face turned away from the camera never decomposes into a flipped one; signs as FSA-Net
    reports them."""
    yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = -np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll])


def load_pose(path: str | Path | None) -> PoseEstimator:
    """FSA-Net from an ``.onnx`` file or a folder of them (averaged); the landmark fit when None."""
    if path is None:
        return LandmarkPose()
    path = Path(path).expanduser()
    paths = sorted(path.glob("*.onnx")) if path.is_dir() else [path]
    if not paths or not all(p.is_file() for p in paths):
        raise FaceanonError("no FSA-Net .onnx model found", path)
    return FsaNetPose(paths)


def angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| in degrees, wrapped to [0, 180] (so 179° and −179° are 2° apart)."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)
