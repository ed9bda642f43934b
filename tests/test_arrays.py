"""Array archives (issue 18): image arrays in, the same layout out, resumable, bad files refused."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from faceanon import datasets
from faceanon.arrays import ArraySink, ArraySource
from faceanon.cli import app
from faceanon.datasets import OK, Entry, Job, Result
from faceanon.errors import FaceanonError
from faceanon.images import encode

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def make_archive(path: Path, images: np.ndarray, labels: np.ndarray | None = None,
                 group: str = "", **options) -> None:
    """An archive as ML users keep them: images, labels, other per-image data, attributes."""
    with h5py.File(path, "w") as h5:
        h5.attrs["description"] = "test set"
        h5.attrs["version"] = np.int16(3)
        where = h5.require_group(group) if group else h5
        ds = where.create_dataset("images", data=images, **options)
        ds.attrs["source"] = b"camera"
        ds.attrs["mean"] = np.array([0.5, 0.4, 0.3], np.float32)
        if labels is not None:
            where.create_dataset("labels", data=labels)
        h5.create_dataset("landmarks", data=np.arange(len(images) * 10, dtype=np.float32)
                          .reshape(len(images), 5, 2), chunks=(2, 5, 2), compression="lzf")


def rgb_images(n: int, h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def paint_step(entry: Entry) -> Result:
    """A stand-in method: a white square over the top-left corner, the rest untouched."""
    rgb = entry.load().copy()
    rgb[:8, :8] = 255
    return Result(OK, data=encode(rgb, entry.relpath))


def run_job(src: Path, out: Path, step=paint_step, **kwargs) -> dict[str, int]:
    return Job("test", datasets.open_input(src, **kwargs), out).run(step)


def assert_same_objects(a: h5py.File, b: h5py.File, skip: tuple[str, ...] = ()) -> None:
    """Same groups, datasets (shape, dtype, chunks, filters, fill), attributes and, outside
    ``skip``, the same values."""
    names_a, names_b = [], []
    a.visit(names_a.append)
    b.visit(names_b.append)
    assert names_a == names_b
    assert dict(a.attrs) == dict(b.attrs)
    for name in names_a:
        x, y = a[name], b[name]
        assert dict(x.attrs).keys() == dict(y.attrs).keys()
        for k in x.attrs:
            assert np.array_equal(x.attrs[k], y.attrs[k]) and \
                x.attrs.get_id(k).dtype == y.attrs.get_id(k).dtype
        if isinstance(x, h5py.Dataset):
            assert (x.shape, x.dtype, x.chunks, x.compression, x.compression_opts, x.shuffle,
                    x.fillvalue, x.maxshape) == (y.shape, y.dtype, y.chunks, y.compression,
                                                 y.compression_opts, y.shuffle, y.fillvalue,
                                                 y.maxshape), name
            if name not in skip:
                assert np.array_equal(x[()], y[()]), name


def test_uint8_round_trip_keeps_layout_and_changes_only_what_the_method_changed(tmp_path):
    images = rgb_images(10)
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, images, np.array([b"ann", b"bob"] * 5), group="train",
                 chunks=(4, 32, 40, 3), compression="gzip", compression_opts=4, shuffle=True,
                 fillvalue=7)
    assert run_job(src, out) == {"ok": 10, "no_face": 0, "skipped": 0, "failed": 0}
    expected = images.copy()
    expected[:, :8, :8] = 255
    with h5py.File(src) as a, h5py.File(out) as b:
        assert_same_objects(a, b, skip=("train/images",))
        assert np.array_equal(b["train/images"][()], expected)
    lines = [json.loads(x) for x in (tmp_path / "out.h5.private" / "manifest.jsonl").read_text().splitlines()]
    assert [r["path"] for r in lines] == [f"train/images/{i:06d}.bmp" for i in range(10)]
    settings = json.loads((tmp_path / "out.h5.private" / "run.json").read_text())["settings"]["array_archive"]
    assert settings["dataset"] == "train/images" and settings["order"] == "NHWC"
    assert settings["value_range"] == [0, 255] and settings["range_rule"] == "dtype uint8"
    assert [d["dataset"] for d in settings["identifying_datasets"]] == ["train/labels"]
    assert settings["label_hook"] == "copy", "default: copied as is, and listed"
    assert not (tmp_path / "out.h5.staging").exists()


def test_entries_carry_labels_for_eval_and_unpack_to_a_folder_works(tmp_path):
    src = tmp_path / "in.h5"
    make_archive(src, rgb_images(4), np.array([10, 11, 10, 12]))
    source = datasets.open_input(src)
    assert [e.label for e in source.entries()] == ["10", "11", "10", "12"]
    assert run_job(src, tmp_path / "folder")["ok"] == 4  # an array archive into a folder of BMPs
    assert sorted(p.name for p in (tmp_path / "folder" / "images").iterdir()) == \
        [f"{i:06d}.bmp" for i in range(4)]


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_float_minus_one_to_one_keeps_unchanged_pixels_exactly(tmp_path, order):
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (6, 3, 24, 20) if order == "NCHW" else (6, 24, 20, 3))
    images = images.astype(np.float32)
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, images, chunks=True, compression="gzip")
    run_job(src, out)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert_same_objects(a, b, skip=("images",))
        got = b["images"][()]
    hwc = np.moveaxis(got, 1, -1) if order == "NCHW" else got
    orig = np.moveaxis(images, 1, -1) if order == "NCHW" else images
    assert np.all(hwc[:, :8, :8] == 1.0), "painted white is +1 in [-1, 1]"
    assert np.array_equal(hwc[:, 8:], orig[:, 8:]), "untouched pixels bit for bit"
    settings = json.loads((tmp_path / "out.h5.private" / "run.json").read_text())["settings"]["array_archive"]
    assert settings["order"] == order and settings["value_range"] == [-1, 1]
    assert settings["range_rule"].startswith("float data: minimum -")


def test_float_range_rule_zero_to_one_and_attribute(tmp_path):
    images = np.random.default_rng(2).uniform(0, 1, (3, 20, 20, 3)).astype(np.float64)
    make_archive(tmp_path / "a.h5", images)
    layout = datasets.open_input(tmp_path / "a.h5").layout  # type: ignore[attr-defined]
    assert layout.value_range == (0.0, 1.0)
    with h5py.File(tmp_path / "a.h5", "a") as h5:
        h5["images"].attrs["value_range"] = [-1, 1]
    layout = datasets.open_input(tmp_path / "a.h5").layout  # type: ignore[attr-defined]
    assert layout.value_range == (-1.0, 1.0) and layout.range_rule == "value_range attribute"


@pytest.mark.parametrize("shape", [(5, 30, 28, 1), (5, 1, 30, 28), (5, 30, 28)])
def test_grayscale_round_trip(tmp_path, shape):
    images = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, images)
    run_job(src, out)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert_same_objects(a, b, skip=("images",))
        got = b["images"][()]
    expected = images.copy()
    if len(shape) == 3:
        expected[:, :8, :8] = 255
    elif shape[1] == 1:
        expected[:, :, :8, :8] = 255
    else:
        expected[:, :8, :8] = 255
    assert np.array_equal(got, expected)


def test_failed_rows_are_fill_never_the_original_and_are_retried(tmp_path):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    images = rgb_images(5)
    make_archive(src, images, chunks=(2, 32, 40, 3), fillvalue=3)

    def flaky(entry: Entry) -> Result:
        if entry.relpath.endswith("000002.bmp"):
            raise ValueError("boom")
        return paint_step(entry)

    assert run_job(src, out, flaky)["failed"] == 1
    with h5py.File(out) as b:
        assert np.all(b["images"][2] == 3)
        assert not np.array_equal(b["images"][1], images[1])


def test_a_path_that_is_not_a_row_fails_that_row(tmp_path):
    src = tmp_path / "in.h5"
    make_archive(src, rgb_images(3))
    sink = ArraySink(tmp_path / "out.h5", datasets.open_input(src))  # type: ignore[arg-type]
    for bad in ("images/000003.bmp", "x/000001.bmp", "images/1.bmp", "images/000001.png"):
        with pytest.raises(FaceanonError, match="not a row of images"):
            sink.write(bad, b"", None)
    assert sink.write("images/000002.bmp", b"", None) == "images/000002.bmp"


def test_label_hook_rewrites_identifying_datasets_and_is_recorded(tmp_path):
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, rgb_images(4), np.array([b"ann", b"bob", b"ann", b"cy"]))
    with h5py.File(src, "a") as h5:
        h5["person_id"] = np.arange(4) + 100

    class Pseudonyms:
        name = "test-pseudonyms"

        def __call__(self, dataset: str, values: np.ndarray) -> np.ndarray:
            if values.dtype.kind == "S":
                return np.array([v[::-1] for v in values], values.dtype)
            return values + 1000

    source = datasets.open_input(src, label_hook=Pseudonyms())
    assert isinstance(source, ArraySource)
    Job("test", source, out).run(paint_step)
    with h5py.File(out) as b:
        assert list(b["labels"][()]) == [b"nna", b"bob", b"nna", b"yc"]
        assert list(b["person_id"][()]) == [1100, 1101, 1102, 1103]
        assert np.array_equal(b["landmarks"][()], np.arange(40, dtype=np.float32).reshape(4, 5, 2))
    record = json.loads((tmp_path / "out.h5.private" / "run.json").read_text())["settings"]["array_archive"]
    assert record["label_hook"] == "test-pseudonyms"
    assert {d["dataset"]: d["why"] for d in record["identifying_datasets"]} == {
        "labels": ["name contains 'label'", "one value per image"],
        "person_id": ["name contains 'person'", "name contains 'id'", "one value per image"]}


def test_dataset_option_picks_one_of_several(tmp_path):
    src = tmp_path / "in.h5"
    make_archive(src, rgb_images(3), group="train")
    with h5py.File(src, "a") as h5:
        h5["test/images"] = rgb_images(2, seed=5)
    source = datasets.open_input(src, dataset="test/images")
    assert len(source) == 2 and [e.relpath for e in source.entries()] == \
        ["test/images/000000.bmp", "test/images/000001.bmp"]


# ------------------------------------------------------------------------------ bad archives

def _bad_archives(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Each bad archive and a piece of its expected one-line reason."""
    bad: dict[str, tuple[Path, str]] = {}
    p = tmp / "no4d.h5"
    with h5py.File(p, "w") as h5:
        h5["labels"] = np.arange(8)
        h5["embeddings"] = np.zeros((8, 128), np.float32)
    bad["no image dataset"] = (p, "no image array: expected a 4-D")
    p = tmp / "two.h5"
    with h5py.File(p, "w") as h5:
        h5["a/images"] = rgb_images(2)
        h5["b/images"] = rgb_images(2)
    bad["two candidates"] = (p, "several image arrays, name one with --dataset: "
                                "a/images (2, 32, 40, 3) uint8; b/images (2, 32, 40, 3) uint8")
    p = tmp / "int64.h5"
    with h5py.File(p, "w") as h5:
        h5["images"] = rgb_images(2).astype(np.int64)
    bad["int64"] = (p, "images has dtype int64; image arrays must be uint8 or float")
    p = tmp / "complex.h5"
    with h5py.File(p, "w") as h5:
        h5["images"] = rgb_images(2).astype(np.complex64)
    bad["complex"] = (p, "images has dtype complex64")
    p = tmp / "range.h5"
    with h5py.File(p, "w") as h5:
        h5["images"] = rgb_images(2).astype(np.float32)
    bad["float 0..255"] = (p, "float pixels span [")
    p = tmp / "truncated.h5"
    make_archive(p, rgb_images(8))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    bad["truncated"] = (p, "not a readable HDF5 file")
    p = tmp / "mismatch.h5"
    make_archive(p, rgb_images(8), np.arange(7))
    bad["labels mismatch"] = (p, "labels has 7 rows but images has 8 images")
    p = tmp / "not_h5.h5"
    p.write_bytes(b"hello")
    bad["not HDF5"] = (p, "not a readable HDF5 file")
    return bad


