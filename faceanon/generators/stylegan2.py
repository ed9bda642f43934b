"""The StyleGAN2 backend (KFAAR's HPVFG generator, IVFG's without the pose stage): identity
code E(x) and key → key projector P → mapping network → W+ → synthesis network.

The shipped model is a projector entry of the weights registry; it names the generator it was
trained for, whose entry declares the template and crop size of the faces it was trained on.
Pose control goes through W (``LatentPose``) where the registry holds one fitted for that
generator: w never leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.align import template_points
from faceanon.errors import FaceanonError
from faceanon.generators.base import FaceGenerator, PoseGoal
from faceanon.keys import Key

if TYPE_CHECKING:
    from faceanon.landmarks import Landmarks68
    from faceanon.nets.projector import KeyProjector
    from faceanon.nets.stylegan2 import Generator
    from faceanon.pose_transfer import PoseBasis

__all__ = ["StyleGAN2Faces", "LatentPose", "fit_latent_pose", "load_stylegan2_faces",
           "declared_crop"]


class StyleGAN2Faces(FaceGenerator):
    """A frozen StyleGAN2 generator driven by a key projector; see the module docstring."""

    def __init__(self, generator: Generator, projector: KeyProjector, name: str, template: str,
                 crop_size: int, psi: float = 0.8, generator_name: str = "",
                 latent: "LatentPose | None" = None, latent_name: str = "") -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.projector = projector.eval().requires_grad_(False)
        self.name, self.template, self.crop_size, self.psi = name, template, crop_size, psi
        self.generator_name = generator_name
        self.latent, self.latent_name = latent, latent_name
        self.pose_control = latent is not None

    @property
    def resolution(self) -> int:
        return self.generator.cfg.resolution

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def model_ids(self) -> dict[str, str]:
        from faceanon.models import model_ids

        return model_ids((self.name, self.generator_name))

    @property
    def pose_model_ids(self) -> dict[str, str]:
        from faceanon.models import model_ids

        return model_ids((self.latent_name,)) if self.latent else {}

    def key_codes(self, keys: Key | Sequence[Key], attempt: int = 0) -> torch.Tensor:
        """The key (key_dim,) or keys (N, key_dim) as the projector's input; ``attempt`` > 0
        gives the fail-closed retries their own (equally secret) codes."""
        name = self.name if attempt == 0 else f"{self.name}#retry{attempt}"
        dim = self.projector.key_dim
        codes = keys.code(name, dim) if isinstance(keys, Key) else \
            np.stack([k.code(name, dim) for k in keys])
        return torch.from_numpy(codes).to(self.device)

    def render(self, identities: torch.Tensor, keys: Key | Sequence[Key], attempt: int = 0,
               steer: torch.Tensor | None = None) -> torch.Tensor:
        """``steer`` [N, w_dim] moves each latent (pose control) after the key projection."""
        z = self.projector(identities, self.key_codes(keys, attempt))
        ws = self.generator.styles(z, self.psi)
        if steer is not None:
            ws = ws + steer[:, None, :].to(ws.dtype)
        out = self.generator.synthesize(ws, noise_mode="const")
        return ((out + 1) / 2).clamp(0, 1)

    def steering(self, goal: PoseGoal) -> np.ndarray:
        if self.latent is None:
            return super().steering(goal)
        return self.latent.shift(goal.basis, goal.original, goal.virtual, goal.size)


def declared_crop(entry: dict[str, Any]) -> tuple[str, int]:
    """The template and crop size that projector ``entry``'s generator declares: those of the
    aligned faces it was trained on."""
    from faceanon.models import registry_entry

    g_entry = registry_entry("generator", entry["generator"])
    missing = [k for k in ("template", "crop") if k not in g_entry]
    if missing:
        raise FaceanonError(f"generator {g_entry['name']!r} does not declare its "
                            f"{' and '.join(missing)} (weights manifest)")
    return str(g_entry["template"]), int(g_entry["crop"])


def load_stylegan2_faces(entry: dict[str, Any], device: str | torch.device) -> StyleGAN2Faces:
    """The face generator of projector ``entry``: the generator it was trained for, and that
    generator's latent pose control where the registry holds one."""
    from faceanon import weights
    from faceanon.models import create_model

    template, crop_size = declared_crop(entry)
    g_name = entry["generator"]
    latent = next((m["name"] for m in weights.entries() if m["kind"] == "latent-pose"
                   and m.get("generator") == g_name), "")
    return StyleGAN2Faces(
        create_model("generator", g_name, device), create_model("projector", entry["name"], device),
        entry["name"], template, crop_size, float(entry.get("psi", 0.8)), g_name,
        create_model("latent-pose", latent) if latent else None, latent)


