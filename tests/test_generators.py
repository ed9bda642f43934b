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
TEMPLATE, CROP = "faceanon", 96  # not the shipped generator's ("face", 128)


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


def test_pose_control_is_a_capability_the_generator_declares(tiny_weights: Path) -> None:
    """With a latent pose control registered for its generator, the generator declares pose
    control and kfaar asks it for posed faces; the latent shift stays inside the backend."""
    from faceanon.generators import PoseGoal
    from faceanon.generators.stylegan2 import LatentPose

    response = np.random.default_rng(0).normal(size=(136, 32))
    torch.save(LatentPose(response, 1.0, 0.05).state_dict(), tiny_weights / "lp.pt")
    weights.register("tiny-lp", "latent-pose", tiny_weights / "lp.pt", generator="tiny-g")
    generator = create_model("face-generator")
    assert generator.pose_control and list(generator.pose_model_ids) == ["tiny-lp"]
    ident = np.ones((2, 128), np.float32)
    plain = generator.generate(ident, KEY)
    basis = create_model("pose-basis")
    moved = np.zeros((2, 68, 2)) + np.linspace(0, 6, 68)[None, :, None]
    posed = generator.generate(ident, KEY, pose=PoseGoal(basis, moved, np.zeros((2, 68, 2)), CROP))
    assert posed.shape == plain.shape and not np.array_equal(posed, plain)
    basis_name = weights.default_entry("pose-basis")["name"]
    anonymizer = build_anonymizer("kfaar", KEY, device="cpu")
    assert list(anonymizer.settings["models"]) == ["tiny-p", "tiny-g", basis_name, "tiny-lp"]
    assert list(build_anonymizer("ivfg", KEY, device="cpu").settings["models"]) == \
        ["tiny-p", "tiny-g"], "ivfg does not pose: the pose control's weights are not its"


def test_a_virtual_face_asked_for_again_is_not_drawn_again(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Every frame of a clip's track asks for the same virtual face: it is drawn once, and the
    face kept is the very face a fresh draw gives."""
    from faceanon.methods.virtual_faces import VirtualFaceReplacer

    generator = create_model("face-generator")
    drawn: list[int] = []
    generate = generator.generate
    monkeypatch.setattr(generator, "generate", lambda codes, key, attempt=0:
                        drawn.append(len(codes)) or generate(codes, key, attempt))
    codes = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    replacer = VirtualFaceReplacer(generator, KEY)
    size = generator.crop_size
    crops = np.zeros((3, size, size, 3), np.uint8)  # unused: faces come from the codes alone
    first = replacer.new_faces(crops[:2], codes[:2], 0)
    again = replacer.new_faces(crops, codes[[1, 0, 2]], 0)
    retry = replacer.new_faces(crops[:1], codes[:1], 1)
    assert drawn == [2, 1, 1], "only the faces not drawn before are drawn"
    fresh = VirtualFaceReplacer(create_model("face-generator"), KEY)
    assert np.array_equal(again, fresh.new_faces(crops, codes[[1, 0, 2]], 0))
    assert np.array_equal(again[:2], first[[1, 0]])
    assert not np.array_equal(retry[0], first[0]), "a retry is another face"
