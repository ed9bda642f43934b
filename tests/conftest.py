"""Shared fixtures: where ../shared lives, and small real inputs taken from it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BAD_CORPUS = REPO / "tests" / "data" / "bad"


def shared_dir() -> Path:
    return Path(os.environ.get("FACEANON_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.is_dir():
        pytest.skip(f"needs the shared data folder ({path}); set FACEANON_SHARED")
    return path


@pytest.fixture(scope="session")
def lfw(shared: Path) -> Path:
    """The LFW folder (images/, pairs.txt, ...) from ../shared."""
    path = shared / "data" / "lfw"
    if not (path / "images").is_dir():
        pytest.skip(f"needs LFW at {path}")
    return path


@pytest.fixture
def lfw_sample(lfw: Path, tmp_path: Path) -> Path:
    """A small LFW-style folder: 3 people, 7 images, copied so tests may do anything with it."""
    out = tmp_path / "lfw_sample"
    for person, n in (("Aaron_Peirsol", 2), ("Colin_Powell", 3), ("Serena_Williams", 2)):
        (out / person).mkdir(parents=True)
        for i in range(1, n + 1):
            name = f"{person}_{i:04d}.jpg"
            shutil.copyfile(lfw / "images" / person / name, out / person / name)
    return out