def test_bad_archives_give_one_line_and_write_nothing(tmp_path):
    for what, (path, reason) in _bad_archives(tmp_path).items():
        for args in (["anonymize", str(path), "--method", "blur", "--out", str(tmp_path / "out.h5")],
                     ["eval", str(path), "--orig", str(path), "--no-fid"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (what, args)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") \
                and reason in lines[0], (what, result.output)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")], "nothing written"


def test_dataset_option_errors(tmp_path):
    src = tmp_path / "in.h5"
    make_archive(src, rgb_images(2), np.arange(2))
    for name, reason in (("nope", "--dataset nope: no such dataset"),
                         ("labels", "--dataset labels (2,) int64: not an image array")):
        result = runner.invoke(app, ["eval", str(src), "--orig", str(src), "--dataset", name])
        assert result.exit_code == 2 and reason in result.output, result.output
    folder = tmp_path / "f"
    folder.mkdir()
    result = runner.invoke(app, ["eval", str(folder), "--orig", str(folder), "--dataset", "x"])
    assert result.exit_code == 2 and "--dataset applies to array archives only" in result.output


# ---------------------------------------------------------------------------- kill + resume

KILLABLE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from faceanon import datasets

    def slow_copy(entry):
        time.sleep(0.02)
        return datasets.copy_step(entry)

    datasets.Job("test", datasets.open_input(sys.argv[1]), Path(sys.argv[2])).run(slow_copy)
