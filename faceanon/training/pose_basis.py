"""Fit the pose/expression basis of ``faceanon.pose_transfer`` from an aligned-face archive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceanon.landmarks import Landmarks68
from faceanon.fsutil import atomic_torch_save
from faceanon.pose_transfer import LandmarkWarp, PoseBasis, fit_pose_basis
from faceanon.training.aligned import load_aligned


def train_pose_basis(data: str | Path, out: str | Path, min_within_share: float = 0.5,
                     progress: Callable[[int, int], None] | None = None) -> tuple[PoseBasis, int]:
    """68 landmarks on every aligned crop, then the within/between-person split; saves ``out``.
    Returns the basis and the number of faces it was fitted on."""
    faces = load_aligned(data)
    warp = LandmarkWarp(PoseBasis(np.eye(136), faces.size, np.ones(136)), Landmarks68(),
                        faces.template)
    shapes = np.zeros((len(faces.images), 68, 2))
    for i, crop in enumerate(faces.images):
        shapes[i] = warp.landmarks(crop)
        if progress:
            progress(i + 1, len(faces.images))
    basis = fit_pose_basis(shapes, faces.labels, faces.size, min_within_share)
    atomic_torch_save(basis.state_dict(), out)
    return basis, len(faces.images)
