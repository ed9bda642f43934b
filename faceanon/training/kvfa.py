"""Training KVFA (KFAAR Eq. 17–24) on virtual faces made by the project's own generator.

Virtual faces are generated once per (image, key) and embedded by the frozen backbone, so the
training loop only runs KVFA's small heads. Each person gets a few keys from a large shared
pool (a pool key is used by several people, which gives the "different faces, same key" pairs),
so KVFA learns to invert the key projection for keys in general rather than for a few keys:
the validation people and their keys are both unseen in training.

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

from faceanon.generators import FaceGenerator
from faceanon.identity import Recognizer
from faceanon.keys import Key
from faceanon.metrics import equal_error_rate, roc_auc
from faceanon.nets.kvfa import KVFA
from faceanon.training.aligned import AlignedFaces
from faceanon.training.projector import chip_embeddings, cos_loss


@dataclass
class KVFAConfig:
    steps: int = 4000
    batch: int = 64
    lr: float = 1e-4
    margin: float = 0.2
    key_pool: int = 1024
    keys_per_person: int = 4
    max_images_per_person: int = 4
    dim: int = 128
    key_dim: int = 128
    hidden: int = 512
    val_share: float = 0.1
    seed: int = 0


@dataclass
class KVFAData:
    """Backbone embeddings: originals (N, D) and their virtual faces under K keys (N, K, D).

    ``holdout`` rows belong to validation people, whose keys are disjoint from the training
    people's: validation measures unseen people under unseen keys, as a user's key will be.
    """

    original: np.ndarray
    virtual: np.ndarray
    person: np.ndarray      # (N,) person index
    key_index: np.ndarray   # (N, K) indices into ``keys``
    keys: list[Key]
    holdout: np.ndarray     # (N,) bool

    def subset(self, rows: np.ndarray) -> "KVFAData":
        return KVFAData(self.original[rows], self.virtual[rows], self.person[rows],
                        self.key_index[rows], self.keys, self.holdout[rows])


def build_data(faces: AlignedFaces, generator: FaceGenerator, recognizer: Recognizer,
               cfg: KVFAConfig) -> KVFAData:
    """Embed up to ``max_images_per_person`` originals per person and their virtual faces under
    the person's ``keys_per_person`` keys.

    Keys come from a pool shared by several people (the "different faces, same key" pairs of
    L_pmis3); held-out people draw from their own pool of ``key_pool * val_share`` fresh keys.
    """
    rng = np.random.default_rng(cfg.seed)
    people = [p for p in np.unique(faces.labels) if (faces.labels == p).sum() >= 2]
    n_val = max(2, int(len(people) * cfg.val_share)) if cfg.val_share > 0 else 0
    val_people = set(rng.choice(people, n_val, replace=False).tolist()) if n_val else set()
    n_train_keys = cfg.key_pool if len(val_people) < len(people) else 0
    n_val_keys = max(cfg.keys_per_person + 1, int(cfg.key_pool * cfg.val_share)) if n_val else 0
    keys = [Key(secrets.token_bytes(32), 0) for _ in range(n_train_keys + n_val_keys)]
    rows, key_index, holdout = [], [], []
    for p in people:
        idx = np.flatnonzero(faces.labels == p)
        chosen = rng.choice(idx, min(len(idx), cfg.max_images_per_person), replace=False)
        held = p in val_people
        lo, n = (n_train_keys, n_val_keys) if held else (0, n_train_keys)
        person_keys = lo + rng.choice(n, cfg.keys_per_person, replace=False)
        rows += list(chosen)
        key_index += [person_keys] * len(chosen)
        holdout += [held] * len(chosen)
    rows_arr, key_arr = np.array(rows), np.array(key_index)
    subset = AlignedFaces(faces.images[rows_arr], faces.labels[rows_arr], faces.identities, [],
                          faces.template)
    original = chip_embeddings(subset, recognizer)
    flat_rows = np.repeat(np.arange(len(rows_arr)), cfg.keys_per_person)
    flat_keys = key_arr.reshape(-1)
    out = np.zeros((len(flat_rows), original.shape[1]), np.float32)
    with torch.inference_mode():
        for start in range(0, len(flat_rows), 64):
            part = slice(start, start + 64)
            ident = torch.from_numpy(original[flat_rows[part]]).to(generator.device)
            images = generator.render(ident, [keys[k] for k in flat_keys[part]])
            out[part] = recognizer.embed(recognizer.chips(images, generator.template)).cpu().numpy()
    return KVFAData(original, out.reshape(len(rows_arr), cfg.keys_per_person, -1),
                    faces.labels[rows_arr], key_arr, keys, np.array(holdout, bool))


class _Sampler:
    """Triplets (x1, x2 same person; y another person holding x1's key) and key slots."""

    def __init__(self, data: KVFAData, rng: np.random.Generator) -> None:
        self.data, self.rng = data, rng
        self.by_person = {int(p): np.flatnonzero(data.person == p) for p in np.unique(data.person)}
        self.people = [p for p, idx in self.by_person.items() if len(idx) >= 2]
        flat_keys = data.key_index.reshape(-1)
        order = np.argsort(flat_keys, kind="stable")
        bounds = np.searchsorted(flat_keys[order], np.arange(len(data.keys) + 1))
        k = data.key_index.shape[1]
        self.by_key = [order[bounds[i]:bounds[i + 1]] // k for i in range(len(data.keys))]

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        people = self.rng.choice(self.people, n)
        n_slots = self.data.key_index.shape[1]
        x1, x2, y = (np.empty(n, int) for _ in range(3))
        s1 = self.rng.integers(0, n_slots, n)
        s2 = (s1 + self.rng.integers(1, n_slots, n)) % n_slots  # another of the person's keys
        for i, p in enumerate(people):
            x1[i], x2[i] = self.rng.choice(self.by_person[int(p)], 2, replace=False)
            others = self.by_key[int(self.data.key_index[x1[i], s1[i]])]
            others = others[self.data.person[others] != p]
            y[i] = self.rng.choice(others) if len(others) else self.rng.integers(len(self.data.person))
        return x1, x2, y, s1, s2


def _codes(data: KVFAData, model_id: str, dim: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([k.code(model_id, dim) for k in data.keys]))


def slot_of(data: KVFAData, rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Which of each row's virtual faces was made with pool key ``key`` (-1 if none)."""
    hit = data.key_index[rows] == np.asarray(key)[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1)


def train_kvfa(data: KVFAData, out: str | Path, cfg: KVFAConfig, model_id: str) -> tuple[KVFA, dict]:
    """Train on the training people; calibrate the threshold (EER) on the held-out ones."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, val = data.subset(np.flatnonzero(~data.holdout)), data.subset(np.flatnonzero(data.holdout))
    model = KVFA(data.original.shape[1], cfg.dim, cfg.key_dim, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    codes = _codes(data, model_id, cfg.key_dim)
    orig, virt = torch.from_numpy(train.original), torch.from_numpy(train.virtual)
    sampler = _Sampler(train, rng)
    log = open(out / "log.jsonl", "w")
    for step in range(1, cfg.steps + 1):
        x1, x2, y, s1, s2 = sampler.sample(cfg.batch)
        k1 = train.key_index[x1, s1]
        k2 = train.key_index[x1, s2]
        v11 = virt[x1, s1]
        v21 = virt[x2, s1]  # a person's images share their keys, in the same slots
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
