"""Outputs pinned: under a fixed key, every method's output files hash to the SHA-256 values in
``tests/data/pinned_outputs.json``, on ``examples/images`` (always) and on 20 LFW images (when
``../shared`` is there).

The pins were made before the pipeline was split into methods (issue 13), so a refactor that
changes any output byte fails here. A change meant to alter outputs updates the pins and says
why. The values hold for this project's CPU build of torch; another build or CPU may round a
generated face differently.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import faceanon
from conftest import REPO
from faceanon import keys
from faceanon.anonymize import build_anonymizer, run_anonymize
from faceanon.images import encode, load_image

PINS = json.loads((REPO / "tests" / "data" / "pinned_outputs.json").read_text())
KEY = keys.Key(bytes(range(32)), 0)
METHODS = ("kfaar", "ivfg", "blur", "pixelate", "obfuscate")
SLOW_ON_LFW = ("kfaar", "obfuscate")  # 7 s and 23 s for the 20 images on a busy 2-core CPU


def output_hashes(source: Path, method: str, tmp_path: Path) -> dict[str, str]:
    """SHA-256 of every file that ``faceanon anonymize`` writes for ``source``, by path."""
    key_path = tmp_path / "k.bin"
    keys.save(KEY, key_path)
    out = tmp_path / "out"
    run_anonymize(source, out, build_anonymizer(method, key_path, device="cpu"), keep_names=True)
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("method", METHODS)
def test_examples_outputs_are_pinned(method: str, tmp_path: Path) -> None:
    got = output_hashes(REPO / "examples" / "images", method, tmp_path)
    assert got == PINS["examples"][method]


def test_the_library_entry_point_gives_the_dataset_jobs_outputs() -> None:
    """``faceanon.anonymize_image`` is the pipeline the dataset job runs: encoded as the job
    encodes, its images hash to the pinned files."""
    for name, method in (("astronaut.jpg", "kfaar"), ("cameraman.png", "pixelate"),
                         ("chelsea_cat.jpg", "blur")):
        image, report = faceanon.anonymize_image(load_image(REPO / "examples" / "images" / name),
                                                 KEY, method=method)
        assert hashlib.sha256(encode(image, name)).hexdigest() == PINS["examples"][method][name]
        assert len(report["faces"]) == (name != "chelsea_cat.jpg")
    cat = load_image(REPO / "examples" / "images" / "chelsea_cat.jpg")
    assert faceanon.anonymize_image(cat, KEY, "blur", no_face="skip") == (None, {"faces": []})


@pytest.mark.lfw
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_ON_LFW
                                    else m for m in METHODS])
def test_lfw_outputs_are_pinned(method: str, lfw: Path, tmp_path: Path) -> None:
    source = tmp_path / "lfw20"
    for relpath in PINS["lfw"][method]:
        (source / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw / "images" / relpath, source / relpath)
    assert len(PINS["lfw"][method]) == 20
    got = output_hashes(source, method, tmp_path)
    assert got == PINS["lfw"][method]
