"""--method obfuscate on examples/images: the face changed for people, still matched by the
project's recognizer, deterministic under the key, the post-check inverted."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO
from faceanon import keys
from faceanon.anonymize import build_anonymizer
from faceanon.cli import app
from faceanon.identity import cosine_similarity
from faceanon.images import load_image

runner = CliRunner()
ASTRONAUT = REPO / "examples" / "images" / "astronaut.jpg"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("obfuscate") / "k.bin"
    keys.save(keys.Key(bytes(range(32)), 0), path)
    return path


@pytest.mark.slow
def test_obfuscated_face_is_changed_but_still_matched_and_deterministic(key_file) -> None:
    anonymizer = build_anonymizer("obfuscate", key_file, device="cpu")
    image = load_image(ASTRONAUT)
    faces = anonymizer.detector(image)
    assert len(faces) == 1
    out, report = anonymizer.replace_faces({0: image}, {0: faces})[0]
    again, _ = anonymizer.replace_faces({0: image}, {0: faces})[0]
    assert np.array_equal(out, again)
    assert "flag" not in report["faces"][0]
    rec = anonymizer.recognizer
    lm = faces[0].landmarks5[None]
    assert cosine_similarity(rec.embed_faces(out, lm), rec.embed_faces(image, lm))[0] \
        > rec.match_threshold
    x1, y1, x2, y2 = (int(v) for v in faces[0].box)
    before, after = (im[y1:y2, x1:x2].astype(np.float64).mean(2) for im in (image, out))
    detail = lambda g: np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()
    assert detail(after) < 0.5 * detail(before)   # the fine detail people recognise is gone
    assert np.array_equal(out[: y1 - 60], image[: y1 - 60])   # nothing far above the face


def test_post_check_is_inverted_for_obfuscate(key_file) -> None:
    anonymizer = build_anonymizer("obfuscate", key_file, device="cpu", strength=0.5)
    assert anonymizer.settings["strength"] == 0.5
    image = load_image(ASTRONAUT)
    faces = anonymizer.detector(image)
    batch = anonymizer._batch({0: image}, {0: faces})
    unchanged = anonymizer.post_check_fails({0: image}, batch)
    grey = anonymizer.post_check_fails({0: np.full_like(image, 128)}, batch)
    assert not unchanged.any() and grey.all()   # failing = no longer matching


def test_strength_is_checked(key_file, tmp_path) -> None:
    src = REPO / "examples" / "images"
    for args, reason in ((["--method", "blur", "--strength", "0.5"], "--strength is a setting"),
                         (["--method", "obfuscate", "--strength", "1.5"], "must be in (0, 1]")):
        res = runner.invoke(app, ["anonymize", str(src), "--key", str(key_file), "--out",
                                  str(tmp_path / "o"), *args])
        assert res.exit_code == 2 and reason in res.stderr and res.stderr.count("\n") == 1
