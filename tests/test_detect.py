"""MTCNN detection, 68-point landmarks and the `faceanon detect` command on a few LFW images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceanon.align import template_points
from faceanon.cli import app
from faceanon.detect import Detector, detect_and_align, nms
from faceanon.errors import FaceanonError
from faceanon.images import load_image, save_image
from faceanon.landmarks import Landmarks68, dlib_box
from faceanon.mtcnn_format import load_pretrained
from faceanon.nets.mtcnn import ONet, PNet, RNet, _max_pool

PEOPLE = ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg",
          "Serena_Williams/Serena_Williams_0001.jpg")
GROUP = "Abdel_Nasser_Assidi/Abdel_Nasser_Assidi_0001.jpg"  # three faces


@pytest.fixture(scope="module")
def detector() -> Detector:
    torch.set_num_threads(1)
    return Detector()


@pytest.fixture(scope="module")
def images(lfw: Path) -> list[np.ndarray]:
    return [load_image(lfw / "images" / p) for p in PEOPLE]


def no_face_image() -> np.ndarray:
    """A synthetic scene: gradient, rectangles and text, nothing face-like."""
    img = np.zeros((240, 320, 3), np.uint8)
    img[:] = np.linspace(40, 220, 320)[None, :, None].astype(np.uint8)
    cv2.rectangle(img, (30, 40), (140, 120), (200, 30, 30), -1)
    cv2.putText(img, "abc", (160, 200), cv2.FONT_HERSHEY_SIMPLEX, 2, (10, 10, 10), 4)
    return img


def test_nets_take_pretrained_weights_and_keep_shapes() -> None:
    pnet, rnet, onet = load_pretrained()
    with torch.no_grad():
        reg, prob = pnet(torch.zeros(2, 3, 30, 40))
        assert reg.shape == (2, 4, 10, 15) and prob.shape == (2, 10, 15)
        assert [t.shape for t in rnet(torch.zeros(3, 3, 24, 24))] == [(3, 4), (3,)]
        assert [t.shape for t in onet(torch.zeros(0, 3, 48, 48))] == [(0, 4), (0, 10), (0,)]
    fresh = [PNet(), RNet(), ONet()]
    assert all(sorted(a.state_dict()) == sorted(b.state_dict()) for a, b in zip(fresh, (pnet, rnet, onet)))


@pytest.mark.parametrize("shape,k,s,ceil", [((2, 3, 21, 22), 3, 2, True), ((2, 3, 9, 9), 3, 2, False),
                                            ((1, 2, 15, 16), 2, 2, True)])
def test_max_pool_matches_torch(shape: tuple[int, ...], k: int, s: int, ceil: bool) -> None:
    x = torch.randn(*shape)
    assert torch.equal(_max_pool(x, k, s, ceil), torch.nn.functional.max_pool2d(x, k, s, ceil_mode=ceil))


def test_nms_keeps_best_of_overlaps_and_separates_groups() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert sorted(nms(boxes, scores, 0.5, groups=np.array([0, 0, 0, 1])).tolist()) == [1, 2, 3]
    inner = np.array([[0, 0, 10, 10], [2, 2, 6, 6]], float)
    assert nms(inner, np.array([1.0, 0.9]), 0.5, mode="min").tolist() == [0]
    assert nms(inner, np.array([1.0, 0.9]), 0.5).tolist() == [0, 1]


def test_finds_the_centred_face_with_ordered_landmarks(detector: Detector,
                                                       images: list[np.ndarray]) -> None:
    for faces in detector.detect(images):
        centred = [f for f in faces if f.box[0] < 125 < f.box[2] and f.box[1] < 125 < f.box[3]]
        assert len(centred) == 1 and centred[0].score > 0.95
        le, re, nose, lm, rm = centred[0].landmarks5
        assert le[0] < nose[0] < re[0] and lm[0] < rm[0]
        assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])
        x1, y1, x2, y2 = centred[0].box
        assert np.all((centred[0].landmarks5 > [x1, y1]) & (centred[0].landmarks5 < [x2, y2]))


def test_batch_matches_single_and_mixed_sizes(detector: Detector, images: list[np.ndarray]) -> None:
    big = cv2.resize(images[1], (400, 400), interpolation=cv2.INTER_CUBIC)
    batch = detector.detect([images[0], big, images[1]])
    for img, faces in zip((images[0], images[1]), (batch[0], batch[2])):
        alone = detector(img)
        assert len(alone) == len(faces)
        np.testing.assert_allclose(alone[0].box, faces[0].box, atol=1e-3)
    scaled = batch[1][0]
    np.testing.assert_allclose(scaled.landmarks5 / 1.6, batch[2][0].landmarks5, atol=6.0)


def test_no_face_and_max_faces_and_bad_options(detector: Detector, lfw: Path) -> None:
    assert detector(no_face_image()) == []
    assert detector(np.zeros((8, 8, 3), np.uint8)) == []
    group = load_image(lfw / "images" / GROUP)
    faces = detector(group)
    assert len(faces) >= 2
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    only = Detector(max_faces=1)(group)
    assert len(only) == 1 and only[0].score == faces[0].score
    with pytest.raises(FaceanonError):
        Detector(min_face_size=5)
    with pytest.raises(FaceanonError):
        Detector(thresholds=(0.6, 0.7))


def test_detect_and_align_puts_landmarks_on_the_template(detector: Detector,
                                                         images: list[np.ndarray]) -> None:
    faces, crops, mats = detect_and_align(images[0], detector, "faceanon", 128)
    assert crops.shape == (len(faces), 128, 128, 3) and mats.shape == (len(faces), 2, 3)
    again = detector(crops[0])
    err = np.linalg.norm(again[0].landmarks5 - template_points("faceanon", 128), axis=1).mean()
    assert err < 4.0


def test_68_landmarks_agree_with_mtcnn(detector: Detector, images: list[np.ndarray]) -> None:
    lm68 = Landmarks68()
    for img in images:
        face = detector(img)[0]
        pts = lm68(img, face.landmarks5)
        assert pts.shape == (68, 2)
        iod = np.linalg.norm(face.landmarks5[1] - face.landmarks5[0])
        assert np.linalg.norm(pts[36:42].mean(0) - face.landmarks5[0]) < 0.2 * iod
        assert np.linalg.norm(pts[42:48].mean(0) - face.landmarks5[1]) < 0.2 * iod
        box = dlib_box(face.landmarks5)
        assert box[0] < pts[:, 0].mean() < box[2]
    assert lm68(images[0], np.zeros((0, 5, 2))).shape == (0, 68, 2)


def test_cli_detect_writes_jsonl_errors_and_previews(lfw: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "people").mkdir(parents=True)
    save_image(src / "people" / "a.png", load_image(lfw / "images" / PEOPLE[0]))
    save_image(src / "empty.png", no_face_image())
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "faces.jsonl"
    res = CliRunner().invoke(app, ["detect", str(src), "--out", str(out), "--preview",
                                   str(tmp_path / "prev"), "--max-faces", "1", "--json"])
    assert res.exit_code == 1, res.output  # one unreadable image
    lines = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {"broken.jpg", "empty.png", "people/a.png"}
    assert "error" in lines["broken.jpg"] and lines["empty.png"]["faces"] == []
    (face,) = lines["people/a.png"]["faces"]
    assert len(face["box"]) == 4 and len(face["landmarks5"]) == 5 and len(face["landmarks68"]) == 68
    assert (tmp_path / "prev" / "people" / "a.png").is_file()
    assert json.loads(res.stdout.strip().splitlines()[-1])["faces"] == 1
    bad = CliRunner().invoke(app, ["detect", str(src), "--out", str(out), "--thresholds", "2,1"])
    assert bad.exit_code == 2 and "thresholds" in bad.output


def test_cli_detect_is_a_resumable_job(tmp_path: Path) -> None:
    """detect keeps a manifest like every job: a re-run redoes only unfinished images, a
    resume under other settings is refused, and the JSON lines are complete at the end."""
    src = Path(__file__).resolve().parents[1] / "examples" / "images"
    out = tmp_path / "faces.jsonl"
    args = ["detect", str(src), "--out", str(out), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    lines = out.read_text().splitlines()
    assert len(lines) == len(list(src.iterdir()))
    manifest = tmp_path / "faces.jsonl.private" / "manifest.jsonl"
    kept = manifest.read_text().splitlines()[:1]  # as if killed after the first image
    manifest.write_text("\n".join(kept) + "\n")
    out.unlink()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert out.read_text().splitlines() == lines
    assert manifest.read_text().splitlines()[0] == kept[0]  # not detected again
    other = CliRunner().invoke(app, [*args[:-1], "--min-face-size", "40"])
    assert other.exit_code == 2 and "other settings" in other.output
