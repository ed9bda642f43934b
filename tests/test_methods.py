"""The method registry: a new method is one class and one registration, and the real pipeline
(``faceanon anonymize``) takes it by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO
from faceanon.cli import app
from faceanon.errors import FaceanonError
from faceanon.images import load_image
from faceanon.methods import all_methods, get_method, register, registry
from faceanon.methods.aligned import AlignedReplacer
from faceanon.methods.base import MethodSetup

runner = CliRunner()
EXAMPLES = REPO / "examples" / "images"


class GreyFaces(AlignedReplacer):
    """A test-only method: every face painted mid-grey."""

    match_colour = False
    template, crop_size = "faceanon", 128

    def new_faces(self, crops: np.ndarray, identities: np.ndarray, attempt: int) -> np.ndarray:
        return np.full_like(crops, 128)


@pytest.fixture
def grey(monkeypatch: pytest.MonkeyPatch) -> None:
    """``grey`` registered for this test only."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @register("grey", "every face painted grey")
    def build(setup: MethodSetup) -> GreyFaces:
        return GreyFaces()


def test_the_shipped_methods_are_registered_in_order() -> None:
    assert [m.name for m in all_methods()] == ["kfaar", "ivfg", "blur", "pixelate", "obfuscate"]
    assert get_method("obfuscate").options == ("strength",)
    with pytest.raises(FaceanonError, match="unknown method 'paint'; choose one of kfaar, ivfg"):
        get_method("paint")
    with pytest.raises(ValueError, match="registered twice"):
        register("blur", "again")(lambda setup: GreyFaces())


def test_a_registered_method_runs_through_the_pipeline(grey: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["anonymize", str(EXAMPLES), "--out", str(out), "--method", "grey",
                              "--keep-names", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["ok"] == 2
    private = out.with_name(out.name + ".private")
    assert json.loads((private / "run.json").read_text())["settings"]["method"] == "grey"
    records = {r["path"]: r for r in map(json.loads,
                                          (private / "manifest.jsonl").read_text().splitlines())}
    face = records["astronaut.jpg"]["faces"][0]
    assert "flag" not in face
    x1, y1, x2, y2 = face["box"]
    cx, cy = round((x1 + x2) / 2), round((y1 + y2) / 2)
    centre = load_image(out / "astronaut.jpg")[cy - 10:cy + 10, cx - 10:cx + 10].astype(int)
    assert np.abs(centre - 128).max() <= 3  # the JPEG's rounding


def test_a_method_registered_by_a_test_is_gone_after_it(tmp_path: Path) -> None:
    res = runner.invoke(app, ["anonymize", str(EXAMPLES), "--out", str(tmp_path / "o"),
                              "--method", "grey", "--keep-names"])
    assert res.exit_code == 2 and "unknown method 'grey'" in res.output
