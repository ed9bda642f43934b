"""The weight registry: register, checked loading, refusals, and the shipped manifest itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from faceanon import weights
from faceanon.errors import FaceanonError
from faceanon.models import create_model
from faceanon.nets.stylegan2 import Generator, StyleGANConfig, preset

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def saved_state(tmp_path: Path) -> Path:
    path = tmp_path / "src.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    return path


def test_register_and_load_round_trip(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    entry = weights.register("toy", "generator", saved_state(tmp_path), wdir, resolution=16,
                             fid=None)
    assert entry["file"] == "toy.pt" and len(entry["sha256"]) == 64
    assert json.loads((wdir / "manifest.json").read_text())["models"] == [entry]
    assert torch.equal(weights.load_weights("toy", wdir)["w"], torch.arange(4.0))
    weights.register("toy", "generator", saved_state(tmp_path), wdir, resolution=32)
    assert [m["resolution"] for m in weights.entries(wdir)] == [32]  # replaced, not duplicated


def test_sha256_mismatch_and_missing_file_are_refused(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    weights.register("toy", "generator", saved_state(tmp_path), wdir)
    with open(wdir / "toy.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(FaceanonError, match="SHA-256 mismatch"):
        weights.load_weights("toy", wdir)
    (wdir / "toy.pt").unlink()
    with pytest.raises(FaceanonError, match="missing"):
        weights.load_weights("toy", wdir)
    with pytest.raises(FaceanonError, match="no weights named 'other'.*toy"):
        weights.load_weights("other", wdir)


def test_default_entry_and_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEANON_WEIGHTS", str(tmp_path / "env"))
    assert weights.weights_dir() == tmp_path / "env"
    with pytest.raises(FaceanonError, match="no generator weights"):
        weights.default_entry("generator")
    weights.register("a", "generator", saved_state(tmp_path))
    weights.register("b", "generator", saved_state(tmp_path), default=True)
    assert weights.default_entry("generator")["name"] == "b"
    weights.register("c", "generator", saved_state(tmp_path), default=True)
    assert [m.get("default", False) for m in weights.entries()] == [False, False, True]


def test_bad_manifest_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"models": [{"name": "x"}]}')
    with pytest.raises(FaceanonError, match="lacks kind, file, sha256"):
        weights.entries(tmp_path)
    (tmp_path / "manifest.json").write_text("not json")
    with pytest.raises(FaceanonError, match="unreadable weights manifest"):
        weights.entries(tmp_path)


def test_create_model_builds_a_generator_from_an_fp16_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEANON_WEIGHTS", str(tmp_path))
    cfg = preset("tiny", resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32)
    g = Generator(cfg).eval()
    torch.save({k: v.half() for k, v in g.state_dict().items()}, tmp_path / "g.pt")
    weights.register("g16", "generator", tmp_path / "g.pt", arch=cfg.to_dict(), default=True)
    loaded = create_model("generator")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    z = torch.randn(2, cfg.z_dim)
    torch.testing.assert_close(loaded(z), g(z), atol=0.02, rtol=0.02)


def test_shipped_manifest_is_consistent() -> None:
    """Every shipped weight file exists, matches its SHA-256, is small, and generators load."""
    if not (REPO_WEIGHTS / "manifest.json").exists():
        pytest.skip("no weights/manifest.json in this checkout")
    for m in weights.entries(REPO_WEIGHTS):
        assert (REPO_WEIGHTS / m["file"]).stat().st_size <= 15 * 2**20
        state = weights.load_weights(m["name"], REPO_WEIGHTS)  # checks the SHA-256
        if m["kind"] == "generator":
            assert {"resolution", "trained_on", "kimg", "fid", "arch"} <= set(m)
            g = Generator(StyleGANConfig.from_dict(m["arch"]))
            g.load_state_dict({k: v.float() for k, v in state.items()})
            assert g(torch.randn(1, g.cfg.z_dim)).shape[-1] == m["resolution"]


def test_weights_dir_finds_a_wheel_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a checkout beside the package, the weights are where the wheel put them:
    ``<prefix>/share/faceanon/weights``."""
    monkeypatch.delenv("FACEANON_WEIGHTS", raising=False)
    assert weights.weights_dir() == REPO_WEIGHTS  # this checkout
    monkeypatch.setattr(weights, "CHECKOUT", tmp_path / "site-packages" / "weights")
    monkeypatch.setattr(weights.sysconfig, "get_path", lambda name, scheme: str(tmp_path / scheme))
    assert weights.weights_dir() == weights.CHECKOUT, "nothing installed: the empty registry"
    installed = tmp_path / weights.sysconfig.get_default_scheme() / "share" / "faceanon" / "weights"
    installed.mkdir(parents=True)
    (installed / "manifest.json").write_text('{"models": []}')
    assert weights.weights_dir() == installed


def test_the_wheel_ships_every_registered_file() -> None:
    """pyproject's data-files put every file of the shipped manifest into the wheel."""
    import tomllib

    project = tomllib.loads((REPO_WEIGHTS.parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["data-files"]["share/faceanon/weights"]
    shipped = {p.name for pattern in patterns for p in REPO_WEIGHTS.parent.glob(pattern)}
    assert {"manifest.json"} | {m["file"] for m in weights.entries(REPO_WEIGHTS)} <= shipped
