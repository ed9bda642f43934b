"""Read dlib's serialized DNN files and turn the face recognition ResNet into a state dict.

dlib writes a network as nested layer objects: first one version number per layer from the
loss inwards, then the input layer, then every layer's details from the input outwards. Tag and
skip layers carry no data (their wiring lives in dlib's C++ type), so the file gives the ordered
list of computational layers and ``faceanon.nets.dlib_resnet`` supplies the wiring. The
conversion runs once per source file (the cache is named by its sha256); later loads are a
checksum-verified ``torch.load`` that no longer depends on dlib's format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes
from faceanon.nets.dlib_resnet import DlibResNet

__all__ = ["DlibLayer", "DlibNet", "read_dlib_net", "user_cache_dir", "face_recognition_models_dir",
           "dlib_resnet_state_dict", "cached_dlib_resnet_state_dict", "DLIB_RESNET_FILE"]

DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_CONVERTER_VERSION = 1  # bump when the produced state dict changes meaning


@dataclass
class DlibLayer:
    """One computational layer: its dlib kind (``con``, ``affine``, ...) and fields."""

    kind: str
    params: np.ndarray | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: the loss and input descriptions and the layers, input first."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]


class _Reader:
    """dlib's primitive encodings: sign+length-prefixed little-endian integers, floats as
    (mantissa, exponent) integer pairs, length-prefixed strings, '0'/'1' booleans, tensors."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> FaceanonError:
        return FaceanonError(f"not a dlib network file this reader understands ({what} at byte "
                             f"{self.pos})", self.path)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        head = self.take(1)[0]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size > 8 or head & 0x70:
            raise self.fail(f"bad integer header {head:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if negative else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return specials[exponent] if exponent in specials else float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        return self.take(n).decode("latin-1")

    def peek_string(self, expected: str) -> bool:
        raw = expected.encode()
        head = bytes([1, len(raw)])
        return self.data[self.pos:self.pos + 2 + len(raw)] == head + raw

    def bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            raise self.fail(f"bad boolean {c!r}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:  # raw little-endian float32
            values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:  # dlib's portable float encoding, element by element
            values = np.array([self.float() for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"tensor version {version}")
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            raise self.fail("alias_tensor version")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _layer(r: _Reader) -> DlibLayer:
    """One layer's details, dispatched on the version string dlib writes first."""
    tag = r.string()
    if tag == "con_4":
        params = r.tensor()
        names = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        f: dict[str, Any] = {n: r.int() for n in names}
        f["filters"], f["biases"] = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            r.float()
        return DlibLayer("con", params, f)
    if tag == "affine_":
        params = r.tensor()
        f = {"gamma": r.alias(), "beta": r.alias(), "mode": r.int()}
        return DlibLayer("affine", params, f)
    if tag in ("max_pool_2", "avg_pool_2"):
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(tag[:-2], None, {n: r.int() for n in names})
    if tag == "relu_":
        return DlibLayer("relu")
    if tag == "add_prev_":
        return DlibLayer("add_prev")
    if tag == "fc_2":
        f = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor()
        f["weights"], f["biases"], f["bias_mode"] = r.alias(), r.alias(), r.int()
        for _ in range(4):
            r.float()
        return DlibLayer("fc", params, f)
    raise r.fail(f"unsupported layer {tag!r}")


def _skip_layer_state(r: _Reader) -> None:
    """The per-layer training state dlib saves after the details (flags, gradient buffers)."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib DNN file written with a ``loss_metric`` head and an RGB input layer."""
    path = Path(path)
    try:
        r = _Reader(path.read_bytes(), path)
    except OSError as e:
        raise FaceanonError(f"cannot read dlib model ({e.strerror})", path) from None
    r.int()  # add_loss_layer version
    if r.string() != "loss_metric_2":
        raise r.fail("expected a loss_metric_2 head")
    loss = {"margin": r.float(), "distance_threshold": r.float()}
    versions = 0
    while not r.peek_string("input_rgb_image_sized"):
        r.int()  # one version per add_layer / tag / skip, outermost first
        versions += 1
        if versions > 10_000:
            raise r.fail("no input layer")
    r.string()
    inp = {"mean_rgb": (r.float(), r.float(), r.float()), "rows": r.int(), "cols": r.int()}
    layers = [_layer(r)]
    _skip_layer_state(r)
    r.int()  # the first layer also records the input's sample expansion factor
    while r.pos < len(r.data):
        layers.append(_layer(r))
        _skip_layer_state(r)
    return DlibNet(loss, inp, layers)


def _layer_plan(model: DlibResNet) -> list[tuple[str, str, nn.Module | None]]:
    """DlibResNet's layers in the order dlib's file lists them, with their parameter names."""
    plan: list[tuple[str, str, nn.Module | None]] = [
        ("con", "stem_conv", model.stem_conv), ("affine", "stem_affine", model.stem_affine),
        ("relu", "", None), ("max_pool", "", None)]
    for i, block in enumerate(model.blocks):
        plan += [("con", f"blocks.{i}.conv1", block.conv1), ("affine", f"blocks.{i}.affine1", block.affine1),
                 ("relu", "", None),
                 ("con", f"blocks.{i}.conv2", block.conv2), ("affine", f"blocks.{i}.affine2", block.affine2)]
        plan += [("avg_pool", "", None)] if block.down else []
        plan += [("add_prev", "", None), ("relu", "", None)]
    return plan + [("avg_pool", "", None), ("fc", "embedding", model.embedding)]


def dlib_resnet_state_dict(net: DlibNet) -> dict[str, torch.Tensor]:
    """Map the parsed layers onto ``DlibResNet``'s parameter names, checking every shape."""
    model = DlibResNet()
    plan = _layer_plan(model)
    kinds = [layer.kind for layer in net.layers]
    if kinds != [kind for kind, _, _ in plan]:
        raise FaceanonError("dlib model's layer sequence is not dlib's face recognition ResNet")
    state: dict[str, torch.Tensor] = {
        "input_mean": torch.tensor(net.input["mean_rgb"], dtype=torch.float32)}
    for layer, (kind, name, module) in zip(net.layers, plan):
        if module is None or layer.params is None:  # relu, pooling, add_prev: no parameters
            continue
        if isinstance(module, nn.Conv2d):
            n, _, kh, kw = module.weight.shape
            expected = (n, kh, kw, *module.stride, *module.padding)
            found = tuple(layer.fields[x] for x in ("num_filters", "nr", "nc", "stride_y",
                                                    "stride_x", "padding_y", "padding_x"))
            if found != expected:
                raise FaceanonError(f"dlib conv {name}: geometry {found}, expected {expected}")
        if kind == "affine" and layer.fields["mode"] != 0:
            raise FaceanonError(f"dlib affine {name}: not per-channel (mode {layer.fields['mode']})")
        flat = layer.params.reshape(-1)
        shapes = {k: v.shape for k, v in module.state_dict().items()}  # weight, then bias
        if flat.size != sum(int(np.prod(v)) for v in shapes.values()):
            raise FaceanonError(f"dlib {kind} {name}: {flat.size} parameters, expected {shapes}")
        if kind == "fc":  # dlib computes x @ W with W stored (inputs, outputs)
            out_f, in_f = shapes["weight"]
            state[f"{name}.weight"] = torch.from_numpy(flat.reshape(in_f, out_f).T.copy())
            continue
        offset = 0
        for key, shape in shapes.items():  # dlib stores filters (or gamma) then biases (or beta)
            size = int(np.prod(shape))
            state[f"{name}.{key}"] = torch.from_numpy(flat[offset:offset + size].reshape(shape).copy())
            offset += size
    return state


def user_cache_dir() -> Path:
    """``$FACEANON_CACHE``, else ``$XDG_CACHE_HOME/faceanon``, else ``~/.cache/faceanon``."""
    if os.environ.get("FACEANON_CACHE"):
        return Path(os.environ["FACEANON_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceanon"


def face_recognition_models_dir() -> Path:
    """The ``models/`` folder of the face-recognition-models package (located, not imported:
    its ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceanonError("the face-recognition-models package is not installed "
                            "(pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_dlib_resnet_state_dict(source: str | Path | None = None,
                                  cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted ResNet weights, converting ``source`` on first use.

    The cache file is named by the source's sha256 and records its own payload's sha256, so a
    changed source or a damaged cache is noticed and the conversion simply redone.
    """
    source = Path(source) if source is not None else face_recognition_models_dir() / DLIB_RESNET_FILE
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise FaceanonError(f"cannot read dlib model ({e.strerror})", source) from None
    digest = _sha256(raw)
    target = (cache_dir or user_cache_dir()) / f"dlib_resnet_v{_CONVERTER_VERSION}-{digest[:16]}.pt"
    if target.exists():
        blob = target.read_bytes()
        payload, _, stored = blob.rpartition(b"\nsha256:")
        if stored.decode("ascii", "replace").strip() == _sha256(payload):
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    state = dlib_resnet_state_dict(read_dlib_net(source))
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    try:
        atomic_write_bytes(target, payload + b"\nsha256:" + _sha256(payload).encode("ascii"))
    except OSError:
        pass  # a read-only cache only costs the next run another conversion
    return state

