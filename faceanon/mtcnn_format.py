"""The ``mtcnn`` package's pretrained weights (Keras arrays, joblib + lz4 pickles) converted
into faceanon's MTCNN networks (``faceanon.nets.mtcnn``) when the detector loads; TensorFlow is
never imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from faceanon.errors import FaceanonError
from faceanon.nets.mtcnn import ONet, PNet, RNet

__all__ = ["load_pretrained", "weights_dir"]


def weights_dir() -> Path:
    """The ``mtcnn`` package's weight folder, found without importing the package (it needs TF)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise FaceanonError("the 'mtcnn' package (MTCNN weights) is not installed; pip install mtcnn")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"


def _keras_to_state_dict(net: nn.Module, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Map the Keras weight list (in layer order) onto ``net``'s parameters (in the same order)."""
    names = [n for n, _ in net.named_parameters()]
    if len(names) != len(arrays):
        raise FaceanonError(f"MTCNN weights have {len(arrays)} arrays, {type(net).__name__} "
                            f"needs {len(names)}")
    state: dict[str, torch.Tensor] = {}
    for name, arr in zip(names, arrays):
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 4:        # conv kernel HWIO → OIHW
            a = a.transpose(3, 2, 0, 1)
        elif a.ndim == 3:      # PReLU alpha shared over H, W: (1, 1, C) → (C,)
            a = a.reshape(-1)
        elif a.ndim == 2:      # dense kernel (in, out) → (out, in)
            a = a.T
        state[name] = torch.from_numpy(np.ascontiguousarray(a))
    return state


def load_pretrained(folder: Path | None = None) -> tuple[PNet, RNet, ONet]:
    """The three nets with the ``mtcnn`` package's pretrained weights, in eval mode."""
    import joblib  # the weights are joblib + lz4 pickles of numpy arrays

    folder = weights_dir() if folder is None else folder
    nets = (PNet(), RNet(), ONet())
    for net, stem in zip(nets, ("pnet", "rnet", "onet")):
        path = folder / f"{stem}.lz4"
        try:
            arrays = joblib.load(path)
        except (OSError, ValueError, EOFError) as e:
            raise FaceanonError(f"cannot read MTCNN weights ({e})", path) from None
        net.load_state_dict(_keras_to_state_dict(net, arrays))
        net.eval()
    return nets
