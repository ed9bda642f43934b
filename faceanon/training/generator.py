"""StyleGAN2 training: non-saturating loss, lazy R1, EMA generator, style mixing, DiffAugment.

One ``GeneratorTrainer`` owns an output folder:

- ``checkpoint.pt``: G, D, G_ema, both optimizers, image counter and the RNG state, written
  atomically, so ``resume`` continues the *same* run (same step counter and loss trajectory);
- ``checkpoint-compact.pt``: the same in fp16 without optimizer state, written at the end of
  each chunk; small enough to commit, and ``resume`` starts from it when ``checkpoint.pt`` is
  absent (a fresh machine);
- ``log.jsonl``: averaged losses every ``log_every`` steps and FID lines when measured;
- ``samples/grid-{kimg}.png``: G_ema on fixed latents, to watch progress;
- ``generator_ema_fp16.pt`` + ``generator.json``: the exported EMA weights (fp16) and their
  architecture, ready for ``faceanon.weights.register``.

All training randomness comes from torch's global RNG (saved in the checkpoint); sample grids
and FID draw from their own seeded generators so that measuring never changes the run.
Small data sets (LFW DevTrain: ~9.5k faces) overfit a GAN's discriminator, hence DiffAugment
(Zhao et al. 2020: the same differentiable colour/translation/cutout on real and fake images).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.errors import FaceanonError
from faceanon.fid import (InceptionFeatures, Stats, fid, generated_images, reference_stats,
                          to_uint8)
from faceanon.fsutil import atomic_torch_save, atomic_write_text
from faceanon.images import save_image
from faceanon.models import frozen
from faceanon.nets.stylegan2 import Discriminator, Generator, StyleGANConfig, preset
from faceanon.training.identity_spread import IdentitySpread

__all__ = ["TrainConfig", "GeneratorTrainer", "diff_augment", "image_grid", "export_ema",
           "resize_uint8", "run_generator", "build_discriminator", "DISCRIMINATORS"]

CHECKPOINT = "checkpoint.pt"
COMPACT = "checkpoint-compact.pt"  # fp16, no optimizer state: what gets committed per chunk
LOG = "log.jsonl"
EXPORT = "generator_ema_fp16.pt"
EXPORT_INFO = "generator.json"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------ augmentation

def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    scale = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5
    return (x - mean) * scale + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (differentiable)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - ty  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - tx
    valid = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w)
    out = x.flatten(2).gather(2, index.expand(-1, x.shape[1], -1)).view_as(x)
    return out * valid.to(x.dtype)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ``ratio`` the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2  # the square may hang over the border, as in the paper
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_AUGMENTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] = ("color", "translation", "cutout"),
                 ) -> torch.Tensor:
    """DiffAugment: random, differentiable transforms applied to every image D sees."""
    for name in policy:
        for fn in _AUGMENTS[name]:
            x = fn(x)
    return x


# ----------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class TrainConfig:
    """Training recipe. ``None`` fields take StyleGAN2-ADA's heuristics (see ``resolved``)."""

    preset: str = "128"
    batch: int = 32
    lr: float = 0.0025
    r1_gamma: float | None = None       # None: 0.0002 · resolution² / batch
    r1_interval: int = 16               # lazy regularization
    ema_kimg: float | None = None       # None: 10 · batch / 32 (half-life in thousands of images)
    ema_rampup: float = 0.05
    style_mixing: float = 0.9
    augment: tuple[str, ...] = ("color", "translation", "cutout")
    xflip: bool = True
    seed: int = 0
    log_every: int = 20                 # steps per log line
    sample_every_kimg: float = 10.0
    checkpoint_every_kimg: float = 10.0
    checkpoint_minutes: float = 10.0
    fid_every_kimg: float = 0.0         # 0: only when asked (``measure_fid``)
    fid_n: int = 10_000
    arch: dict[str, int] = field(default_factory=dict)  # overrides of the preset's fields
    # "stylegan2": the residual discriminator trained from scratch; "projected": patch heads on
    # frozen features of dlib's face recognizer (faceanon.nets.projected), no R1 needed.
    discriminator: str = "stylegan2"
    # Weight of G's penalty on fakes that dlib reads as closer than unrelated real faces
    # (faceanon.training.identity_spread); 0: off.
    identity_spread: float = 0.0

    def architecture(self) -> StyleGANConfig:
        return preset(self.preset, **self.arch)

    def resolved(self) -> "TrainConfig":
        if self.discriminator not in DISCRIMINATORS:
            raise FaceanonError(f"unknown discriminator {self.discriminator!r}; known: "
                                f"{', '.join(DISCRIMINATORS)}")
        res = self.architecture().resolution
        default_gamma = (0.0 if self.discriminator.startswith("projected")
                         else 0.0002 * res * res / self.batch)
        gamma = self.r1_gamma if self.r1_gamma is not None else default_gamma
        ema = self.ema_kimg if self.ema_kimg is not None else 10.0 * self.batch / 32
        return TrainConfig(**{**asdict(self), "r1_gamma": gamma, "ema_kimg": ema,
                              "augment": tuple(self.augment)})

    def run_identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the one it continues."""
        d = asdict(self.resolved())
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                if k not in ("log_every", "sample_every_kimg", "checkpoint_every_kimg",
                             "checkpoint_minutes", "fid_every_kimg", "fid_n")}


# "+colour" adds a small pixel-space head (faceanon.nets.projected.ColourHead); "+mbstd" a
# minibatch-deviation channel in each feature head (against mode collapse); "+identity" a head
# on dlib's descriptor (against faces that are all one person), which runs dlib's network at
# 112 px for every head instead of 96.
DISCRIMINATORS = ("stylegan2", "projected", "projected+colour", "projected+colour+mbstd",
                  "projected+colour+mbstd+identity")


def device_policy(device: str, amp: str = "auto",
                  fid_every: float | None = None) -> tuple[str | None, float]:
    """Mixed precision and FID cadence for ``device``: (autocast dtype or None, kimg per FID).

    ``auto`` is bf16 on CUDA (no loss scaling needed) and fp32 on the CPU, where autocast is
    slower; FID every 50 kimg on CUDA and never on the CPU, where 10,000 Inception passes
    would cost as much as the training itself (the campaign measures it per chunk instead).
    """
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise FaceanonError(f"--amp must be auto, bf16, fp16 or none, got {amp!r}")
    on_cuda = device.startswith("cuda")
    mode = ("bf16" if on_cuda else None) if amp == "auto" else (None if amp == "none" else amp)
    if mode and not on_cuda:
        raise FaceanonError(f"--amp {amp} needs a CUDA device")
    return mode, (50.0 if on_cuda else 0.0) if fid_every is None else fid_every


def build_discriminator(cfg: TrainConfig, arch: StyleGANConfig,
                        device: torch.device) -> torch.nn.Module:
    """The discriminator ``cfg`` names, on ``device`` (a projected one loads dlib's network)."""
    if cfg.discriminator.startswith("projected"):
        from faceanon.models import create_model
        from faceanon.nets.projected import (IDENTITY_INPUT, ProjectedDiscriminator,
                                             dlib_feature_pyramid)

        net = create_model("recognizer", "dlib", device).net
        parts = cfg.discriminator.split("+")
        identity = "identity" in parts
        features = (dlib_feature_pyramid(net, IDENTITY_INPUT, identity=True) if identity
                    else dlib_feature_pyramid(net))
        return ProjectedDiscriminator(features,
                                      (32, 64, 128) + ((128,) if identity else ()),
                                      seed=cfg.seed, colour_head="colour" in parts,
                                      deviation="mbstd" in parts).to(device)
    return Discriminator(arch).to(device)


# ------------------------------------------------------------------------------------ helpers

def _float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating tensors in fp32 (compact checkpoints keep fp16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def image_grid(images: torch.Tensor, columns: int) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] → one (rows·H, columns·W, 3) uint8 picture."""
    imgs = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, c = imgs.shape
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = im
    return grid


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its float tensors in fp16 (what is stored and committed)."""
    return {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in state.items()}


def export_ema(g_ema: Generator, path: str | Path) -> dict[str, torch.Tensor]:
    """Write G_ema's state dict in fp16 (float tensors only) and return it."""
    state = half(g_ema.state_dict())
    atomic_torch_save(state, Path(path))
    return state


def run_generator(run: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator a training run last exported (``generator.json`` + its fp16 file)."""
    run = Path(run)
    try:
        info = json.loads((run / EXPORT_INFO).read_text(encoding="utf-8"))
        state = torch.load(run / info["file"], map_location="cpu", weights_only=True)
    except (OSError, KeyError, json.JSONDecodeError, RuntimeError) as e:
        raise FaceanonError(f"no exported generator in this run ({type(e).__name__})", run) from None
    return frozen(Generator(StyleGANConfig.from_dict(info["arch"])), state, device)


def resize_uint8(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 → [N, 3, size, size] uint8, area-averaged when shrinking."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if t.shape[2] == size:
        return t.contiguous()
    out = []
    for start in range(0, len(t), 512):
        x = F.interpolate(t[start:start + 512].float(), size=(size, size), mode="area"
                          if t.shape[2] > size else "bilinear")
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# ----------------------------------------------------------------------------------- trainer

class GeneratorTrainer:
    """Trains a StyleGAN2 on aligned face crops held in memory.

    ``images``: (N, S, S, 3) uint8; they are resized once to the preset's resolution.
    ``amp``: "bf16" or "fp16" autocast (CUDA), or None for fp32.
    ``template``: the crops' alignment template, which ``identity_spread`` needs.
    """

    def __init__(self, images: np.ndarray, out: str | Path, cfg: TrainConfig,
                 device: str | torch.device = "cpu", amp: str | None = None,
                 resume: bool = False, branch_from: str | Path | None = None,
                 template: str | None = None) -> None:
        self.cfg = cfg.resolved()
        self.arch = self.cfg.architecture()
        self.out = Path(out)
        self.device = torch.device(device)
        if amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
        if len(images) < 2:
            raise FaceanonError(f"need at least 2 training images, got {len(images)}")
        self.data = resize_uint8(images, self.arch.resolution).to(self.device)

        ckpt_path = self.out / CHECKPOINT
        if not ckpt_path.exists() and (self.out / COMPACT).exists():
            ckpt_path = self.out / COMPACT
        if ckpt_path.exists() and not resume:
            raise FaceanonError("output folder already holds a training run; pass --resume to "
                                "continue it or choose another --out", self.out)
        torch.manual_seed(self.cfg.seed)
        self.G = Generator(self.arch).to(self.device)
        self.D = build_discriminator(self.cfg, self.arch, self.device)
        self.spread = self._identity_spread(template)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # channels_last on CUDA and on CPU alike: oneDNN's convolutions are faster in it too
        # (8 % less CPU time per step of cpu64 + projected D on one thread).
        for net in (self.G, self.D, self.G_ema):
            net.to(memory_format=torch.channels_last)
        c = self.cfg.r1_interval / (self.cfg.r1_interval + 1)  # lazy-R1 Adam correction
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=self.cfg.lr, betas=(0.0, 0.99),
                                      eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=self.cfg.lr * c,
                                      betas=(0.0, 0.99 ** c), eps=1e-8)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.step = 0
        self.nimg = 0
        self._cpu_base, self._cpu_mark = 0.0, time.process_time()
        self._since_ckpt = time.time()
        self._acc: dict[str, list[float]] = {}
        self._t_log = time.time()
        if ckpt_path.exists():
            self._load(ckpt_path)
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / LOG).unlink(missing_ok=True)
            if branch_from is not None:
                self._branch(Path(branch_from))
        self._fid_real: Stats | None = None
        self._inception: InceptionFeatures | None = None

    # ------------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.run_identity(),
            "arch": self.arch.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step, "nimg": self.nimg, "cpu_s": round(self.cpu_seconds, 1),
            "data_shape": list(self.data.shape),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    @property
    def cpu_seconds(self) -> float:
        """CPU time this run has used, over all its chunks (all threads of the process)."""
        return self._cpu_base + time.process_time() - self._cpu_mark

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.state(), self.out / CHECKPOINT)
        self._since_ckpt = time.time()

    def save_compact(self, path: str | Path) -> None:
        """The checkpoint without optimizer state, networks in fp16: small enough to commit
        after every chunk (a run resumed from it restarts Adam's moment estimates)."""
        state = self.state()
        for k in ("opt_G", "opt_D", "scaler"):
            state.pop(k)
        for k in ("G", "D", "G_ema"):
            state[k] = half(state[k])
        atomic_torch_save(state, Path(path))

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=False)
        except (OSError, RuntimeError, EOFError) as e:
            raise FaceanonError(f"unreadable checkpoint: {e}"[:200], path) from None
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise FaceanonError(f"checkpoint version {ckpt.get('version')} is not supported", path)
        return ckpt

    def _branch(self, path: Path) -> None:
        """Start this run from another run's checkpoint with other settings (a discriminator
        with more heads): its generator and EMA, the discriminator's parts that both have, its
        image and CPU counters (so the campaign's curve goes on); Adam starts afresh."""
        ckpt = self._read(path)
        if ckpt["arch"] != self.arch.to_dict():
            raise FaceanonError("checkpoint's generator has another architecture", path)
        for net, key in ((self.G, "G"), (self.G_ema, "G_ema")):
            net.load_state_dict(_float(ckpt[key]))
        own = self.D.state_dict()
        shared = {k: v for k, v in _float(ckpt["D"]).items()
                  if k in own and own[k].shape == v.shape}
        self.D.load_state_dict({**own, **shared})
        self.step, self.nimg = int(ckpt["step"]), int(ckpt["nimg"])
        self._cpu_base = float(ckpt.get("cpu_s", 0.0))

    def _identity_spread(self, template: str | None) -> IdentitySpread | None:
        if not self.cfg.identity_spread:
            return None
        if template is None:
            raise ValueError("identity_spread needs the crops' template")
        from faceanon.models import create_model

        return IdentitySpread(create_model("recognizer", "dlib", self.device), template,
                              self.data)

    def _load(self, path: Path) -> None:
        ckpt = self._read(path)
        # A setting added after the checkpoint was made takes its default, the value it ran with.
        saved = {**TrainConfig().run_identity(), **ckpt["config"]}
        mine = self.cfg.run_identity()
        if saved != mine:
            diff = sorted(k for k in saved if saved[k] != mine.get(k))
            raise FaceanonError(f"checkpoint was made with other settings ({', '.join(diff)}); "
                                "use the same options or another --out", path)
        if ckpt.get("data_shape") not in (None, list(self.data.shape)):
            raise FaceanonError(f"checkpoint was trained on other data ({ckpt['data_shape'][0]} "
                                f"images, now {len(self.data)}); use the same --data", path)
        for net, key in ((self.G, "G"), (self.D, "D"), (self.G_ema, "G_ema")):
            net.load_state_dict(_float(ckpt[key]))
        if "opt_G" in ckpt:  # a compact checkpoint has none: Adam starts afresh
            self.opt_G.load_state_dict(ckpt["opt_G"])
            self.opt_D.load_state_dict(ckpt["opt_D"])
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.nimg = int(ckpt["step"]), int(ckpt["nimg"])
        self._cpu_base, self._cpu_mark = float(ckpt.get("cpu_s", 0.0)), time.process_time()
        torch.set_rng_state(ckpt["rng"].cpu())
        if ckpt["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint: the resumed run writes them again."""
        log = self.out / LOG
        if not log.exists():
            return
        keep = []
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= self.step:
                keep.append(line + "\n")
        atomic_write_text(log, "".join(keep))

    # ------------------------------------------------------------------------ steps

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def _reals(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.data), (self.cfg.batch,), device=self.device)
        x = self.data[idx].float() / 127.5 - 1.0
        if self.cfg.xflip:
            flip = torch.rand(len(x), 1, 1, 1, device=self.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        return x.contiguous(memory_format=torch.channels_last)

    def _fakes(self) -> torch.Tensor:
        """G's images with style mixing: past a random layer, W+ comes from a second latent."""
        n, num_ws = self.cfg.batch, self.arch.num_ws
        z = torch.randn(n, self.arch.z_dim, device=self.device)
        ws = self.G.styles(z)
        if torch.rand([]).item() < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, num_ws, []).item())
            ws2 = self.G.styles(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return self.G.synthesize(ws, noise_mode="random")

    def _d(self, img: torch.Tensor) -> torch.Tensor:
        return self.D(diff_augment(img, self.cfg.augment) if self.cfg.augment else img).float()

    def train_step(self) -> dict[str, float]:
        """One generator and one discriminator update (R1 every ``r1_interval`` steps)."""
        self.G.train()
        self.D.train()
        stats: dict[str, float] = {}

        # Generator: non-saturating loss  softplus(-D(G(z))).
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        with self._autocast():
            fake = self._fakes()
            loss_g = F.softplus(-self._d(fake)).mean()
            if self.spread is not None:
                spread = self.spread(fake)
                loss_g = loss_g + self.cfg.identity_spread * spread
                stats["identity_spread"] = spread.item()
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_G)
        stats["loss_G"] = loss_g.item()

        # Discriminator: softplus(D(fake)) + softplus(-D(real)) [+ lazy R1 on reals].
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        do_r1 = self.cfg.r1_gamma > 0 and self.step % self.cfg.r1_interval == 0
        real = self._reals().detach().requires_grad_(do_r1)
        with self._autocast():
            fake_logits = self._d(fake.detach())
            real_logits = self._d(real)
            loss_d = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        if do_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + r1 * (self.cfg.r1_gamma / 2 * self.cfg.r1_interval)
            stats["r1"] = r1.item()
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        stats.update(loss_D=loss_d.item(), score_real=real_logits.mean().item(),
                     score_fake=fake_logits.mean().item())

        self.step += 1
        self.nimg += self.cfg.batch
        self._update_ema()
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ----------------------------------------------------------------- outputs

    @torch.no_grad()
    def sample_grid(self, n: int = 32, columns: int = 8, psi: float = 1.0) -> np.ndarray:
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(n, self.arch.z_dim, generator=gen).to(self.device)
        imgs = torch.cat([self.G_ema(z[i:i + 16], psi=psi) for i in range(0, n, 16)])
        return image_grid(imgs, columns)

    def write_samples(self) -> Path:
        path = self.out / "samples" / f"grid-{self.nimg // 1000:06d}kimg.png"
        save_image(path, self.sample_grid())
        return path

    def measure_fid(self, n: int | None = None) -> float:
        """FID of n G_ema images vs min(n, N) training crops (reference stats cached in OUT)."""
        n = n or self.cfg.fid_n
        if self._inception is None:
            self._inception = InceptionFeatures(self.device)
        n_real = min(n, len(self.data))
        cache = self.out / f"fid_reference_{self.arch.resolution}px_{n_real}.npz"
        if self._fid_real is None or self._fid_real.n != n_real:
            if cache.exists():
                self._fid_real = Stats.load(cache)
            else:
                self._fid_real = reference_stats(self.data, n_real, self._inception)
                self._fid_real.save(cache)
        value = fid(self._fid_real, generated_images(self.G_ema, n), self._inception)
        self._log({"step": self.step, "kimg": round(self.nimg / 1000, 3), "fid": round(value, 3),
                   "fid_n_generated": n, "fid_n_real": n_real,
                   "cpu_min": round(self.cpu_seconds / 60, 2)})
        return value

    def _log(self, rec: dict[str, Any]) -> None:
        with open(self.out / LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def _accumulate(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self._acc.setdefault(k, []).append(v)
        if self.step % self.cfg.log_every == 0:
            now = time.time()
            rec: dict[str, Any] = {"step": self.step, "kimg": round(self.nimg / 1000, 3)}
            rec.update({k: round(float(np.mean(v)), 5) for k, v in self._acc.items()})
            shown = self.cfg.batch * len(self._acc["loss_G"])  # fewer right after a resume
            rec["img_per_s"] = round(shown / max(now - self._t_log, 1e-9), 2)
            rec["cpu_min"] = round(self.cpu_seconds / 60, 2)
            self._log(rec)
            self._acc, self._t_log = {}, now

    def export(self) -> Path:
        """Write the EMA generator (fp16) and its description next to the checkpoint."""
        path = self.out / EXPORT
        export_ema(self.G_ema, path)
        atomic_write_text(self.out / EXPORT_INFO, json.dumps(
            {"arch": self.arch.to_dict(), "preset": self.cfg.preset,
             "discriminator": self.cfg.discriminator, "kimg": round(self.nimg / 1000, 3),
             "cpu_min": round(self.cpu_seconds / 60, 2),
             "step": self.step, "file": EXPORT}, indent=2, sort_keys=True) + "\n")
        return path

    def model_card(self, data_name: str, faces: int, template: str, crop: int,
                   fid: float | None) -> dict[str, Any]:
        """What ``weights/manifest.json`` records of the exported generator: how it was
        trained, and the template and crop size that every user of it must align to."""
        return {"resolution": self.arch.resolution, "template": template, "crop": crop,
                "trained_on": f"{data_name} ({faces} aligned faces, template {template})",
                "discriminator": self.cfg.discriminator, "kimg": round(self.nimg / 1000, 3),
                "fid": fid, "preset": self.cfg.preset, "arch": self.arch.to_dict(),
                "dtype": "float16", "default": True,
                **({"identity_spread": self.cfg.identity_spread} if self.spread else {})}

    def train(self, kimg: float, progress: Callable[[dict[str, Any]], None] | None = None,
              max_seconds: float | None = None, max_cpu_seconds: float | None = None,
              stop: Callable[[], bool] | None = None) -> None:
        """Train until ``kimg`` thousand real images have been shown, then checkpoint and export.

        A chunk of a longer run ends earlier when ``max_seconds`` of wall time or
        ``max_cpu_seconds`` of this process's CPU time have passed, or when ``stop()`` says so
        (a signal). CPU time is what makes runs comparable on a machine shared with other work:
        the pilot of candidate recipes gives each the same CPU budget.
        """
        target = int(kimg * 1000)
        deadline = None if max_seconds is None else time.time() + max_seconds
        cpu_deadline = None if max_cpu_seconds is None else time.process_time() + max_cpu_seconds

        def crossed(every_kimg: float, before: int) -> bool:
            every = int(every_kimg * 1000)
            return every > 0 and before // every != self.nimg // every

        def go_on() -> bool:
            return (self.nimg < target and (deadline is None or time.time() < deadline)
                    and (cpu_deadline is None or time.process_time() < cpu_deadline)
                    and not (stop is not None and stop()))

        while go_on():
            before = self.nimg
            stats = self.train_step()
            self._accumulate(stats)
            if progress is not None:
                progress({"step": self.step, "kimg": self.nimg / 1000, **stats})
            if crossed(self.cfg.sample_every_kimg, before):
                self.write_samples()
            if crossed(self.cfg.fid_every_kimg, before):
                self.measure_fid()
            if (crossed(self.cfg.checkpoint_every_kimg, before)
                    or time.time() - self._since_ckpt > self.cfg.checkpoint_minutes * 60):
                self.save_checkpoint()
        self.save_checkpoint()
        self.save_compact(self.out / COMPACT)
        self.write_samples()
        self.export()
