import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import BAD_CORPUS
from faceanon import datasets, images
from faceanon.cli import app
from faceanon.errors import FaceanonError

runner = CliRunner()


def manifest(path: Path) -> dict[str, dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    by_path = {r["path"]: r for r in recs}
    assert len(by_path) == len(recs), "one manifest line per input"
    return by_path


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def private(out: Path) -> Path:
    """Where a job keeps its manifest and run record: beside its output, never inside."""
    return out.with_name(out.name + ".private")


def test_pack_unpack_round_trip_is_byte_identical(lfw_sample, tmp_path):
    archive = tmp_path / "set.h5"
    res = runner.invoke(app, ["pack", str(lfw_sample), str(archive), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["ok"] == 7
    with h5py.File(archive) as h5:
        assert h5.attrs["faceanon_format"] == "images" and h5.attrs["format_version"] == 1
        assert list(h5["labels"].asstr()[:]).count("Colin_Powell") == 3
    res = runner.invoke(app, ["unpack", str(archive), str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    assert tree(tmp_path / "back") == tree(lfw_sample), "nothing but the images in the output"
    for out in (archive, tmp_path / "back"):
        records = private(out)
        assert sorted(p.name for p in records.iterdir()) == ["manifest.jsonl", "run.json"]
        assert records.stat().st_mode & 0o777 == 0o700
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in records.iterdir())
    labels = {e.relpath: e.label for e in datasets.open_input(archive).entries()}
    assert labels["Colin_Powell/Colin_Powell_0002.jpg"] == "Colin_Powell"


def test_output_inside_input_and_existing_archive_are_refused(lfw_sample, tmp_path):
    res = runner.invoke(app, ["unpack", str(tmp_path / "missing.h5"), str(tmp_path / "x")])
    assert res.exit_code == 2 and "input not found" in res.output
    res = runner.invoke(app, ["pack", str(lfw_sample), str(lfw_sample / "inside.h5")])
    assert res.exit_code == 2 and "inside" in res.output
    before = tree(lfw_sample)
    archive = tmp_path / "a.h5"
    assert runner.invoke(app, ["pack", str(lfw_sample), str(archive)]).exit_code == 0
    res = runner.invoke(app, ["pack", str(lfw_sample), str(archive)])
    assert res.exit_code == 2 and "already exists" in res.output
    assert tree(lfw_sample) == before, "inputs are never written"


def test_a_record_whose_output_was_deleted_is_refused_not_resumed(lfw_sample, tmp_path):
    """Records live beside the output: deleting the output alone must not make a re-run skip
    every image and report success over an empty output."""
    archive, folder = tmp_path / "set.h5", tmp_path / "back"
    assert runner.invoke(app, ["pack", str(lfw_sample), str(archive)]).exit_code == 0
    assert runner.invoke(app, ["unpack", str(archive), str(folder)]).exit_code == 0
    shutil.rmtree(folder)
    res = runner.invoke(app, ["unpack", str(archive), str(folder)])
    assert res.exit_code == 2 and "output is missing" in res.output and not folder.exists()
    shutil.rmtree(private(folder))
    assert runner.invoke(app, ["unpack", str(archive), str(folder)]).exit_code == 0
    assert tree(folder) == tree(lfw_sample)
    archive.unlink()
    res = runner.invoke(app, ["pack", str(lfw_sample), str(archive)])
    assert res.exit_code == 2 and "output is missing" in res.output and not archive.exists()


def bad_folder(tmp_path: Path) -> Path:
    """The committed corpus plus the cases only a live file system can hold."""
    root = tmp_path / "bad"
    shutil.copytree(BAD_CORPUS, root)
    os.symlink("loop_b.jpg", root / "loop_a.jpg")
    os.symlink("loop_a.jpg", root / "loop_b.jpg")
    os.symlink("missing.png", root / "dangling.png")
    os.symlink(".", root / "self_dir")
    (root / "folder.jpg").mkdir()
    Image.new("RGB", (20, 30), (200, 10, 10)).save(os.fsencode(root) + b"/caf\xe9_latin1.png")
    return root


EXPECTED = {
    "zero_bytes.jpg": ("failed", "empty file"),
    "truncated.jpg": ("failed", "corrupt image"),
    "text_named.jpg": ("failed", "not a recognised image format"),
    "huge_header.png": ("failed", "image too large"),
    "animated.webp": ("failed", "animated image"),
    "loop_a.jpg": ("failed", "symbolic links"),
    "dangling.png": ("failed", "No such file"),
    "notes.txt": ("skipped", "not an image"),
    "self_dir": ("skipped", "not followed"),
    "sixteen_bit.png": ("ok", None),
    "cmyk.jpg": ("ok", None),
    "grayscale.png": ("ok", None),
    "rgba.png": ("ok", None),
    "palette.png": ("ok", None),
    "exif_rotated.jpg": ("ok", None),
    "caf\udce9_latin1.png": ("ok", None),
}


def test_bad_inputs_each_get_a_manifest_line_and_the_run_continues(tmp_path):
    root = bad_folder(tmp_path)
    res = runner.invoke(app, ["pack", str(root), str(tmp_path / "bad.h5"), "--json"])
    assert res.exit_code == 1, "some inputs failed → exit 1"
    lines = manifest(private(tmp_path / "bad.h5") / "manifest.jsonl")
    assert "folder.jpg" not in lines  # a folder is walked into, not read
    for name, (status, reason) in EXPECTED.items():
        assert lines[name]["status"] == status, (name, lines[name])
        if reason:
            assert reason in lines[name]["reason"], (name, lines[name])
    names = {e.relpath for e in datasets.open_input(tmp_path / "bad.h5").entries()}
    assert names == {n for n, (s, _) in EXPECTED.items() if s == "ok"}


def test_unreadable_file_is_reported(tmp_path):
    """Run as an unprivileged user (root reads files whatever their mode)."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    work = Path(tempfile.mkdtemp(prefix="faceanon-perm-"))
    try:
        os.chmod(work, 0o777)
        (work / "in").mkdir(mode=0o755)
        Image.new("RGB", (8, 8)).save(work / "in" / "secret.png")
        Image.new("RGB", (8, 8)).save(work / "in" / "open.png")
        os.chmod(work / "in" / "secret.png", 0)
        os.chmod(work / "in" / "open.png", 0o644)
        proc = subprocess.run(as_user + [sys.executable, "-m", "faceanon", "pack",
                                         str(work / "in"), str(work / "l.h5")],
                              capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        lines = manifest(private(work / "l.h5") / "manifest.jsonl")
        assert "Permission denied" in lines["secret.png"]["reason"]
        assert lines["open.png"]["status"] == "ok"
    finally:
        shutil.rmtree(work)


def test_decoding_normalises_pixels_and_encoding_drops_metadata():
    upright = images.load_image(BAD_CORPUS / "exif_rotated.jpg")
    assert upright.shape == (48, 64, 3), "EXIF orientation 6 turns 64x48 into 48x64"
    for name in ("sixteen_bit.png", "cmyk.jpg", "grayscale.png", "rgba.png", "palette.png"):
        arr = images.load_image(BAD_CORPUS / name)
        assert arr.dtype == np.uint8 and arr.shape == (64, 48, 3), name
    data = images.encode(upright, "x.jpg")
    im = Image.open(__import__("io").BytesIO(data))
    assert not im.getexif() and "exif" not in im.info and "xmp" not in im.info
    with pytest.raises(FaceanonError, match="cannot write"):
        images.encode(upright, "x.tiff")


def _make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    for i in range(n):
        sub = root / f"p{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(sub / f"{i:05d}.png")


def _kill_midway(cmd: list[str], manifest_path: Path, lines: int) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest_path.exists() and manifest_path.read_text().count("\n") >= lines:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed; raise n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes_exactly_once(tmp_path):
    n = 1500
    src = tmp_path / "src"
    _make_images(src, n)
    archive = tmp_path / "a.h5"
    cli = [sys.executable, "-m", "faceanon"]
    _kill_midway(cli + ["pack", str(src), str(archive)], private(archive) / "manifest.jsonl", 300)
    assert not archive.exists(), "no partial archive"
    done_before = len(manifest(private(archive) / "manifest.jsonl"))
    assert 300 <= done_before < n
    subprocess.run(cli + ["pack", str(src), str(archive)], check=True, capture_output=True)
    with h5py.File(archive) as h5:
        names = [bytes(x).decode() for x in h5["names"][:]]
    assert len(names) == len(set(names)) == n
    assert not (tmp_path / "a.h5.staging").exists()

    out = tmp_path / "out"
    _kill_midway(cli + ["unpack", str(archive), str(out)], private(out) / "manifest.jsonl", 300)
    subprocess.run(cli + ["unpack", str(archive), str(out)], check=True, capture_output=True)
    assert tree(out) == tree(src), "every image present exactly once, byte-identical"
    assert len(manifest(private(out) / "manifest.jsonl")) == n
    assert not [p for p in out.rglob(".*")], "no temporary files left"
