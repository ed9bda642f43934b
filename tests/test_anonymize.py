import json

import numpy as np
import pytest
from typer.testing import CliRunner

from faceanon import keys
from faceanon.anonymize import Anonymizer, obscure, run_anonymize
from faceanon.cli import app
from faceanon.datasets import open_input
from faceanon.detect import Detector
from faceanon.images import load_image

runner = CliRunner()


def lines(path):
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_obscure_changes_only_the_face_region():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    out = obscure(image, np.array([[100, 50, 160, 130]]), "pixelate")
    changed = np.abs(out.astype(int) - image).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed[90, 130], "the face centre is obscured"
    assert xs.min() >= 85 and xs.max() <= 175 and ys.min() >= 30 and ys.max() <= 150
    assert np.array_equal(out[:, :80], image[:, :80])


@pytest.mark.parametrize("method", ["blur", "pixelate"])
def test_baselines_replace_every_face_and_keep_layout(lfw_sample, tmp_path, method):
    out = tmp_path / "anon"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(out), "--method", method,
                              "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.splitlines()[-1])
    assert summary["ok"] == 7
    recs = lines(out / "manifest.jsonl")
    for entry in open_input(lfw_sample).entries():
        rec = recs[entry.relpath]
        assert rec["faces"], entry.relpath
        before, after = entry.load(), load_image(out / entry.relpath)
        assert before.shape == after.shape
        x1, y1, x2, y2 = (int(v) for v in rec["faces"][0]["box"])
        face_change = np.abs(after[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).mean()
        assert face_change > 8, (entry.relpath, face_change)
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["method"] == method and run["counts"]["ok"] == 7


def test_deterministic_and_resumable(lfw_sample, tmp_path):
    det = Detector()
    anon = Anonymizer("pixelate", det)
    run_anonymize(lfw_sample, tmp_path / "a", anon)
    run_anonymize(lfw_sample, tmp_path / "b", anon, batch_size=3)
    for entry in open_input(lfw_sample).entries():
        assert (tmp_path / "a" / entry.relpath).read_bytes() == \
            (tmp_path / "b" / entry.relpath).read_bytes()
    first = (tmp_path / "a" / "manifest.jsonl").read_text()
    _, counts = run_anonymize(lfw_sample, tmp_path / "a", anon)
    assert counts["ok"] == 7 and (tmp_path / "a" / "manifest.jsonl").read_text() == first


def test_no_face_policies(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    y, x = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([x % 256, y * 2, (x + y) % 256], -1).astype(np.uint8)).save(src / "wall.png")
    for policy, written in (("blur", True), ("copy", True), ("skip", False)):
        out = tmp_path / policy
        res = runner.invoke(app, ["anonymize", str(src), "--out", str(out), "--method", "blur",
                                  "--no-face", policy, "--device", "cpu"])
        assert res.exit_code == 0, res.output
        rec = lines(out / "manifest.jsonl")["wall.png"]
        assert rec["status"] == "no_face" and policy in rec["reason"]
        assert (out / "wall.png").exists() == written
    assert np.array_equal(load_image(tmp_path / "copy" / "wall.png"), load_image(src / "wall.png"))
    assert not np.array_equal(load_image(tmp_path / "blur" / "wall.png"), load_image(src / "wall.png"))


def test_bad_arguments_are_one_line_errors(lfw_sample, tmp_path):
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "needs --key" in res.output
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "o"),
                              "--method", "paint"])
    assert res.exit_code == 2 and "unknown method" in res.output
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(lfw_sample / "x"),
                              "--method", "blur"])
    assert res.exit_code == 2 and "inside" in res.output
    key = tmp_path / "k.bin"
    keys.save(keys.generate(), key)
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "p"),
                              "--method", "pixelate", "--device", "cpu"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "p"),
                              "--method", "blur", "--device", "cpu"])
    assert res.exit_code == 2 and "other settings" in res.output


@pytest.mark.parametrize("method", ["kfaar", "ivfg"])
def test_virtual_faces_with_shipped_weights_are_key_driven(lfw_sample, tmp_path, method):
    """The whole pipeline on the shipped weights: same key → byte-identical output,
    another key → other faces, and every face changed."""
    k1, k2 = tmp_path / "k1.bin", tmp_path / "k2.bin"
    rng = np.random.default_rng(0)
    keys.save(keys.Key(rng.bytes(32), 0), k1)  # fixed keys: the test is repeatable
    keys.save(keys.Key(rng.bytes(32), 0), k2)
    outs = {}
    for name, key in (("a", k1), ("b", k1), ("c", k2)):
        outs[name] = tmp_path / name
        res = runner.invoke(app, ["anonymize", str(lfw_sample), "--key", str(key), "--out",
                                  str(outs[name]), "--method", method, "--device", "cpu",
                                  "--batch-size", "4" if name == "b" else "8", "--json"])
        assert res.exit_code == 0, res.output
    run = json.loads((outs["a"] / "run.json").read_text())
    assert run["settings"]["key_fingerprint"] == keys.load(k1).fingerprint
    assert set(run["settings"]["models"]) >= {"stylegan2-lfw64-cpu", "projector-lfw64-cpu"}
    for entry in open_input(lfw_sample).entries():
        a, b, c = ((outs[n] / entry.relpath).read_bytes() for n in "abc")
        assert a == b, "same key, same input: byte-identical"
        assert a != c, "another key: another virtual face"
        rec = lines(outs["a"] / "manifest.jsonl")[entry.relpath]
        x1, y1, x2, y2 = (int(v) for v in rec["faces"][0]["box"])
        dx, dy = (x2 - x1) // 4, (y2 - y1) // 4  # the box's centre: eyes, nose, mouth
        inner = np.s_[y1 + dy:y2 - dy, x1 + dx:x2 - dx]
        before, after = entry.load(), load_image(outs["a"] / entry.relpath)
        assert np.abs(after[inner].astype(int) - before[inner]).mean() > 10
