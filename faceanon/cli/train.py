"""``faceanon train …``: the project's own networks (generator, projector, pose models, KVFA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from faceanon.cli.base import emit_json, err, out, pick_device, train_app, user_errors
from faceanon.errors import FaceanonError

@train_app.command("projector")
@user_errors
def train_projector_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, log)."),
        steps: int = typer.Option(2000, help="Optimisation steps."),
        batch: int = typer.Option(8, help="Triplets per step."),
        generator: Optional[str] = typer.Option(None, help="Generator weights (default: shipped)."),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add the projector to weights/ under this name.")) -> None:
    """Train the key projector P with KFAAR's four losses and IVFG's L_reg; E, G, R frozen."""
    from faceanon import weights
    from faceanon.models import create_model, registry_entry
    from faceanon.training.aligned import load_aligned
    from faceanon.training.projector import ProjectorConfig, train_projector

    device = pick_device(device)
    g_entry = registry_entry("generator", generator)
    g_name = g_entry["name"]
    g = create_model("generator", g_name, device)
    cfg = ProjectorConfig(steps=steps, batch=batch)
    p = train_projector(g, g_entry["template"], create_model("recognizer", "dlib", device),
                        load_aligned(data), out_dir, cfg,
                        log=lambda rec: err.print(json.dumps(rec), highlight=False))
    if register_as:
        weights.register(register_as, "projector", out_dir / "projector.pt", default=True,
                         generator=g_name, psi=cfg.psi, steps=steps, batch=batch,
                         trained_on=data.name, dtype="float16",
                         arch={"id_dim": p.id_dim, "key_dim": p.key_dim, "z_dim": p.z_dim,
                               "hidden": cfg.hidden, "layers": cfg.layers})
        out.print(f"registered {register_as}", highlight=False)


@train_app.command("pose-basis")
@user_errors
def train_pose_basis_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_path: Path = typer.Option(..., "--out", "-o", help="File to write (.pt)."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add the basis to weights/ under this name.")) -> None:
    """Learn which landmark motions are pose/expression (within a person) for pose transfer."""
    from faceanon import weights
    from faceanon.training.pose_basis import train_pose_basis

    basis, n_faces = train_pose_basis(data, out_path)
    out.print(f"{len(basis.within_share)} pose/expression directions; wrote {out_path}",
              highlight=False)
    if register_as:
        weights.register(register_as, "pose-basis", out_path, default=True,
                         trained_on=f"{data.name} ({n_faces} faces)",
                         directions=len(basis.within_share))


@train_app.command("latent-pose")
@user_errors
def train_latent_pose_cmd(
        out_path: Path = typer.Option(..., "--out", "-o", help="File to write (.pt)."),
        generator: Optional[str] = typer.Option(None, help="Generator weights (default: shipped)."),
        faces: int = typer.Option(2000, help="Random faces to fit on."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add it to weights/ under this name.")) -> None:
    """Learn how the generator's latent moves face landmarks, for kfaar's pose control."""
    from faceanon import weights
    from faceanon.fsutil import atomic_torch_save
    from faceanon.generators.stylegan2 import fit_latent_pose
    from faceanon.landmarks import Landmarks68
    from faceanon.models import create_model, registry_entry

    g_entry = registry_entry("generator", generator)
    g_name = g_entry["name"]
    psi = float(registry_entry("projector").get("psi", 0.8))
    latent, report = fit_latent_pose(create_model("generator", g_name), Landmarks68(),
                                     create_model("pose-basis"), psi, g_entry["template"],
                                     int(g_entry["crop"]), n=faces)
    atomic_torch_save(latent.state_dict(), out_path)
    out.print(f"held-out R²: landmarks {report['r2_landmarks']:.3f}, pose/expression part "
              f"{report['r2_pose_part']:.3f}; wrote {out_path}", highlight=False)
    if register_as:
        weights.register(register_as, "latent-pose", out_path, default=True, generator=g_name,
                         psi=psi, faces=faces, **{k: round(v, 4) for k, v in report.items()
                                                  if k.startswith("r2")})


@train_app.command("kvfa")
@user_errors
def train_kvfa_cmd(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (weights, log, report)."),
        steps: int = typer.Option(4000, help="Optimisation steps."),
        key_pool: int = typer.Option(1024, "--key-pool", help="Random training keys (each person "
                                     "gets 4; held-out people get their own)."),
        device: str = typer.Option("auto", help="auto, cpu or cuda[:N]."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="Add KVFA to weights/ under this name."),
        json_out: bool = typer.Option(False, "--json", help="Print the validation report.")) -> None:
    """Train KVFA on virtual faces of the shipped generator and projector (L_pmis1-3, L_per1-2)."""
    from faceanon import weights
    from faceanon.models import create_model
    from faceanon.training.aligned import load_aligned
    from faceanon.training.kvfa import KVFAConfig, build_data, train_kvfa

    device = pick_device(device)
    recognizer = create_model("recognizer", "dlib", device)
    cfg = KVFAConfig(steps=steps, key_pool=key_pool)
    kvfa_data = build_data(load_aligned(data), create_model("face-generator", device=device),
                           recognizer, cfg)
    name = register_as or "kvfa"
    model, report = train_kvfa(kvfa_data, out_dir, cfg, name)
    if register_as:
        weights.register(register_as, "kvfa", out_dir / "kvfa.pt", default=True,
                         threshold=report["threshold"], validation=report, steps=steps,
                         trained_on=data.name, dtype="float16",
                         arch={"in_dim": model.in_dim, "dim": model.dim, "key_dim": model.key_dim,
                               "hidden": cfg.hidden})
    if json_out:
        emit_json(report)
    else:
        for k, v in report.items():
            out.print(f"{k:>15}  {v:.4f}" if isinstance(v, float) else f"{k:>15}  {v}",
                      highlight=False)


@train_app.command("generator")
@user_errors
def train_generator(
        data: Path = typer.Option(..., "--data", help="Aligned archive from `faceanon prepare`."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoint, log, samples)."),
        kimg: float = typer.Option(1000.0, "--kimg", help="Train until this many thousand real "
                                                          "images have been shown."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        branch_from: Optional[Path] = typer.Option(
            None, "--branch-from", help="Start a new run in --out from this checkpoint of "
                                        "another (its generator, the discriminator heads "
                                        "both have, its counters); e.g. to add a head. "
                                        "Ignored once --out holds a checkpoint."),
        max_minutes: Optional[float] = typer.Option(
            None, "--max-minutes", help="Stop (checkpointed) after this long; --resume continues."),
        max_cpu_minutes: Optional[float] = typer.Option(
            None, "--max-cpu-minutes", help="Stop (checkpointed) after this much CPU time of this "
                                            "process (comparable on a shared machine)."),
        discriminator: str = typer.Option(
            "stylegan2", "--discriminator", help="stylegan2 (trained from scratch), projected "
                                                 "(heads on frozen dlib features) or "
                                                 "projected+colour (and a pixel head), "
                                                 "projected+colour+mbstd (and a minibatch-"
                                                 "deviation channel against mode collapse), "
                                                 "projected+colour+mbstd+identity (and a head "
                                                 "on dlib's descriptor, against faces that "
                                                 "are all one person; dlib's network at 112 "
                                                 "px instead of 96)."),
        identity_spread: float = typer.Option(
            0.0, "--identity-spread", help="Weight of a generator penalty on faces that dlib "
                                           "reads as closer than unrelated real faces "
                                           "(against faces that are all one person; 0 = off)."),
        preset_name: str = typer.Option("128", "--preset", help="tiny, cpu64, cpu64w, 64, 128 "
                                                                "or 256."),
        batch: int = typer.Option(32, "--batch", help="Minibatch size."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
        amp: str = typer.Option("auto", "--amp", help="auto (bf16 on CUDA), bf16, fp16 or none."),
        fid_every: Optional[float] = typer.Option(
            None, "--fid-every", help="Measure FID every this many kimg (default 50 on CUDA, "
                                      "off on CPU; 0 = off)."),
        fid_n: int = typer.Option(10_000, "--fid-n", help="Generated images per FID (and at "
                                                          "most as many training crops)."),
        sample_every: float = typer.Option(10.0, "--sample-every", help="Sample grid every kimg."),
        seed: int = typer.Option(0, "--seed", help="Seed of the whole run."),
        register_as: Optional[str] = typer.Option(
            None, "--register", help="When done, add the EMA generator to weights/ under this name."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON summary.")) -> None:
    """Train the StyleGAN2 face generator (resumable; losses in OUT/log.jsonl, grids in OUT/samples)."""
    import signal
    import time

    from faceanon import weights
    from faceanon.nets.stylegan2 import PRESETS
    from faceanon.training.aligned import load_aligned
    from faceanon.training.generator import (EXPORT, GeneratorTrainer, TrainConfig,
                                             device_policy)

    if preset_name not in PRESETS:
        raise FaceanonError(f"--preset must be one of {', '.join(PRESETS)}, got {preset_name!r}")
    device = pick_device(device)
    amp_mode, fid_every = device_policy(device, amp, fid_every)
    faces = load_aligned(data)
    cfg = TrainConfig(preset=preset_name, batch=batch, seed=seed, sample_every_kimg=sample_every,
                      fid_every_kimg=fid_every, fid_n=fid_n, discriminator=discriminator,
                      identity_spread=identity_spread)
    trainer = GeneratorTrainer(faces.images, out_dir, cfg, device=device, amp=amp_mode,
                               resume=resume, branch_from=branch_from, template=faces.template)
    start_nimg, t0 = trainer.nimg, time.time()
    last = {"t": t0}

    def progress(rec: dict[str, Any]) -> None:
        if time.time() - last["t"] > 30:
            err.print(f"kimg {rec['kimg']:.1f}  G {rec['loss_G']:.3f}  D {rec['loss_D']:.3f}",
                      highlight=False)
            last["t"] = time.time()

    stopping = []  # SIGTERM ends the chunk cleanly: checkpoint, samples and export
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    trainer.train(kimg, progress, None if max_minutes is None else max_minutes * 60,
                  None if max_cpu_minutes is None else max_cpu_minutes * 60,
                  stop=lambda: bool(stopping))
    wall = time.time() - t0
    summary: dict[str, Any] = {
        "out": str(out_dir), "kimg": round(trainer.nimg / 1000, 3), "step": trainer.step,
        "wall_s": round(wall, 1), "cpu_min": round(trainer.cpu_seconds / 60, 2),
        "img_per_s": round((trainer.nimg - start_nimg) / max(wall, 1e-9), 2),
        "export": str(out_dir / EXPORT)}
    if fid_every > 0:
        summary["fid"] = round(trainer.measure_fid(), 3)
        summary["fid_n"] = fid_n
    if register_as:
        meta = trainer.model_card(data.name, len(faces.images), faces.template, faces.size,
                                  summary.get("fid"))
        weights.register(register_as, "generator", out_dir / EXPORT, **meta)
        summary["registered"] = register_as
    if json_out:
        emit_json(summary)
    else:
        for name, value in summary.items():
            out.print(f"{name:>10}  {value}", highlight=False)
