"""faceanon eval: metric parts against hand-computed values, the evaluation models on real LFW
faces, and the whole evaluation of originals against themselves (anonymity 0, detection 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceanon.evaluation.pose import _euler, angle_error
from faceanon.evaluation.figures import draw_roc
from faceanon.evaluation.measures import label_pairs
from faceanon.evaluation.report import EvalOptions, evaluate
from faceanon.fid import Stats, frechet_distance
from faceanon.identity import cosine_similarity
from faceanon.metrics import equal_error_rate, non_match_rate, roc_auc
from faceanon.tracking import box_iou, match_faces


def test_box_iou_and_greedy_matching() -> None:
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    b = np.array([[21, 0, 31, 10], [5, 0, 15, 10], [100, 100, 110, 110]])
    iou = box_iou(a, b)
    assert iou[0, 1] == pytest.approx(50 / 150)    # half overlap: 50 / (100 + 100 - 50)
    assert iou[1, 0] == pytest.approx(90 / 110)
    assert iou[0, 2] == 0.0
    assert match_faces(a, b) == [1, 0]
    assert match_faces(a, b, min_iou=0.5) == [None, 0]
    assert match_faces(a, np.zeros((0, 4))) == [None, None]


def test_anonymity_of_identical_and_orthogonal_embeddings() -> None:
    def anonymity(a: np.ndarray, b: np.ndarray) -> float:
        return non_match_rate(cosine_similarity(a, b), threshold=0.5)

    e = np.eye(4)[:3]
    assert anonymity(e, e) == 0.0                        # every face still matches itself
    assert anonymity(e, np.roll(e, 1, axis=1)) == 1.0    # cosine 0 < 0.5 everywhere
    assert anonymity(e, np.r_[e[:1], np.roll(e, 1, axis=1)[1:]]) == pytest.approx(2 / 3)


def test_verification_figures_of_known_scores() -> None:
    same = np.array([1, 1, 0, 0])
    assert roc_auc([0.9, 0.8, 0.3, 0.2], same) == 1.0
    assert equal_error_rate([0.9, 0.8, 0.3, 0.2], same)[0] == 0.0
    # Same-person scores 0.9 and 0.4 against different-person 0.6 and 0.2: 3 of 4 orderings right.
    assert roc_auc([0.9, 0.4, 0.6, 0.2], same) == pytest.approx(0.75)
    assert equal_error_rate([0.9, 0.4, 0.6, 0.2], same)[0] == pytest.approx(0.5)


def test_label_pairs_are_balanced_and_labelled_right() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    pairs, same = label_pairs(labels, np.random.default_rng(0))
    assert same.sum() == 4                     # 3 pairs of a's images + 1 of b's
    assert (~same).sum() == 4
    names = np.array(labels)
    assert (names[pairs[:, 0]] == names[pairs[:, 1]]).tolist() == same.tolist()


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 8))
    assert frechet_distance(Stats.of(feats), Stats.of(feats)) == pytest.approx(0.0, abs=1e-8)
    # Equal covariances: the distance is the squared distance of the means.
    a = Stats(np.zeros(3), np.eye(3), 10)
    b = Stats(np.array([1.0, 2.0, 2.0]), np.eye(3), 10)
    assert frechet_distance(a, b) == pytest.approx(9.0)
    # Same mean, covariances I and 4I: tr(I + 4I - 2·√(4I)) = tr(I) = 3.
    assert frechet_distance(a, Stats(np.zeros(3), 4 * np.eye(3), 10)) == pytest.approx(3.0)


def test_pose_angles_and_wrapped_errors() -> None:
    def rot(axis: str, deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
                "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
                "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]

    yaw, pitch, roll = _euler(rot("z", 10) @ rot("y", 20) @ rot("x", -5))
    assert (yaw, pitch, roll) == pytest.approx((20.0, 5.0, 10.0))  # pitch > 0: looking up
    assert angle_error(np.array([179.0, 10.0]), np.array([-179.0, -20.0])).tolist() == \
        pytest.approx([2.0, 30.0])


def test_roc_plot_is_drawn_without_a_plotting_library() -> None:
    img = draw_roc([("x", np.array([0, 0, 1]), np.array([0, 1, 1]), (255, 0, 0))], size=200)
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert ((img[..., 0] == 255) & (img[..., 1] == 0)).sum() > 100  # the red curve is there


def test_expression_model_reads_keras_file_and_sees_a_smile(shared: Path, lfw: Path) -> None:
    from faceanon.detect import Detector
    from faceanon.evaluation.expression import EMOTIONS, ExpressionModel
    from faceanon.images import load_image

    model = ExpressionModel(shared / "models" / "fer" / "emotion_model.hdf5")
    detector = Detector()
    probs = []
    for rel in ("AJ_Lamas/AJ_Lamas_0001.jpg", "Aaron_Patterson/Aaron_Patterson_0001.jpg"):
        image = load_image(lfw / "images" / rel)
        probs.append(model.probabilities(image, np.array([detector(image)[0].box]))[0])
    probs = np.array(probs)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert EMOTIONS[probs[0].argmax()] == "happy"      # a broad smile
    assert EMOTIONS[probs[1].argmax()] == "neutral"    # a passport-like face


@pytest.mark.slow
def test_eval_of_originals_against_themselves(lfw_sample: Path, shared: Path, tmp_path: Path) -> None:
    options = EvalOptions(recognizer="dlib", expression_model=shared / "models" / "fer" / "emotion_model.hdf5",
                          fid=True, sample=2)
    report = evaluate(lfw_sample, lfw_sample, options, tmp_path / "report")
    assert report["inputs"]["images_paired"] == 7
    assert report["detection_rate"] == 1.0
    assert report["anonymity"] == 0.0
    assert report["pose"]["yaw"] == pytest.approx(0.0, abs=1e-6)
    assert report["expression"]["similarity"] == pytest.approx(1.0)
    for k in ("auc", "eer", "same_pairs", "different_pairs"):
        assert report["synchronism"][k] == report["baseline"][k]
    assert report["fid"]["images"] == pytest.approx(0.0, abs=1e-3)
    assert report["fid"]["crops"] == pytest.approx(0.0, abs=1e-3)
    assert "diversity" in report["not_measured"]
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["anonymity"] == 0.0
    assert (tmp_path / "report" / "roc.png").is_file()
    assert (tmp_path / "report" / "contact_sheet.png").is_file()


def test_eval_cli_json_and_user_errors(lfw_sample: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from faceanon.cli import app

    runner = CliRunner()
    from faceanon import keys

    key_path = tmp_path / "k.bin"
    keys.save(keys.generate(), key_path)
    res = runner.invoke(app, ["eval", str(lfw_sample), "--orig", str(lfw_sample), "--no-fid",
                              "--anon2", str(lfw_sample), "--key", str(key_path),
                              "--limit", "3", "--json"])
    assert res.exit_code == 0, res.output
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["anonymity"] == 0.0 and last["detection_rate"] == 1.0
    assert last["diversity"] == 0.0          # two identical "virtual" sets: no diversity
    assert last["key"]["matches_anon"] is None  # the originals have no run.json to compare with
    assert set(last["kvfa"]) >= {"auc", "crr", "far", "threshold"}  # the shipped KVFA under --key
    res = runner.invoke(app, ["eval", str(tmp_path / "missing"), "--orig", str(lfw_sample)])
    assert res.exit_code == 2
    assert "input not found" in res.output


def test_eval_finds_the_originals_through_the_private_record(lfw_sample: Path,
                                                             tmp_path: Path) -> None:
    """`faceanon eval ./anon` pairs the pseudonymized outputs with their originals through
    the private record and gives the figures of the explicit --orig form."""
    from typer.testing import CliRunner

    from faceanon import keys
    from faceanon.cli import app

    runner = CliRunner()
    key_path = tmp_path / "k.bin"
    keys.save(keys.Key(bytes(32), 0), key_path)
    anon = tmp_path / "anon"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--key", str(key_path), "--out",
                              str(anon), "--method", "pixelate", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    reports = []
    for extra in ([], ["--orig", str(lfw_sample)]):
        res = runner.invoke(app, ["eval", str(anon), "--no-fid", "--json", *extra])
        assert res.exit_code == 0, res.output
        reports.append(json.loads(res.stdout.strip().splitlines()[-1]))
    implicit, explicit = ({k: v for k, v in r.items() if k != "inputs"} for r in reports)
    assert implicit == explicit
    assert reports[0]["inputs"]["images_paired"] == 7 and implicit["synchronism"] is not None
    res = runner.invoke(app, ["eval", str(lfw_sample)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "--orig" in res.output


def test_keras_same_max_pool_pads_like_tensorflow() -> None:
    import torch

    from faceanon.nets.mini_xception import _max_pool_same

    even = _max_pool_same(torch.arange(16.0).reshape(1, 1, 4, 4))
    assert even[0, 0].tolist() == [[10.0, 11.0], [14.0, 15.0]]   # padding only after
    odd = _max_pool_same(-torch.arange(25.0).reshape(1, 1, 5, 5))  # negative: pads must not win
    assert odd[0, 0].tolist() == [[0.0, -1.0, -3.0], [-5.0, -6.0, -8.0], [-15.0, -16.0, -18.0]]
