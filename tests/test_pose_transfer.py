import numpy as np

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