""")


@pytest.mark.slow
def test_sigkill_midway_then_rerun_does_every_row_exactly_once(tmp_path):
    n = 300
    images = np.random.default_rng(4).uniform(-1, 1, (n, 3, 24, 24)).astype(np.float32)
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, images, np.arange(n) % 7, chunks=(16, 3, 24, 24), compression="gzip")
    manifest_path = tmp_path / "out.h5.private" / "manifest.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(src), str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest_path.exists() and manifest_path.read_text().count("\n") >= 100:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "no partial archive"
    done_before = {json.loads(x)["path"] for x in manifest_path.read_text().splitlines()
                   if x.endswith("}")}
    assert 100 <= len(done_before) < n

    calls: list[str] = []

    def counting_copy(entry: Entry) -> Result:
        calls.append(entry.relpath)
        return datasets.copy_step(entry)

    assert run_job(src, out, counting_copy)["ok"] == n
    assert not set(calls) & done_before, "finished rows are not redone"
    assert len(calls) == len(set(calls)) == n - len(done_before)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert_same_objects(a, b)  # a copy step: every row back bit for bit


# ------------------------------------------------------------------------- every real method

@pytest.mark.slow
@pytest.mark.parametrize("method", ["blur", "pixelate", "ivfg", "kfaar"])
def test_every_method_on_an_nchw_float_archive_of_lfw_faces(lfw_sample, tmp_path, method):
    from faceanon import keys
    from faceanon.images import load_image

    files = sorted(lfw_sample.rglob("*.jpg"))[:3]
    images = np.stack([np.moveaxis(load_image(f), -1, 0) for f in files]).astype(np.float32)
    src, out = tmp_path / "in.h5", tmp_path / "out.h5"
    make_archive(src, images / 127.5 - 1, np.array([f.parent.name for f in files], "S"),
                 chunks=(2, 3, 250, 250), compression="gzip")
    keys.save(keys.generate(256), tmp_path / "k.bin")
    result = runner.invoke(app, ["anonymize", str(src), "--out", str(out), "--method", method,
                                 "--key", str(tmp_path / "k.bin"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["ok"] == 3
    with h5py.File(src) as a, h5py.File(out) as b:
        assert_same_objects(a, b, skip=("images", "labels"))
        before, after = a["images"][()], b["images"][()]
        names, pseudonyms = list(a["labels"][:]), list(b["labels"][:])
    assert len(set(pseudonyms)) == len(set(names)) and not set(names) & set(pseudonyms)
    centre = (slice(None), slice(None), slice(100, 150), slice(100, 150))
    assert np.abs(after[centre] - before[centre]).mean() > 8 / 127.5, "faces replaced"
    assert after.min() >= -1 and after.max() <= 1


def test_anonymize_pseudonymizes_identifying_datasets_and_keeps_the_rest(tmp_path: Path) -> None:
    """Through the real job with --method blur: labels and ids become keyed pseudonyms (same
    value → same pseudonym, so grouping survives), other per-image data is copied."""
    from faceanon import keys
    from faceanon.anonymize import build_anonymizer, run_anonymize

    src = tmp_path / "in.h5"
    labels = np.array([b"Ann_Smith", b"Bob_Jones", b"Ann_Smith"], dtype=object)
    make_archive(src, rgb_images(3), labels.astype("S32"))
    with h5py.File(src, "a") as h5:
        h5.create_dataset("person_id", data=np.array([17, 42, 17], np.int64))
        h5.create_dataset("split", data=np.array([0, 1, 0], np.int64))
    key_path = tmp_path / "k.bin"
    keys.save(keys.generate(), key_path)
    anonymizer = build_anonymizer("blur", key_path)
    run_anonymize(src, tmp_path / "out.h5", anonymizer)
    with h5py.File(src) as a, h5py.File(tmp_path / "out.h5") as b:
        out_labels = b["labels"][:]
        assert out_labels[0] == out_labels[2] != out_labels[1]
        assert not {bytes(v) for v in out_labels} & {b"Ann_Smith", b"Bob_Jones"}
        ids = b["person_id"][:]
        assert ids[0] == ids[2] != ids[1] and not set(ids) & {17, 42}
        np.testing.assert_array_equal(b["split"][:], a["split"][:])
        np.testing.assert_array_equal(b["landmarks"][:], a["landmarks"][:])
    run = json.loads((tmp_path / "out.h5.private" / "run.json").read_text())
    assert run["settings"]["array_archive"]["label_hook"] == "pseudonymize"

    short = tmp_path / "short.h5"  # |S18: pseudonyms are cut to fit, and stay distinct
    make_archive(short, rgb_images(3), np.array([b"Annabel_Smith_0001", b"Robert_Jones_0001",
                                                 b"Annabel_Smith_0002"], dtype="S"))
    run_anonymize(short, tmp_path / "short-out.h5", anonymizer)
    with h5py.File(tmp_path / "short-out.h5") as b:
        cut = [bytes(v).decode() for v in b["labels"][:]]
        assert [len(c) for c in cut] == [18] * 3 and cut[0][:13] == cut[2][:13] != cut[1][:13]
        assert cut[0].endswith("_0001") and not any("Smith" in c or "Jones" in c for c in cut)

    narrow = tmp_path / "narrow.h5"
    make_archive(narrow, rgb_images(3), np.array([b"Ann", b"Bob", b"Ann"], dtype="S"))
    with pytest.raises(FaceanonError, match="too short for pseudonyms"):
        run_anonymize(narrow, tmp_path / "out2.h5", anonymizer)
    assert not (tmp_path / "out2.h5").exists() and not (tmp_path / "out2.h5.private").exists()
