"""Generator training on a few real LFW faces: prepare, DiffAugment, resume, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceanon import weights
from faceanon.cli import app
from faceanon.errors import FaceanonError
from faceanon.models import create_model
from faceanon.lfw import read_people
from faceanon.training.aligned import load_aligned, prepare
from faceanon.training.generator import (CHECKPOINT, COMPACT, EXPORT, LOG, GeneratorTrainer,
                                         TrainConfig, diff_augment)

pytestmark = pytest.mark.lfw

# A generator small enough to train a few steps in about a second.
ARCH = {"resolution": 16, "channel_base": 256, "channel_max": 32, "z_dim": 32, "w_dim": 32}


def config(**kw: object) -> TrainConfig:
    return TrainConfig(**{"preset": "tiny", "arch": ARCH, "batch": 4, "r1_interval": 2,
                          "log_every": 1, "sample_every_kimg": 0.0,
                          "checkpoint_every_kimg": 0.0, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, lfw: Path) -> Path:
    """LFW → aligned archive of 2 people (prepare with a people list), 64-px crops."""
    tmp = tmp_path_factory.mktemp("aligned")
    src = tmp / "lfw"
    for person, n in (("Aaron_Peirsol", 4), ("Colin_Powell", 4), ("Serena_Williams", 2)):
        (src / person).mkdir(parents=True)
        for i in range(1, n + 1):
            name = f"{person}_{i:04d}.jpg"
            (src / person / name).write_bytes((lfw / "images" / person / name).read_bytes())
    people = tmp / "people.txt"
    people.write_text("2\nAaron_Peirsol\t4\nColin_Powell\t4\n")
    out = tmp / "aligned.h5"
    _, counts = prepare(src, out, size=64, people=people)
    assert counts["ok"] == 8 and counts["failed"] == 0
    return out


def test_prepare_layout(aligned: Path) -> None:
    faces = load_aligned(aligned)
    assert faces.images.shape == (8, 64, 64, 3) and faces.images.dtype == np.uint8
    assert faces.identities == ["Aaron_Peirsol", "Colin_Powell"]
    assert faces.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert faces.names[0] == "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    with h5py.File(aligned) as h5:
        assert h5.attrs["faceanon_format"] == "images" and h5.attrs["aligned_size"] == 64
    # An aligned face is centred: the middle of the crop is brighter-textured skin, not border.
    assert faces.images[:, 16:48, 16:48].std() > 10


def test_prepare_refusals(tmp_path: Path, lfw_sample: Path) -> None:
    with pytest.raises(FaceanonError, match="not an LFW people file"):
        (tmp_path / "p.txt").write_text("\n")
        read_people(tmp_path / "p.txt")
    with pytest.raises(FaceanonError, match=".h5"):
        prepare(lfw_sample, tmp_path / "out_folder", size=64)
    with pytest.raises(FaceanonError, match="aligned-face archive"):
        from faceanon.datasets import pack
        pack(lfw_sample, tmp_path / "plain.h5")
        load_aligned(tmp_path / "plain.h5")


def test_diff_augment_is_random_and_differentiable() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    cut = diff_augment(torch.ones(64, 3, 16, 16), ("cutout",))
    per_image = (cut == 0).float().mean(dim=(1, 2, 3))
    assert per_image.max() == 0.25 and (per_image > 0).all()  # a half-size square, maybe clipped
    moved = diff_augment(torch.ones(64, 1, 16, 16), ("translation",))
    assert ((moved == 0) | (moved == 1)).all() and (moved == 0).any()


def run_steps(trainer: GeneratorTrainer, n: int) -> None:
    for _ in range(n):
        trainer._accumulate(trainer.train_step())


def log_losses(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / LOG).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "cpu_min")} for r in lines]


def test_seeded_runs_are_identical_and_resume_continues_the_same_run(aligned: Path,
                                                                      tmp_path: Path) -> None:
    images = load_aligned(aligned).images
    straight = GeneratorTrainer(images, tmp_path / "a", config())
    run_steps(straight, 4)
    twin = GeneratorTrainer(images, tmp_path / "b", config())
    run_steps(twin, 4)
    assert log_losses(tmp_path / "a") == log_losses(tmp_path / "b")

    first = GeneratorTrainer(images, tmp_path / "c", config())
    run_steps(first, 2)
    first.save_checkpoint()
    run_steps(first, 1)  # logged after the checkpoint: dropped and redone by the resume
    resumed = GeneratorTrainer(images, tmp_path / "c", config(), resume=True)
    assert resumed.step == 2 and resumed.nimg == 8
    run_steps(resumed, 2)
    assert log_losses(tmp_path / "c") == log_losses(tmp_path / "a")
    for p, q in zip(straight.G_ema.parameters(), resumed.G_ema.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_resume_refusals(aligned: Path, tmp_path: Path) -> None:
    images = load_aligned(aligned).images
    GeneratorTrainer(images, tmp_path, config()).save_checkpoint()
    with pytest.raises(FaceanonError, match="--resume"):
        GeneratorTrainer(images, tmp_path, config())
    with pytest.raises(FaceanonError, match="other settings.*batch"):
        GeneratorTrainer(images, tmp_path, config(batch=8), resume=True)
    with pytest.raises(FaceanonError, match="other data"):
        GeneratorTrainer(images[:5], tmp_path, config(), resume=True)


def test_train_writes_checkpoint_samples_and_fp16_export(aligned: Path, tmp_path: Path) -> None:
    trainer = GeneratorTrainer(load_aligned(aligned).images, tmp_path,
                               config(sample_every_kimg=0.008))
    trainer.train(kimg=0.016)
    assert trainer.step == 4
    assert (tmp_path / CHECKPOINT).is_file()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "grid-000000kimg.png"]
    state = torch.load(tmp_path / EXPORT, weights_only=True)
    assert state["synthesis.b4.const"].dtype == torch.float16
    info = json.loads((tmp_path / "generator.json").read_text())
    assert info["arch"]["resolution"] == 16 and info["kimg"] == 0.016


def test_cli_train_resume_and_register(aligned: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEANON_WEIGHTS", str(tmp_path / "weights"))
    runner = CliRunner()
    args = ["train", "generator", "--data", str(aligned), "--out", str(tmp_path / "run"),
            "--preset", "tiny", "--batch", "4", "--device", "cpu", "--sample-every", "0",
            "--json"]
    first = runner.invoke(app, args + ["--kimg", "0.008"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args + ["--kimg", "0.008"])
    assert again.exit_code == 2 and "--resume" in again.output
    done = runner.invoke(app, args + ["--kimg", "0.016", "--resume", "--register", "test-gen"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output.strip().splitlines()[-1])
    assert summary["kimg"] == 0.016 and summary["registered"] == "test-gen"
    entry = weights.entry("test-gen")
    assert entry["kind"] == "generator" and entry["resolution"] == 32 and entry["kimg"] == 0.016
    assert entry["template"] == "faceanon" and entry["crop"] == 64
    g = create_model("generator", "test-gen")
    assert g(torch.randn(1, g.cfg.z_dim)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kind", ["projected", "projected+colour", "projected+colour+mbstd",
                                  "projected+colour+mbstd+identity"])
def test_projected_discriminator_trains_and_checkpoints_only_its_heads(aligned: Path,
                                                                        tmp_path: Path,
                                                                        kind: str) -> None:
    trainer = GeneratorTrainer(load_aligned(aligned).images, tmp_path,
                               config(discriminator=kind))
    assert any(k.startswith("colour.") for k in trainer.D.state_dict()) == (kind != "projected")
    assert trainer.cfg.r1_gamma == 0.0  # the frozen features need no R1
    before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    run_steps(trainer, 2)
    after = trainer.D.state_dict()
    assert not any(k.startswith("features") or "blocks" in k for k in after)  # dlib net not saved
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("proj"))  # fixed
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("head"))
    assert np.isfinite(json.loads((tmp_path / LOG).read_text().splitlines()[-1])["loss_D"])


def test_minibatch_deviation_marks_a_collapsed_batch() -> None:
    """A batch of one image repeated has zero deviation; a varied batch does not."""
    from faceanon.nets.projected import minibatch_deviation

    same = torch.randn(1, 8, 5, 5).repeat(6, 1, 1, 1)
    varied = torch.randn(6, 8, 5, 5)
    assert minibatch_deviation(same).shape == (6, 1, 5, 5)
    assert minibatch_deviation(same).max() < 1e-3 < minibatch_deviation(varied).min()


def test_the_identity_level_is_dlibs_descriptor_of_the_resized_face() -> None:
    import torch.nn.functional as F

    from faceanon.nets.projected import dlib_feature_pyramid

    net = create_model("recognizer", "dlib").net
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    levels = dlib_feature_pyramid(net, 112, identity=True)(img)
    assert [lv.shape[1] for lv in levels] == [32, 64, 128, 128] and levels[-1].shape[2:] == (1, 1)
    resized = F.interpolate((img + 1) / 2, size=(112, 112), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(levels[-1].flatten(1), net(resized), rtol=1e-4, atol=1e-4)
    plain = dlib_feature_pyramid(net, 112)(img)
    assert len(plain) == 3 and all(torch.equal(a, b) for a, b in zip(plain, levels))
    with pytest.raises(ValueError, match="112 px"):
        dlib_feature_pyramid(net, 96, identity=True)


def test_identity_spread_pushes_apart_only_faces_closer_than_unrelated_real_ones(
        aligned: Path) -> None:
    """The margin is the real crops' own pair cosine; one face repeated is penalised, the real
    crops of two people are hardly, and the penalty's gradient reaches the pixels."""
    from faceanon.training.identity_spread import IdentitySpread

    faces = load_aligned(aligned)
    reals = torch.from_numpy(faces.images).permute(0, 3, 1, 2).contiguous()
    spread = IdentitySpread(create_model("recognizer", "dlib"), faces.template, reals)
    assert 0.5 < spread.margin < 0.99
    faces = reals.float() / 127.5 - 1.0
    same = faces[:1].repeat(6, 1, 1, 1).requires_grad_(True)
    loss = spread(same)
    assert loss.item() == pytest.approx(1.0 - spread.margin, abs=1e-3)
    loss.backward()
    assert same.grad is not None and same.grad.abs().sum() > 0
    assert spread(faces).item() < 0.5 * loss.item()


