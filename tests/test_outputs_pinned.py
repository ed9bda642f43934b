"""Outputs pinned: under a fixed key, every method's output files hash to the SHA-256 values in
``tests/data/pinned_outputs.json``, on ``examples/images`` (always) and on 20 LFW images (when
``../shared`` is there).

A refactor that changes any output byte fails here; a change meant to alter outputs re-pins
(``python tests/test_outputs_pinned.py``) and says why.

Byte-identical holds only where the networks compute the same floats: another CPU (AVX2 or
AVX-512 kernels, another BLAS path) or another thread count (torch splits reductions by
thread) rounds a generated face differently. So these tests run torch on one thread, as the
pins were made, and the pins carry a fingerprint of the float results (``numerics``). Where it
differs, the examples are compared by a 16×16 thumbnail of each output (mean difference at most
half a grey level, none over 24: obfuscate's optimisation moves a few cells by up to 6 levels
between thread counts, a changed face moves many by tens), and the LFW pins, which have no
thumbnails because nothing derived from LFW's pixels is committed, are skipped with the
reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import faceanon
from conftest import REPO, shared_dir
from faceanon import keys
from faceanon.anonymize import build_anonymizer, run_anonymize
from faceanon.images import encode, load_image

PINS_PATH = REPO / "tests" / "data" / "pinned_outputs.json"
PINS = json.loads(PINS_PATH.read_text())
KEY = keys.Key(bytes(range(32)), 0)
METHODS = ("kfaar", "ivfg", "blur", "pixelate", "obfuscate")
SLOW = ("kfaar", "obfuscate")  # the slowest on a busy 2-core CPU
EXAMPLES = REPO / "examples" / "images"
THUMB = 16  # side of the thumbnail
THUMB_MEAN, THUMB_MAX = 0.5, 24  # grey levels a thumbnail may differ by: on average, at most


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The pins' thread count, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def numerics() -> str:
    """A fingerprint of the float results of the networks that outputs go through (detector,
    recognizer, generator) on this machine and build."""
    import torch

    from faceanon.detect import Detector
    from faceanon.models import create_model, registry_entry

    image = load_image(EXAMPLES / "astronaut.jpg")
    faces = Detector()(image)
    embedding = create_model("recognizer", "dlib").embed_faces(
        image, np.array([f.landmarks5 for f in faces]))
    g = create_model("generator", registry_entry("generator")["name"])
    with torch.inference_mode():
        z = torch.randn(2, g.cfg.z_dim, generator=torch.Generator().manual_seed(0))
        made = g.synthesize(g.mapping(z, 0.8), "const").float().numpy()
    h = hashlib.sha256()
    for a in (np.array([f.box for f in faces]), embedding, made):
        h.update(np.ascontiguousarray(a, np.float32).tobytes())
    return h.hexdigest()[:16]


SAME_NUMERICS = None  # computed once, on first use


def same_numerics() -> bool:
    global SAME_NUMERICS
    if SAME_NUMERICS is None:
        SAME_NUMERICS = numerics() == PINS["numerics"]
    return SAME_NUMERICS


def thumbnail(path: Path) -> str:
    """A 16×16 colour thumbnail (area means) of an output image, as hex."""
    small = cv2.resize(load_image(path), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return small.astype(np.uint8).tobytes().hex()


def run_outputs(source: Path, method: str, tmp_path: Path) -> Path:
    """Run ``faceanon anonymize``'s job on ``source`` under the fixed key; returns OUT."""
    key_path = tmp_path / "k.bin"
    keys.save(KEY, key_path)
    out = tmp_path / "out"
    run_anonymize(source, out, build_anonymizer(method, key_path, device="cpu"), keep_names=True)
    return out


def files(out: Path) -> list[Path]:
    return [p for p in sorted(out.rglob("*")) if p.is_file()]


def hashes(out: Path) -> dict[str, str]:
    """SHA-256 of every file the job wrote, by relative path."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files(out)}


def thumbnails(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): thumbnail(p) for p in files(out)}


def thumbs_close(got: dict[str, str], pinned: dict[str, str]) -> bool:
    if set(got) != set(pinned):
        return False
    for name in got:
        diff = np.abs(np.frombuffer(bytes.fromhex(got[name]), np.uint8).astype(int)
                      - np.frombuffer(bytes.fromhex(pinned[name]), np.uint8))
        if diff.mean() > THUMB_MEAN or diff.max() > THUMB_MAX:
            return False
    return True


def lfw_input(lfw: Path, method: str, tmp_path: Path) -> Path:
    source = tmp_path / "lfw20"
    for relpath in PINS["lfw"][method]:
        (source / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw / "images" / relpath, source / relpath)
    return source


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW
                                    else m for m in METHODS])
def test_examples_outputs_are_pinned(method: str, tmp_path: Path) -> None:
    out = run_outputs(EXAMPLES, method, tmp_path)
    if same_numerics():
        assert hashes(out) == PINS["examples"][method]
    else:
        assert thumbs_close(thumbnails(out), PINS["examples_thumbnails"][method])


def test_the_library_entry_point_gives_the_dataset_jobs_outputs(tmp_path: Path) -> None:
    """``faceanon.anonymize_image`` is the pipeline the dataset job runs: encoded as the job
    encodes, its images are the job's files byte for byte."""
    for name, method in (("astronaut.jpg", "ivfg"), ("cameraman.png", "pixelate"),
                         ("chelsea_cat.jpg", "blur")):
        image, report = faceanon.anonymize_image(load_image(EXAMPLES / name), KEY, method=method)
        job_file = run_outputs(EXAMPLES, method, tmp_path / method) / name
        assert encode(image, name) == job_file.read_bytes()
        if same_numerics():
            assert hashlib.sha256(job_file.read_bytes()).hexdigest() == \
                PINS["examples"][method][name]
        assert len(report["faces"]) == (name != "chelsea_cat.jpg")
    cat = load_image(EXAMPLES / "chelsea_cat.jpg")
    assert faceanon.anonymize_image(cat, KEY, "blur", no_face="skip") == (None, {"faces": []})


@pytest.mark.lfw
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_lfw_outputs_are_pinned(method: str, lfw: Path, tmp_path: Path) -> None:
    if not same_numerics():
        pytest.skip("LFW outputs were pinned on a machine whose float results differ "
                    f"(numerics {PINS['numerics']}, here {numerics()})")
    assert len(PINS["lfw"][method]) == 20
    assert hashes(run_outputs(lfw_input(lfw, method, tmp_path), method, tmp_path)) == \
        PINS["lfw"][method]


def write_pins(tmp: Path) -> None:
    """Re-pin every method on this machine (run this file as a script)."""
    pins = {"numerics": numerics(), "examples": {}, "examples_thumbnails": {}, "lfw": {}}
    lfw = shared_dir() / "data" / "lfw"
    for method in METHODS:
        out = run_outputs(EXAMPLES, method, tmp / "examples" / method)
        pins["examples"][method], pins["examples_thumbnails"][method] = hashes(out), thumbnails(out)
        if (lfw / "images").is_dir():
            out = run_outputs(lfw_input(lfw, method, tmp / "lfw" / method), method,
                              tmp / "lfw" / method)
            pins["lfw"][method] = hashes(out)
        else:
            pins["lfw"][method] = PINS["lfw"][method]
    PINS_PATH.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        write_pins(Path(d))
    sys.stdout.write(f"wrote {PINS_PATH}\n")
