import numpy as np

import torch

from faceanon.landmarks import Landmarks68
from faceanon.nets.stylegan2 import Generator, preset
from faceanon.generators.stylegan2 import LatentPose, fit_latent_pose
from faceanon.pose_transfer import PoseBasis, fit_pose_basis, smooth_warp


def synthetic_shapes(seed: int = 0):
    """Shapes = mean + person-specific part (identity subspace) + per-photo part (pose subspace)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(136, 136)))
    ident_dirs, pose_dirs = q[:, :10], q[:, 10:16]
    mean = rng.normal(size=136) * 20
    shapes, labels = [], []
    for person in range(400):
        ident = ident_dirs @ rng.normal(size=10) * 3
        for _ in range(4):
            pose = pose_dirs @ rng.normal(size=6) * 3
            shapes.append(mean + ident + pose + rng.normal(size=136) * 0.05)
            labels.append(person)
    return np.array(shapes).reshape(-1, 68, 2), np.array(labels), ident_dirs, pose_dirs


def test_basis_separates_pose_from_identity():
    shapes, labels, ident_dirs, pose_dirs = synthetic_shapes()
    basis = fit_pose_basis(shapes, labels, size=128)
    pose = (pose_dirs @ np.arange(1, 7)).reshape(68, 2)
    ident = (ident_dirs @ np.arange(1, 11)).reshape(68, 2)
    assert np.allclose(basis.pose_part(pose, 128), pose, atol=0.1 * np.abs(pose).max())
    assert np.abs(basis.pose_part(ident, 128)).max() < 0.05 * np.abs(ident).max()
    again = PoseBasis.from_state_dict(basis.state_dict())
    assert np.allclose(again.pose_part(pose, 128), basis.pose_part(pose, 128), atol=1e-3)


def test_pose_part_scales_with_crop_size():
    shapes, labels, _, pose_dirs = synthetic_shapes(1)
    basis = fit_pose_basis(shapes, labels, size=128)
    pose = (pose_dirs @ np.ones(6)).reshape(68, 2)
    assert np.allclose(basis.pose_part(pose / 2, 64), basis.pose_part(pose, 128) / 2, atol=1e-6)


def test_warp_moves_landmarks_and_pins_the_border():
    y, x = np.mgrid[0:128, 0:128]
    image = np.zeros((128, 128, 3), np.uint8)
    image[((x - 40) ** 2 + (y - 60) ** 2) < 36] = 255  # a dot at (40, 60)
    src = np.array([[40.0, 60.0], [90.0, 60.0], [64.0, 100.0]])
    dst = src + np.array([[8.0, -5.0], [0.0, 0.0], [0.0, 0.0]])
    out = smooth_warp(image, src, dst)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert 46 < xs.mean() < 48.5 and 54.5 < ys.mean() < 56.5, "the dot follows its landmark"
    ramp = np.repeat(np.linspace(0, 255, 128)[None, :, None], 128, 0).repeat(3, 2).astype(np.uint8)
    moved = smooth_warp(ramp, src, dst)
    assert np.abs(moved[0].astype(int) - ramp[0]).max() <= 2, "border rows stay in place"


def test_latent_shift_poses_through_the_response_and_ignores_face_shape():
    shapes, labels, ident_dirs, pose_dirs = synthetic_shapes(2)
    basis = fit_pose_basis(shapes, labels, size=128)
    rng = np.random.default_rng(0)
    response = rng.normal(size=(136, 32))  # landmarks move by response @ dw
    latent = LatentPose(response, max_norm=1e6, ridge=1e-6)
    virtual = shapes[0]
    pose = (pose_dirs @ rng.normal(size=6)).reshape(68, 2)
    dw = latent.shift(basis, [virtual + pose], [virtual], 128)[0]
    moved = (response @ dw).reshape(68, 2)
    assert np.abs(basis.pose_part(moved - pose, 128)).max() < 0.05 * np.abs(pose).max()
    ident = (ident_dirs @ rng.normal(size=10)).reshape(68, 2)
    assert np.linalg.norm(latent.shift(basis, [virtual + ident], [virtual], 128)) < \
        0.1 * np.linalg.norm(dw), "another face shape is not a pose to copy"
    capped = LatentPose(response, max_norm=0.01, ridge=1e-6).shift(basis, [virtual + pose], [virtual], 128)
    assert np.linalg.norm(capped) <= 0.01 + 1e-9
    both = latent.shift(basis, [virtual + pose, virtual], [virtual, virtual], 128)
    assert np.array_equal(both[0], dw) and not both[1].any(), "face by face, batch-independent"


def test_fit_latent_pose_on_a_small_generator():
    torch.manual_seed(0)
    g = Generator(preset("tiny")).eval()
    shapes, labels, _, _ = synthetic_shapes(3)
    basis = fit_pose_basis(shapes, labels, size=128)
    latent, report = fit_latent_pose(g, Landmarks68(), basis, 0.8, "faceanon", 128, n=60)
    assert latent.response.shape == (136, g.cfg.w_dim) and latent.max_norm > 0
    # A random tiny generator has no pose to learn: only that the held-out fit is reported.
    assert report["faces"] == 60 and all(np.isfinite(report[k]) for k in ("r2_landmarks", "r2_pose_part"))
    again = LatentPose.from_state_dict(latent.state_dict())
    assert np.allclose(again.response, latent.response, atol=1e-4)


def test_the_warp_field_is_the_gaussian_average_of_the_landmark_shifts():
    """Read through a coordinate image (bilinear sampling of a linear ramp is exact), the warp's
    field at each pixel p is sum_i w_i(p) (src_i - dst_i) / (sum_i w_i(p) + e^-2), w_i(p) =
    exp(-|p - dst_i|^2 / (2 (0.08 W)^2)): the separable computation changes nothing."""
    rng = np.random.default_rng(3)
    src = rng.uniform(30, 98, (68, 2))
    dst = src + rng.normal(0, 3, (68, 2))
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    coords = np.stack([x, y, np.zeros_like(x)], -1)
    sampled = smooth_warp(coords, src, dst)[..., :2]
    pixels = np.stack([x.ravel(), y.ravel()], 1).astype(np.float64)
    w = np.exp(-((pixels[:, None] - dst[None]) ** 2).sum(-1) / (2 * (0.08 * 128) ** 2))
    field = (w @ (src - dst)) / (w.sum(1, keepdims=True) + np.exp(-2.0))
    inner = ((pixels + field >= 1) & (pixels + field <= 126)).all(1)  # no border reflection
    assert inner.mean() > 0.9
    assert np.abs(sampled.reshape(-1, 2)[inner] - (pixels + field)[inner]).max() < 1e-2


def test_a_virtual_face_reposed_again_reuses_its_landmarks(monkeypatch):
    """Every frame of a clip's track re-poses one virtual face: its 68 landmarks are found once,
    and the warp is the one a fresh LandmarkWarp gives."""
    from faceanon.keys import Key
    from faceanon.models import create_model, registry_entry
    from faceanon.pose_transfer import LandmarkWarp

    basis = create_model("pose-basis", registry_entry("pose-basis")["name"])
    generator = create_model("face-generator")
    virtual = generator.generate(np.random.default_rng(1).normal(size=(1, 128)),
                                 Key(bytes(range(32)), 0))[0]
    originals = generator.generate(np.random.default_rng(2).normal(size=(2, 128)),
                                   Key(bytes(32), 0))  # two other faces, as originals
    warp = LandmarkWarp(basis, Landmarks68(), generator.template)
    found: list[int] = []
    landmarks = warp.landmarks
    monkeypatch.setattr(warp, "landmarks", lambda crop: found.append(1) or landmarks(crop))
    first, second = warp(virtual, originals[0]), warp(virtual, originals[1])
    assert len(found) == 3, "the virtual face's landmarks once, each original's once"
    fresh = LandmarkWarp(basis, Landmarks68(), generator.template)
    assert np.array_equal(second, fresh(virtual, originals[1]))
    assert np.array_equal(first, fresh(virtual, originals[0]))


def test_held_landmarks_stand_for_an_originals_own_until_released():
    """A clip's track holds its originals' landmarks smoothed over time: the warp takes the
    held ones for that crop, and reads the crop again once they are released."""
    from faceanon.keys import Key
    from faceanon.models import create_model, registry_entry
    from faceanon.memo import content_key
    from faceanon.pose_transfer import LandmarkWarp

    basis = create_model("pose-basis", registry_entry("pose-basis")["name"])
    generator = create_model("face-generator")
    virtual = generator.generate(np.random.default_rng(1).normal(size=(1, 128)),
                                 Key(bytes(range(32)), 0))[0]
    a, b = generator.generate(np.random.default_rng(2).normal(size=(2, 128)), Key(bytes(32), 0))
    warp = LandmarkWarp(basis, Landmarks68(), generator.template)
    own_a, own_b = warp(virtual, a), warp(virtual, b)
    assert not np.array_equal(own_a, own_b)
    warp.hold([content_key(a)], warp.landmarks(b)[None])
    assert np.array_equal(warp(virtual, a), own_b), "a's warp with b's landmarks held for it"
    warp.release()
    assert np.array_equal(warp(virtual, a), own_a)