def test_a_run_with_identity_spread_logs_it_and_an_older_checkpoint_resumes(
        aligned: Path, tmp_path: Path) -> None:
    """A checkpoint saved before a setting existed resumes with that setting at its default;
    asking for another value of it is refused like any other change."""
    faces = load_aligned(aligned)
    images = faces.images
    run = GeneratorTrainer(images, tmp_path / "a", config(identity_spread=2.0),
                           template=faces.template)
    run_steps(run, 1)
    assert "identity_spread" in log_losses(tmp_path / "a")[0]
    old = GeneratorTrainer(images, tmp_path / "b", config())
    old.save_checkpoint()
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    del ckpt["config"]["identity_spread"]
    torch.save(ckpt, tmp_path / "b" / CHECKPOINT)
    assert GeneratorTrainer(images, tmp_path / "b", config(), resume=True).step == 0
    with pytest.raises(FaceanonError, match="other settings.*identity_spread"):
        GeneratorTrainer(images, tmp_path / "b", config(identity_spread=1.0), resume=True,
                         template=faces.template)


def test_a_branch_starts_from_another_runs_generator_with_a_new_head(aligned: Path,
                                                                     tmp_path: Path) -> None:
    """A run with one more discriminator head starts where the other left off: the same
    generator, the heads both have, the counters; the new head is trained from there."""
    images = load_aligned(aligned).images
    source = GeneratorTrainer(images, tmp_path / "a", config(discriminator="projected+colour+mbstd"))
    source.train(kimg=0.008)
    branch = GeneratorTrainer(images, tmp_path / "b",
                              config(discriminator="projected+colour+mbstd+identity"),
                              branch_from=tmp_path / "a" / COMPACT)
    assert branch.nimg == source.nimg and branch.step == source.step > 0
    saved = torch.load(tmp_path / "a" / COMPACT, weights_only=False)
    assert branch.cpu_seconds >= saved["cpu_s"] > 0
    for p, q in zip(source.G_ema.parameters(), branch.G_ema.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3)  # via the fp16 compact file
    old, new = source.D.state_dict(), branch.D.state_dict()
    assert set(new) - set(old) == {"proj3", "head3.conv.weight", "head3.conv.bias",
                                   "head3.out.weight", "head3.out.bias"}
    for k in old:
        torch.testing.assert_close(old[k], new[k], rtol=1e-3, atol=1e-3)
    branch.train(kimg=0.016)
    assert branch.step == 2 * source.step
    with pytest.raises(FaceanonError, match="another architecture"):
        GeneratorTrainer(images, tmp_path / "c", config(discriminator="projected",
                                                       arch={**ARCH, "z_dim": 16}),
                         branch_from=tmp_path / "a" / COMPACT)


