"""Training KVFA (KFAAR Eq. 17–24) on virtual faces made by the project's own generator.

Virtual faces are generated once per (image, key) and embedded by the frozen backbone, so the
training loop only runs KVFA's small heads. Each person gets two keys from a shared pool; a
pool key is used by several people, which gives the "different faces, same key" pairs.

- L_pmis1 = L_cos(I(v(x1,k1)), I(x1), −1)          virtual face ≠ original without the key
- L_pmis2 = L_cos(I(v(x1,k1), k2), I(x1), −1)      wrong key: no match
- L_pmis3 = L_cos(I(v(x,k1), k1), I(v(y,k1), k1), −1)  other people under one key stay apart
- L_per1  = L_cos(I(v(x1,k1), k1), I(x1), +1)      right key: the original's identity
- L_per2  = L_cos(I(v(x1,k1), k1), I(v(x2,k1), k1), +1)  two photos, one key: one identity

All weights 1 (the paper's setting); Adam, lr 1e-4, β = (0.9, 0.999).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from faceanon.identity import Recognizer
from faceanon.keys import Key
from faceanon.metrics import equal_error_rate, roc_auc
from faceanon.nets.kvfa import KVFA
from faceanon.training.aligned import AlignedFaces
from faceanon.training.projector import chip_embeddings, cos_loss
from faceanon.virtual import VirtualFaces, recognizer_input


@dataclass
class KVFAConfig:
    steps: int = 4000
    batch: int = 64
    lr: float = 1e-4
    margin: float = 0.2
    key_pool: int = 128
    max_images_per_person: int = 4
    dim: int = 128
    key_dim: int = 128
    hidden: int = 512
    val_share: float = 0.1
    seed: int = 0


@dataclass
class KVFAData:
    """Backbone embeddings: originals (N, D) and their virtual faces under two keys (N, 2, D)."""

    original: np.ndarray
    virtual: np.ndarray
    person: np.ndarray      # (N,) person index
    key_index: np.ndarray   # (N, 2) indices into ``keys``
    keys: list[Key]

    def subset(self, rows: np.ndarray) -> "KVFAData":
        return KVFAData(self.original[rows], self.virtual[rows], self.person[rows],
                        self.key_index[rows], self.keys)


def build_data(faces: AlignedFaces, virtual: VirtualFaces, recognizer: Recognizer,
               cfg: KVFAConfig) -> KVFAData:
    """Embed every original and its virtual faces under the person's two pool keys."""
    rng = np.random.default_rng(cfg.seed)
    keys = [Key(secrets.token_bytes(32), 0) for _ in range(cfg.key_pool)]
    rows, key_index = [], []
    for p in np.unique(faces.labels):
        idx = np.flatnonzero(faces.labels == p)
        if len(idx) < 2:
            continue
        chosen = rng.choice(idx, min(len(idx), cfg.max_images_per_person), replace=False)
        pair = rng.choice(cfg.key_pool, 2, replace=False)
        rows += list(chosen)
        key_index += [pair] * len(chosen)
    rows_arr, key_arr = np.array(rows), np.array(key_index)
    subset = AlignedFaces(faces.images[rows_arr], faces.labels[rows_arr], faces.identities, [],
                          faces.template)
    original = chip_embeddings(subset, recognizer)
    out = np.zeros((len(rows_arr), 2, original.shape[1]), np.float32)
    with torch.inference_mode():
        for k in range(cfg.key_pool):
            for slot in (0, 1):
                sel = np.flatnonzero(key_arr[:, slot] == k)
                for start in range(0, len(sel), 64):
                    part = sel[start:start + 64]
                    ident = torch.from_numpy(original[part]).to(virtual.device)
                    images = virtual.images(ident, virtual.key_code(keys[k]))
                    out[part, slot] = recognizer.embed(recognizer_input(images, recognizer)).cpu().numpy()
    return KVFAData(original, out, faces.labels[rows_arr], key_arr, keys)


class _Sampler:
    def __init__(self, data: KVFAData, rng: np.random.Generator) -> None:
        self.data, self.rng = data, rng
        self.by_person = {int(p): np.flatnonzero(data.person == p) for p in np.unique(data.person)}
        self.people = [p for p, idx in self.by_person.items() if len(idx) >= 2]
        self.by_key: dict[int, np.ndarray] = {}
        for k in range(len(data.keys)):
            self.by_key[k] = np.flatnonzero((data.key_index == k).any(1))

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        people = self.rng.choice(self.people, n)
        x1, x2, y = (np.empty(n, int) for _ in range(3))
        s1 = self.rng.integers(0, 2, n)
        for i, p in enumerate(people):
            x1[i], x2[i] = self.rng.choice(self.by_person[int(p)], 2, replace=False)
            k = self.data.key_index[x1[i], s1[i]]
            others = self.by_key[int(k)]
            others = others[self.data.person[others] != p]
            y[i] = self.rng.choice(others) if len(others) else self.rng.integers(len(self.data.person))
        return x1, x2, y, s1


