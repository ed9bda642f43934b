import json
import os
import stat

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceanon import keys
from faceanon.cli import app
from faceanon.nets.kvfa import KVFA
from faceanon.training.kvfa import KVFAConfig, KVFAData, train_kvfa

runner = CliRunner()
TOY_MODEL = "kvfa-test"


def toy_data(n_people: int = 40, per: int = 3, dim: int = 16, seed: int = 0) -> KVFAData:
    """Originals as random identity vectors; a 'virtual face' = identity mixed with a fixed
    linear map of the key's code, so a verifier can learn to undo keys it never saw."""
    rng = np.random.default_rng(seed)
    ident = rng.normal(size=(n_people, dim))
    person = np.repeat(np.arange(n_people), per)
    original = ident[person] + 0.1 * rng.normal(size=(len(person), dim))
    key_list = [keys.Key(rng.bytes(32), 0) for _ in range(200)]  # fixed: the test is repeatable
    held = np.arange(n_people) >= n_people * 0.9  # held-out people use keys 160-199, unseen in training
    key_index = np.stack([rng.choice(40, 2, replace=False) + 160 if h else rng.choice(160, 2, replace=False)
                          for h in held])[person]
    codes = np.stack([k.code(TOY_MODEL, 32) for k in key_list])
    key_vecs = codes @ rng.normal(size=(32, dim)) / np.sqrt(32)
    virtual = np.stack([original + key_vecs[key_index[:, s]] for s in (0, 1)], 1)
    return KVFAData(original.astype(np.float32), virtual.astype(np.float32), person, key_index,
                    key_list, held[person])


@pytest.mark.slow
def test_kvfa_learns_right_key_matches(tmp_path):
    data = toy_data(n_people=200)
    cfg = KVFAConfig(steps=2000, batch=32, key_pool=160, dim=16, key_dim=32, hidden=64, lr=1e-3)
    model, report = train_kvfa(data, tmp_path, cfg, TOY_MODEL)
    assert (tmp_path / "kvfa.pt").exists() and (tmp_path / "log.jsonl").exists()
    assert report["auc"] > 0.75
    assert report["mean_genuine"] > report["mean_wrong_key"] + 0.2
    assert report["mean_genuine"] > report["mean_impostor"] + 0.2


def test_kvfa_outputs_unit_vectors_and_depend_on_key():
    model = KVFA(in_dim=16, dim=8, key_dim=32, hidden=32)
    e = torch.randn(4, 16)
    k1, k2 = (torch.from_numpy(keys.generate().code("m", 32)) for _ in range(2))
    a, b = model.keyed(e, k1), model.keyed(e, k2)
    assert torch.allclose(a.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(a, b)


def test_enroll_and_verify_with_the_shipped_model(lfw_sample, tmp_path):
    photo = lfw_sample / "Colin_Powell" / "Colin_Powell_0001.jpg"
    other = lfw_sample / "Colin_Powell" / "Colin_Powell_0002.jpg"
    key = tmp_path / "k.bin"
    keys.save(keys.generate(), key)
    ref = tmp_path / "ref.npy"
    res = runner.invoke(app, ["enroll", str(photo), "--out", str(ref), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(ref).st_mode) == 0o600 and np.load(ref).ndim == 1
    by_photo = runner.invoke(app, ["verify", str(other), "--key", str(key), "--ref", str(photo),
                                   "--device", "cpu", "--json"])
    by_ref = runner.invoke(app, ["verify", str(other), "--key", str(key), "--ref", str(ref),
                                 "--device", "cpu", "--json"])
    a, b = (json.loads(r.output.splitlines()[-1]) for r in (by_photo, by_ref))
    assert abs(a["similarity"] - b["similarity"]) < 1e-4 and set(a) == {"similarity", "threshold", "match"}
    # The exit code is the verdict (0 match, 1 no match), and the verdict is the threshold's.
    assert a["match"] == (a["similarity"] >= a["threshold"]) and b["match"] == a["match"]
    assert by_photo.exit_code == by_ref.exit_code == (0 if a["match"] else 1)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    res = runner.invoke(app, ["verify", str(other), "--key", str(key), "--ref",
                              str(tmp_path / "bad.npy"), "--device", "cpu"])
    assert res.exit_code == 2 and "enrolment" in res.output