def test_compact_checkpoint_resumes_on_a_fresh_machine(aligned: Path, tmp_path: Path) -> None:
    images = load_aligned(aligned).images
    first = GeneratorTrainer(images, tmp_path / "a", config())
    first.train(kimg=0.008)
    assert (tmp_path / "a" / COMPACT).stat().st_size < (tmp_path / "a" / CHECKPOINT).stat().st_size
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / COMPACT).write_bytes((tmp_path / "a" / COMPACT).read_bytes())
    resumed = GeneratorTrainer(images, tmp_path / "b", config(), resume=True)
    saved = torch.load(tmp_path / "a" / COMPACT, weights_only=False)
    assert resumed.step == first.step and resumed.cpu_seconds >= saved["cpu_s"] > 0
    for p, q in zip(first.G_ema.parameters(), resumed.G_ema.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3)  # fp16 round trip
    resumed.train(kimg=0.016)
    assert resumed.step == 2 * first.step


def test_cpu_budget_and_stop_end_a_chunk_cleanly(aligned: Path, tmp_path: Path) -> None:
    trainer = GeneratorTrainer(load_aligned(aligned).images, tmp_path, config())
    trainer.train(kimg=100.0, max_cpu_seconds=0.0)
    assert trainer.step == 0 and (tmp_path / COMPACT).is_file()
    calls = iter([False, False, True])
    trainer.train(kimg=100.0, stop=lambda: next(calls))
    assert trainer.step == 2


