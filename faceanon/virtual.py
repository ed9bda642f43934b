"""Virtual faces: encoder E → key projector P → mapping M → StyleGAN2 G (KFAAR's HPVFG
without its pose stage, i.e. IVFG's generator).

Everything here is deterministic: the same identity embedding and key give the same pixels, so
the same person under the same key becomes the same virtual person (synchronism).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.align import template_transform, warp_tensor
from faceanon.identity import Recognizer
from faceanon.keys import Key
from faceanon.nets.projector import KeyProjector
from faceanon.nets.stylegan2 import Generator, pretrained_generator

CROP_TEMPLATE = "faceanon"
CHUNK = 8  # faces per generator call, fixed (see VirtualFaces.generate)


class VirtualFaces:
    """Generates a virtual face per identity embedding under a key."""

    def __init__(self, generator: Generator, projector: KeyProjector, model_id: str,
                 psi: float = 0.8, generator_name: str = "") -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.projector = projector.eval().requires_grad_(False)
        self.model_id = model_id
        self.generator_name = generator_name
        self.psi = psi

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def resolution(self) -> int:
        return self.generator.cfg.resolution

    def key_code(self, key: Key, attempt: int = 0) -> torch.Tensor:
        """The key as the projector's input; ``attempt`` > 0 gives the fail-closed retries
        their own (equally secret) codes."""
        name = self.model_id if attempt == 0 else f"{self.model_id}#retry{attempt}"
        return torch.from_numpy(key.code(name, self.projector.key_dim)).to(self.device)

    def latents(self, identity: torch.Tensor, key_code: torch.Tensor, psi: float | None = None
                ) -> torch.Tensor:
        """W+ latents [N, num_ws, w_dim] (differentiable in the projector, for training)."""
        z = self.projector(identity, key_code)
        return self.generator.styles(z, self.psi if psi is None else psi)

    def images(self, identity: torch.Tensor, key_code: torch.Tensor,
               w_shift: torch.Tensor | None = None) -> torch.Tensor:
        """Virtual faces [N, 3, R, R] in [0, 1] on the generator's crop template; ``w_shift``
        [N, w_dim] moves each latent (pose control) after the key projection."""
        ws = self.latents(identity, key_code)
        if w_shift is not None:
            ws = ws + w_shift[:, None, :].to(ws.dtype)
        out = self.generator.synthesize(ws, noise_mode="const")
        return ((out + 1) / 2).clamp(0, 1)

    def generate(self, identity: np.ndarray, key: Key, size: int = 128, attempt: int = 0,
                 w_shift: np.ndarray | None = None) -> np.ndarray:
        """(N, D) embeddings (and optional (N, w_dim) latent shifts) → (N, size, size, 3) uint8
        crops on the ``faceanon`` template.

        The generator always runs on chunks of ``CHUNK`` faces (the last one padded), because
        convolution kernels round differently at different batch sizes: a face's pixels must
        not depend on how many other faces were in its batch, or a resumed run would differ.
        """
        out = np.zeros((len(identity), size, size, 3), np.uint8)
        code = self.key_code(key, attempt)
        with torch.inference_mode():
            for start in range(0, len(identity), CHUNK):
                n = min(CHUNK, len(identity) - start)
                shift = None if w_shift is None else _chunk(w_shift, start).to(self.device)
                img = self.images(_chunk(identity, start).to(self.device), code, shift)[:n]
                if img.shape[-1] != size:
                    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
                out[start:start + n] = \
                    (img * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out


def _chunk(rows: np.ndarray, start: int) -> torch.Tensor:
    """``CHUNK`` rows from ``start``, the last chunk padded with copies of its first row."""
    part = np.asarray(rows[start:start + CHUNK], dtype=np.float32)
    return torch.from_numpy(np.concatenate([part, np.repeat(part[:1], CHUNK - len(part), 0)]))


def recognizer_input(images: torch.Tensor, recognizer: Recognizer) -> torch.Tensor:
    """Generator crops [N, 3, R, R] → the recognizer's own aligned chip, differentiably."""
    m = template_transform(CROP_TEMPLATE, images.shape[-1], recognizer.template, recognizer.width)
    return warp_tensor(images, m, recognizer.width, recognizer.height)


def load_virtual_faces(device: str | torch.device = "cpu",
                       projector: str | None = None) -> VirtualFaces:
    """The shipped projector (default from ``weights/manifest.json``) and the generator it was
    trained for, both checked against their SHA-256, on ``device``."""
    from faceanon import weights

    p_entry = weights.entry(projector) if projector else weights.default_entry("projector")
    g_name = p_entry["generator"]
    g = pretrained_generator(g_name, device)
    p = KeyProjector(**p_entry["arch"])
    p.load_state_dict({k: v.float() for k, v in weights.load_weights(p_entry["name"]).items()})
    return VirtualFaces(g, p.to(device), model_id=p_entry["name"],
                        psi=float(p_entry.get("psi", 0.8)), generator_name=g_name)
