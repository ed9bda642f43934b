import json

import numpy as np
import pytest
from typer.testing import CliRunner

from faceanon import keys
from faceanon.anonymize import build_anonymizer, passes, run_anonymize
from faceanon.cli import app
from faceanon.datasets import open_input
from faceanon.images import load_image
from faceanon.obscure import obscure

runner = CliRunner()


def lines(out):
    """The manifest of the output ``out``, from its private record beside it."""
    path = out.with_name(out.name + ".private") / "manifest.jsonl"
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}


def run_record(out):
    return json.loads((out.with_name(out.name + ".private") / "run.json").read_text())


def test_obscure_changes_only_the_face_region():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    out = obscure(image, np.array([[100, 50, 160, 130]]), 10)
    changed = np.abs(out.astype(int) - image).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed[90, 130], "the face centre is obscured"
    assert xs.min() >= 85 and xs.max() <= 175 and ys.min() >= 30 and ys.max() <= 150
    assert np.array_equal(out[:, :80], image[:, :80])


@pytest.mark.parametrize("method", ["blur", "pixelate"])
def test_baselines_replace_every_face_and_keep_layout(lfw_sample, tmp_path, method):
    out = tmp_path / "anon"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(out), "--method", method,
                              "--keep-names", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.splitlines()[-1])
    assert summary["ok"] == 7
    recs = lines(out)
    for entry in open_input(lfw_sample).entries():
        rec = recs[entry.relpath]
        assert rec["faces"] and rec["output"] == entry.relpath, entry.relpath
        before, after = entry.load(), load_image(out / entry.relpath)
        assert before.shape == after.shape
        x1, y1, x2, y2 = (int(v) for v in rec["faces"][0]["box"])
        face_change = np.abs(after[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).mean()
        assert face_change > 8, (entry.relpath, face_change)
    run = run_record(out)
    assert run["settings"]["method"] == method and run["counts"]["ok"] == 7
    assert run["settings"]["names"] == "kept (--keep-names)"


def test_deterministic_and_resumable(lfw_sample, tmp_path):
    anon = build_anonymizer("pixelate", None)
    run_anonymize(lfw_sample, tmp_path / "a", anon, keep_names=True)
    run_anonymize(lfw_sample, tmp_path / "b", anon, batch_size=3, keep_names=True)
    outputs = lines(tmp_path / "a")
    for entry in open_input(lfw_sample).entries():
        written = outputs[entry.relpath]["output"]
        assert (tmp_path / "a" / written).read_bytes() == (tmp_path / "b" / written).read_bytes()
    first = lines(tmp_path / "a")
    _, counts = run_anonymize(lfw_sample, tmp_path / "a", anon, keep_names=True)
    assert counts["ok"] == 7 and lines(tmp_path / "a") == first


def test_no_face_policies(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    y, x = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([x % 256, y * 2, (x + y) % 256], -1).astype(np.uint8)).save(src / "wall.png")
    for policy, written in (("blur", True), ("copy", True), ("skip", False)):
        out = tmp_path / policy
        res = runner.invoke(app, ["anonymize", str(src), "--out", str(out), "--method", "blur",
                                  "--no-face", policy, "--keep-names", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        rec = lines(out)["wall.png"]
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
                              "--method", "blur", "--keep-names"])
    assert res.exit_code == 2 and "inside" in res.output
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "o"),
                              "--method", "blur", "--device", "cpu"])
    assert res.exit_code == 2 and "--keep-names" in res.output, "names need a key or an opt-out"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "o"),
                              "--method", "blur", "--thresholds", "0.6,0.7"])
    assert res.exit_code == 2 and "--thresholds" in res.output
    key = tmp_path / "k.bin"
    keys.save(keys.generate(), key)
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "p"),
                              "--method", "pixelate", "--key", str(key), "--device", "cpu"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(tmp_path / "p"),
                              "--method", "pixelate", "--keep-names", "--device", "cpu"])
    assert res.exit_code == 2 and "other settings" in res.output


@pytest.mark.parametrize("args", [["anonymize", "in"], ["eval"], ["keyinfo"],
                                  ["anonymize", "in", "--out", "o", "--batch-size", "0"],
                                  ["detect", "in", "--out", "f.jsonl", "--nonsense"]])
def test_usage_errors_are_one_line(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error: "), res.output


def test_thresholds_reach_the_detector(lfw_sample, tmp_path):
    """A detector that accepts nothing finds no face: the option is not just parsed."""
    out = tmp_path / "strict"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--out", str(out), "--method", "blur",
                              "--keep-names", "--thresholds", "1,1,1", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["no_face"] == 7
    assert run_record(out)["settings"]["detector"]["thresholds"] == [1.0, 1.0, 1.0]


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
    run = run_record(outs["a"])
    assert run["settings"]["key_fingerprint"] == keys.load(k1).fingerprint
    assert set(run["settings"]["models"]) >= {"stylegan2-face64-cpu2", "projector-face64-cpu2"}
    for entry in open_input(lfw_sample).entries():
        a, b, c = ((outs[n] / lines(outs[n])[entry.relpath]["output"]).read_bytes() for n in "abc")
        assert a == b, "same key, same input: byte-identical"
        assert a != c, "another key: another virtual face"
        rec = lines(outs["a"])[entry.relpath]
        x1, y1, x2, y2 = (int(v) for v in rec["faces"][0]["box"])
        dx, dy = (x2 - x1) // 4, (y2 - y1) // 4  # the box's centre: eyes, nose, mouth
        inner = np.s_[y1 + dy:y2 - dy, x1 + dx:x2 - dx]
        before, after = entry.load(), load_image(outs["a"] / rec["output"])
        assert np.abs(after[inner].astype(int) - before[inner]).mean() > 10


def test_passes_bound_the_faces_replaced_together():
    assert passes([1, 0, 3, 5, 2, 9, 1, 1], 8) == [[0, 2], [3, 4], [5], [6, 7]]
    assert passes([0, 0], 8) == [] and passes([], 8) == []


def test_crowded_batches_are_replaced_a_few_faces_at_a_time(lfw_sample, monkeypatch):
    """A batch's faces go through the method a few at a time (bounded memory), and the images
    come out as they do when the whole batch goes at once."""
    import faceanon.anonymize as pipeline

    images = [e.load() for e in open_input(lfw_sample).entries()]
    anon = build_anonymizer("blur", None)
    whole = anon.anonymize(images)
    seen: list[int] = []
    replace = anon.replace_faces

    def spy(imgs, faces, identities=None):
        seen.append(sum(len(f) for f in faces.values()))
        return replace(imgs, faces, identities)

    monkeypatch.setattr(pipeline, "FACES_PER_PASS", 2)
    monkeypatch.setattr(anon, "replace_faces", spy)
    parts = anon.anonymize(images)
    assert len(seen) >= 4 and max(seen) <= 2 and sum(seen) == sum(len(w.faces) for w in whole)
    for a, b in zip(whole, parts):
        assert np.array_equal(a.image, b.image) and a.report == b.report


def test_free_heap_pages_go_back_to_the_system():
    """After a batch, the free pages of a fragmented heap are returned (glibc only)."""
    from faceanon.datasets import _malloc_trim, release_free_memory

    if _malloc_trim() is None:
        pytest.skip("no malloc_trim in this C library")

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    freed, kept = [], []
    for _ in range(3000):  # 100 KiB blocks, under the mmap threshold, pinned by small ones
        freed.append(np.ones(12_800))
        kept.append(np.ones(8))
    before = rss_mib()
    del freed
    release_free_memory()
    assert rss_mib() < before - 200
