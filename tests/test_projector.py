import numpy as np
import torch

from faceanon import keys
from faceanon.nets.projector import KeyProjector
from faceanon.nets.stylegan2 import Generator, preset
from faceanon.generators.stylegan2 import StyleGAN2Faces
from faceanon.training.projector import ProjectorConfig, TripletSampler, cos_loss, train_projector


def test_cos_loss_branches():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8]])  # cos = 0.6
    assert torch.isclose(cos_loss(a, b, True, 0.5), torch.tensor(0.4))
    assert torch.isclose(cos_loss(a, b, False, 0.5), torch.tensor(0.1))
    assert cos_loss(a, b, False, 0.7) == 0  # max(0, cos − m), not max(m, cos)


def test_triplets_pair_one_person_against_another():
    labels = np.array([0, 0, 0, 1, 1, 2, 3])
    x1, x2, y = TripletSampler(labels, seed=0).sample(200)
    assert (labels[x1] == labels[x2]).all() and (x1 != x2).all()
    assert (labels[y] != labels[x1]).all()


def tiny_virtual(seed: int = 0) -> StyleGAN2Faces:
    torch.manual_seed(seed)
    g = Generator(preset("tiny"))
    p = KeyProjector(id_dim=128, key_dim=64, z_dim=g.cfg.z_dim, hidden=64, layers=2)
    return StyleGAN2Faces(g, p, "test/v1", "faceanon", 64)


def test_virtual_faces_are_deterministic_and_key_driven():
    model = tiny_virtual()
    ident = np.random.default_rng(0).normal(size=(2, 128)).astype(np.float32)
    k1, k2 = keys.generate(), keys.generate()
    a = model.generate(ident, k1)
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, model.generate(ident, k1)), "synchronism: same in, same out"
    assert not np.array_equal(a, model.generate(ident, k2)), "another key, another face"
    assert not np.array_equal(a, model.generate(ident, k1, attempt=1)), "retries differ"


def test_a_key_per_row_renders_as_the_same_key_alone():
    """KVFA training renders a batch under one key per row; a row must get the face that its
    key alone gives (the anonymizer's path)."""
    model = tiny_virtual()
    ident = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 128)).astype(np.float32))
    k1, k2 = keys.generate(), keys.generate()
    with torch.inference_mode():
        rows = model.render(ident, [k1, k2])
        torch.testing.assert_close(rows[:1], model.render(ident[:1], k1))
        torch.testing.assert_close(rows[1:], model.render(ident[1:], k2))


def test_training_steps_run_and_save(lfw_sample, tmp_path):
    from faceanon.align import align
    from faceanon.detect import Detector
    from faceanon.datasets import open_input
    from faceanon.identity import load_recognizer
    from faceanon.training.aligned import AlignedFaces, central_face

    det, crops, labels = Detector(), [], []
    for entry in open_input(lfw_sample).entries():
        image = entry.load()
        face = central_face(det(image), *image.shape[:2])
        crops.append(align(image, face.landmarks5[None], "faceanon", 128)[0][0])
        labels.append(entry.label)
    people = sorted(set(labels))
    faces = AlignedFaces(np.stack(crops), np.array([people.index(p) for p in labels]), people,
                         [], "faceanon")
    g = Generator(preset("tiny"))
    before = {k: v.clone() for k, v in g.state_dict().items()}
    cfg = ProjectorConfig(steps=2, batch=2, key_dim=32, hidden=32, layers=2, log_every=1)
    p = train_projector(g, "faceanon", load_recognizer("dlib"), faces, tmp_path, cfg)
    assert (tmp_path / "projector.pt").exists() and (tmp_path / "log.jsonl").read_text().count("\n") == 2
    state = torch.load(tmp_path / "projector.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert p.key_dim == 32
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items()), "G stays frozen"