def test_prepare_on_the_tight_face_template(lfw_sample: Path, tmp_path: Path) -> None:
    """The 'face' template crops the paste region: the eyes sit further apart than on the
    loose 'faceanon' template, and the archive records which template it holds."""
    _, counts = prepare(lfw_sample, tmp_path / "f.h5", size=64, template="face")
    assert counts["ok"] == 7
    faces = load_aligned(tmp_path / "f.h5")
    assert faces.template == "face"
    from faceanon.align import template_points
    tight, loose = template_points("face", 64), template_points("faceanon", 64)
    assert np.linalg.norm(tight[1] - tight[0]) > 1.2 * np.linalg.norm(loose[1] - loose[0])
    with pytest.raises(FaceanonError, match="unknown template"):
        prepare(lfw_sample, tmp_path / "g.h5", size=64, template="nope")


def test_cli_prepare(lfw_sample: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["prepare", str(lfw_sample), "--out", str(tmp_path / "a.h5"),
                             "--size", "64", "--json"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.output.strip().splitlines()[-1])
    assert summary["ok"] == 7 and summary["failed"] == 0
    assert load_aligned(tmp_path / "a.h5").identities == ["Aaron_Peirsol", "Colin_Powell",
                                                          "Serena_Williams"]
    bad = runner.invoke(app, ["prepare", str(lfw_sample), "--out", str(tmp_path / "dir")])
    assert bad.exit_code == 2 and "must be a .h5 archive" in bad.output
