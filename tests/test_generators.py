"""The generator interface: a generator trained on another template and crop size flows through
kfaar, ivfg and evaluation without a code change, from what it declares in the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from faceanon import keys, weights
from faceanon.anonymize import build_anonymizer
from faceanon.errors import FaceanonError
from faceanon.generators import generator_crop
from faceanon.images import load_image
from faceanon.models import create_model
from faceanon.nets.projector import KeyProjector
from faceanon.nets.stylegan2 import Generator, preset

KEY = keys.Key(bytes(range(32)), 0)
TEMPLATE, CROP = "face", 96  # not the shipped generator's ("faceanon", 128)


def register_tiny_generator(folder: Path, **declared: object) -> None:
    """A tiny StyleGAN2 (16 px) and a key projector for it in the registry ``folder``, with
    the shipped pose basis (kfaar's)."""
    torch.manual_seed(0)
    cfg = preset("tiny", resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32)
    torch.save(Generator(cfg).state_dict(), folder / "g.pt")
    weights.register("tiny-g", "generator", folder / "g.pt", folder, arch=cfg.to_dict(),
                     resolution=16, default=True, **declared)
    arch = {"id_dim": 128, "key_dim": 32, "z_dim": 32, "hidden": 32, "layers": 2}
    torch.save(KeyProjector(**arch).state_dict(), folder / "p.pt")
    weights.register("tiny-p", "projector", folder / "p.pt", folder, generator="tiny-g",
                     arch=arch, psi=0.8, default=True)
    basis = weights.default_entry("pose-basis", REPO / "weights")
    weights.register(basis["name"], "pose-basis", REPO / "weights" / basis["file"], folder,
                     default=True)


@pytest.fixture
def tiny_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    register_tiny_generator(folder, template=TEMPLATE, crop=CROP)
    monkeypatch.setenv("FACEANON_WEIGHTS", str(folder))
    return folder


def test_the_generator_declares_its_template_and_crop(tiny_weights: Path) -> None:
    generator = create_model("face-generator")
    assert (generator.template, generator.crop_size, generator.resolution) == (TEMPLATE, CROP, 16)
    assert not generator.pose_control
    faces = generator.generate(np.ones((3, 128), np.float32), KEY)
    assert faces.shape == (3, CROP, CROP, 3) and faces.dtype == np.uint8
    assert generator_crop() == (TEMPLATE, CROP), "evaluation crops as the generator does"
    assert list(generator.model_ids) == ["tiny-p", "tiny-g"]


@pytest.mark.parametrize("method", ["kfaar", "ivfg"])
def test_another_template_flows_through_the_anonymizer(tiny_weights: Path, method: str) -> None:
    anonymizer = build_anonymizer(method, KEY, device="cpu")
    replacer = anonymizer.replacer
    assert (replacer.template, replacer.crop_size) == (TEMPLATE, CROP)  # type: ignore[attr-defined]
    image = load_image(REPO / "examples" / "images" / "astronaut.jpg")
    done = anonymizer.anonymize([image])[0]
    assert done.image is not None and done.image.shape == image.shape
    assert len(done.faces) == 1 and not np.array_equal(done.image, image)
    assert anonymizer.settings["models"].keys() >= {"tiny-p", "tiny-g"}


def test_a_generator_without_a_declared_template_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_tiny_generator(tmp_path, crop=CROP)
    monkeypatch.setenv("FACEANON_WEIGHTS", str(tmp_path))
    with pytest.raises(FaceanonError, match="does not declare its template"):
        create_model("face-generator")


def test_create_model_refuses_weights_of_another_kind(tiny_weights: Path) -> None:
    with pytest.raises(FaceanonError, match="'tiny-p' are a projector, not a generator"):
        create_model("generator", "tiny-p")
    with pytest.raises(FaceanonError, match="unknown model kind"):
        create_model("diffusion")
