"""StyleGAN2 networks: shapes, W/W+, truncation, determinism, state-dict round trip, precision."""

from __future__ import annotations

import io

import pytest
import torch

from faceanon.nets.stylegan2 import (PRESETS, Discriminator, Generator, StyleGANConfig,
                                     blur_downsample, preset)

# Smaller than "tiny" so each test builds in milliseconds.
CFG = preset("tiny", resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32)


def make(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return Generator(CFG).eval(), Discriminator(CFG).eval()


def test_shapes_and_num_ws() -> None:
    g, d = make()
    z = torch.randn(3, CFG.z_dim)
    img = g(z)
    assert img.shape == (3, 3, 16, 16)
    assert d(img).shape == (3, 1)
    assert g.styles(z).shape == (3, CFG.num_ws, CFG.w_dim)
    assert [PRESETS[p].num_ws for p in ("64", "128", "256")] == [10, 12, 14]
    assert PRESETS["128"].resolution == 128


def test_w_space_equals_broadcast_w_plus() -> None:
    g, _ = make()
    w = g.mapping(torch.randn(2, CFG.z_dim))
    a = g.synthesize(w)
    b = g.synthesize(w.unsqueeze(1).repeat(1, CFG.num_ws, 1))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="W\\+"):
        g.synthesize(torch.zeros(2, CFG.num_ws + 1, CFG.w_dim))


def test_w_plus_layers_matter() -> None:
    """Changing only the last W+ entry (the last ToRGB) changes the image."""
    g, _ = make()
    ws = g.styles(torch.randn(1, CFG.z_dim))
    ws2 = ws.clone()
    ws2[:, -1] = g.mapping(torch.randn(1, CFG.z_dim))
    assert not torch.allclose(g.synthesize(ws), g.synthesize(ws2))


def test_truncation_psi_zero_gives_mean_face() -> None:
    g, _ = make()
    g.mapping.w_avg.normal_()
    img = g(torch.randn(4, CFG.z_dim), psi=0.0)
    torch.testing.assert_close(img, img[:1].expand_as(img))
    full, half = g(torch.ones(1, CFG.z_dim)), g(torch.ones(1, CFG.z_dim), psi=0.5)
    assert not torch.allclose(full, half)


def test_seeded_determinism_and_noise_modes() -> None:
    g1, d1 = make(seed=3)
    g2, d2 = make(seed=3)
    z = torch.randn(2, CFG.z_dim)
    torch.testing.assert_close(g1(z), g2(z), rtol=0, atol=0)
    torch.testing.assert_close(d1(g1(z)), d2(g2(z)), rtol=0, atol=0)
    for layer in (g1.synthesis.b8.conv0, g1.synthesis.b16.conv1):
        layer.noise.strength.data.fill_(1.0)
    torch.testing.assert_close(g1(z), g1(z), rtol=0, atol=0)  # "const" noise is the default
    assert not torch.allclose(g1(z, noise_mode="random"), g1(z, noise_mode="random"))
    assert not torch.allclose(g1(z, noise_mode="none"), g1(z))


def test_state_dict_round_trip_and_stable_names() -> None:
    g, d = make(seed=1)
    buf = io.BytesIO()
    torch.save({"G": g.state_dict(), "D": d.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    g2, d2 = make(seed=2)
    g2.load_state_dict(state["G"])
    d2.load_state_dict(state["D"])
    z = torch.randn(2, CFG.z_dim)
    torch.testing.assert_close(g(z), g2(z), rtol=0, atol=0)
    torch.testing.assert_close(d(g(z)), d2(g(z)), rtol=0, atol=0)
    names = set(g.state_dict())
    for key in ("mapping.w_avg", "mapping.fc0.weight", "synthesis.b4.const",
                "synthesis.b4.conv1.conv.affine.weight", "synthesis.b8.conv0.noise.noise_const",
                "synthesis.b16.torgb.conv.weight"):
        assert key in names
    assert {"fromrgb.weight", "b16.skip.weight", "b4.out.weight"} <= set(d.state_dict())


def test_config_dict_round_trip() -> None:
    assert StyleGANConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown StyleGAN2 preset"):
        preset("512")


def test_mapping_tracks_w_avg_only_in_training() -> None:
    g, _ = make()
    before = g.mapping.w_avg.clone()
    g(torch.randn(4, CFG.z_dim))
    torch.testing.assert_close(g.mapping.w_avg, before)
    g.train()(torch.randn(4, CFG.z_dim), noise_mode="random")
    assert not torch.equal(g.mapping.w_avg, before)


def test_discriminator_gradient_for_r1() -> None:
    _, d = make()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    grad.square().sum().backward()  # second-order path works (lazy R1)


def test_blur_downsample_is_a_low_pass() -> None:
    x = torch.full((1, 2, 8, 8), 3.0)
    y = blur_downsample(x)
    assert y.shape == (1, 2, 4, 4)
    torch.testing.assert_close(y[..., 1:3, 1:3], torch.full((1, 2, 2, 2), 3.0))  # interior kept
    checker = (torch.arange(8).view(8, 1) + torch.arange(8)) % 2 * 2.0 - 1.0
    assert blur_downsample(checker.view(1, 1, 8, 8))[..., 1:3, 1:3].abs().max() < 1e-6


def test_channels_last_and_bf16_autocast() -> None:
    g, d = make()
    z = torch.randn(2, CFG.z_dim)
    ref = g(z)
    g_cl = g.to(memory_format=torch.channels_last)
    torch.testing.assert_close(g_cl(z), ref, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = g(z)
        logits = d(img)
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    assert (img.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 0.05