def _codes(data: KVFAData, model_id: str, dim: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([k.code(model_id, dim) for k in data.keys]))


def slot_of(data: KVFAData, rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Which of each row's two virtual faces was made with pool key ``key`` (-1 if neither)."""
    ki = data.key_index[rows]
    return np.where(ki[:, 0] == key, 0, np.where(ki[:, 1] == key, 1, -1))


def train_kvfa(data: KVFAData, out: str | Path, cfg: KVFAConfig, model_id: str) -> tuple[KVFA, dict]:
    """Train on all but ``val_share`` of the people; calibrate the threshold on the rest (EER)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    people = np.unique(data.person)
    val_people = rng.choice(people, max(2, int(len(people) * cfg.val_share)), replace=False)
    val_rows = np.isin(data.person, val_people)
    train, val = data.subset(np.flatnonzero(~val_rows)), data.subset(np.flatnonzero(val_rows))
    model = KVFA(data.original.shape[1], cfg.dim, cfg.key_dim, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    codes = _codes(data, model_id, cfg.key_dim)
    orig, virt = torch.from_numpy(train.original), torch.from_numpy(train.virtual)
    sampler = _Sampler(train, rng)
    log = open(out / "log.jsonl", "w")
    for step in range(1, cfg.steps + 1):
        x1, x2, y, s1 = sampler.sample(cfg.batch)
        k1 = train.key_index[x1, s1]
        k2 = train.key_index[x1, 1 - s1]
        v11 = virt[x1, s1]
        v21 = virt[x2, s1]  # a person's images share their two keys, in the same slots
        vy1 = virt[y, np.maximum(slot_of(train, y, k1), 0)]
        f_x1 = model.features(orig[x1])
        i11 = model.keyed(v11, codes[k1])
        losses = {
            "pmis1": cos_loss(model.features(v11), f_x1, False, cfg.margin),
            "pmis2": cos_loss(model.keyed(v11, codes[k2]), f_x1, False, cfg.margin),
            "pmis3": cos_loss(i11, model.keyed(vy1, codes[k1]), False, cfg.margin),
            "per1": cos_loss(i11, f_x1, True, cfg.margin),
            "per2": cos_loss(i11, model.keyed(v21, codes[k1]), True, cfg.margin),
        }
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[union-attr]
        opt.step()
        if step % 100 == 0 or step == cfg.steps:
            log.write(json.dumps({"step": step, **{k: round(float(v.detach()), 4)
                                                   for k, v in losses.items()}}) + "\n")
            log.flush()
    log.close()
    model.eval()
    report = evaluate(model, val, codes)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "kvfa.pt")
    (out / "report.json").write_text(json.dumps({"config": asdict(cfg), "validation": report},
                                                indent=2) + "\n")
    return model, report


def pair_scores(model: KVFA, data: KVFAData, codes: torch.Tensor, rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
    """Original-vs-virtual similarities of the paper's protocol (Table VI/VII) on ``data``:
    ``genuine`` (right key, same person, other photo), ``impostor`` (right key, other person),
    ``wrong_key`` (same person, wrong key), ``no_key`` (plain F on the virtual face)."""
    with torch.inference_mode():
        f_orig = model.features(torch.from_numpy(data.original))
        v = torch.from_numpy(data.virtual[:, 0])
        k = data.key_index[:, 0]
        keyed = model.keyed(v, codes[k])
        wrong = model.keyed(v, codes[(k + 1 + rng.integers(len(codes) - 1, size=len(k))) % len(codes)])
        plain = model.features(v)
    same_other = np.array([rng.choice(np.flatnonzero((data.person == p) & (np.arange(len(k)) != i)))
                           if ((data.person == p).sum() > 1) else i
                           for i, p in enumerate(data.person)])
    other = rng.integers(len(k), size=len(k))
    ok = data.person[other] != data.person
    cos = lambda a, b: (a * b).sum(1).numpy()  # noqa: E731 (unit vectors)
    return {"genuine": cos(keyed, f_orig[same_other]), "impostor": cos(keyed, f_orig[other])[ok],
            "wrong_key": cos(wrong, f_orig[same_other]), "no_key": cos(plain, f_orig[same_other])}


def evaluate(model: KVFA, data: KVFAData, codes: torch.Tensor, seed: int = 1) -> dict:
    """EER threshold, AUC, CRR and FAR at that threshold, and the mean similarity per scenario."""
    s = pair_scores(model, data, codes, np.random.default_rng(seed))
    scores = np.concatenate([s["genuine"], s["impostor"]])
    labels = np.concatenate([np.ones(len(s["genuine"])), np.zeros(len(s["impostor"]))])
    eer, threshold = equal_error_rate(scores, labels)
    return {"threshold": float(threshold), "eer": float(eer), "auc": float(roc_auc(scores, labels)),
            "crr": float((s["genuine"] >= threshold).mean()),
            "far": float((s["impostor"] >= threshold).mean()),
            **{f"mean_{k}": float(v.mean()) for k, v in s.items()}, "pairs": int(len(scores))}