@dataclass(frozen=True)
class LatentPose:
    """Head pose through the generator's latent space: the coarse pose change a 2-D warp cannot
    make (turning a head) is made by the generator itself, before the warp refines the rest.

    ``response`` M is a ridge regression of a generated face's 68 landmarks (136-d, at
    ``basis.size`` px) on its w; a shift Δw moves the landmarks by ≈ M Δw. The shift that gives
    the virtual face the original's pose/expression part P(l_o − l_v) is the ridge solution of
    (P M) Δw = P (l_o − l_v), capped at ``max_norm`` so that w stays in the generator's range.
    It is fitted per generator (``fit_latent_pose``) and stored with that generator's name.
    """

    response: np.ndarray  # (136, w_dim)
    max_norm: float
    ridge: float

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"response": torch.from_numpy(self.response.astype(np.float32)),
                "max_norm": torch.tensor(self.max_norm), "ridge": torch.tensor(self.ridge)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "LatentPose":
        return cls(state["response"].double().numpy(), float(state["max_norm"]),
                   float(state["ridge"]))

    def shift(self, basis: PoseBasis, original68: np.ndarray, virtual68: np.ndarray,
              size: int) -> np.ndarray:
        """(N, w_dim) latent shifts for landmark sets (N, 68, 2) measured at ``size`` px."""
        a = basis.projection @ self.response                          # (136, w_dim)
        gram = a @ a.T
        solve = a.T @ np.linalg.inv(gram + self.ridge * np.trace(gram) / len(gram) * np.eye(len(gram)))
        delta = (np.asarray(original68) - np.asarray(virtual68)).reshape(-1, 136) * (basis.size / size)
        # Face by face: a face's shift must not depend on its batch (BLAS blocks by size).
        out = np.zeros((len(delta), solve.shape[0]))
        for i, d in enumerate(delta):
            dw = solve @ (basis.projection @ d)
            out[i] = dw * min(1.0, self.max_norm / max(float(np.linalg.norm(dw)), 1e-9))
        return out


def fit_latent_pose(generator: Generator, landmarks68: Landmarks68, basis: PoseBasis,
                    psi: float, template: str, size: int, n: int = 2000, ridge: float = 0.05,
                    seed: int = 0) -> tuple[LatentPose, dict[str, float]]:
    """Fit ``LatentPose`` for ``generator``, whose faces are on ``template`` at ``size`` px,
    from ``n`` random faces at truncation ``psi``; returns it with the held-out R² of the
    regression, for all landmarks and for their pose/expression part."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.cfg.z_dim, generator=g)
    points = template_points(template, size, size)
    ws, shapes = [], []
    with torch.inference_mode():
        for start in range(0, n, 32):
            w = generator.mapping(z[start:start + 32].to(next(generator.parameters()).device), psi)
            img = ((generator.synthesize(w, "const") + 1) / 2).clamp(0, 1)
            img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
            crops = (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            ws.append(w.float().cpu().numpy())
            shapes += [landmarks68(c, points).reshape(136) for c in crops]
    w_all, y_all = np.concatenate(ws).astype(np.float64), np.stack(shapes)
    cut = int(0.8 * n)
    x, y = w_all[:cut] - w_all[:cut].mean(0), y_all[:cut] - y_all[:cut].mean(0)
    reg = ridge * np.trace(x.T @ x) / x.shape[1]
    response = y.T @ x @ np.linalg.inv(x.T @ x + reg * np.eye(x.shape[1]))
    xt, yt = w_all[cut:] - w_all[:cut].mean(0), y_all[cut:] - y_all[:cut].mean(0)
    resid = yt - xt @ response.T
    p = basis.projection.T * (basis.size / size)
    r2 = {"r2_landmarks": 1 - float((resid ** 2).sum() / (yt ** 2).sum()),
          "r2_pose_part": 1 - float(((resid @ p) ** 2).sum() / ((yt @ p) ** 2).sum())}
    max_norm = float(np.median(np.linalg.norm(x, axis=1)))  # a typical distance from the mean w
    return LatentPose(response * (basis.size / size), max_norm, ridge), {**r2, "faces": n}
