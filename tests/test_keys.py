import os
import stat

import numpy as np
import pytest

from faceanon import keys
from faceanon.errors import FaceanonError


def test_hkdf_matches_rfc5869_test_case_1():
    okm = keys.hkdf_sha256(bytes([0x0B] * 22), salt=bytes(range(13)),
                           info=bytes(range(0xF0, 0xFA)), length=42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_generate_refuses_short_keys():
    with pytest.raises(FaceanonError, match="at least 128"):
        keys.generate(64)
    assert keys.generate(128).bits == 128
    assert keys.generate().bits == 256


def test_save_is_private_and_does_not_overwrite(tmp_path):
    path = tmp_path / "k.bin"
    key = keys.generate()
    keys.save(key, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not keys.readable_by_others(path)
    with pytest.raises(FaceanonError, match="exists"):
        keys.save(keys.generate(), path)
    assert keys.load(path) == key
    keys.save(keys.generate(), path, force=True)
    assert keys.load(path) != key


def test_every_single_bit_flip_and_every_truncation_is_detected(tmp_path):
    data = keys.generate().to_bytes()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FaceanonError):
            keys.parse(bytes(flipped))
    for n in range(len(data)):
        with pytest.raises(FaceanonError):
            keys.parse(data[:n])


def test_repr_and_fingerprint_hide_the_secret():
    key = keys.generate()
    assert key.secret.hex() not in repr(key)
    assert key.secret.hex()[:8] not in key.fingerprint.replace(":", "")
    assert len(key.fingerprint) == 19


def test_codes_of_one_bit_different_keys_are_as_unrelated_as_random_keys():
    rng = np.random.default_rng(0)
    dim, trials = 512, 200
    one_bit, random_pairs = [], []
    for _ in range(trials):
        key = keys.generate()
        bit = int(rng.integers(key.bits))
        near = bytearray(key.secret)
        near[bit // 8] ^= 1 << (bit % 8)
        a = key.code("generator/v1", dim)
        one_bit.append(float(a @ keys.Key(bytes(near), key.created).code("generator/v1", dim)) / dim)
        random_pairs.append(float(a @ keys.generate().code("generator/v1", dim)) / dim)
    # Cosine of two independent ±1 vectors: mean 0, std 1/sqrt(dim) ≈ 0.044.
    for sims in (one_bit, random_pairs):
        assert abs(np.mean(sims)) < 4 / np.sqrt(dim * trials)
        assert 0.7 / np.sqrt(dim) < np.std(sims) < 1.3 / np.sqrt(dim)
        assert max(abs(s) for s in sims) < 0.25


def test_code_is_deterministic_and_model_separated():
    key = keys.generate()
    a = key.code("projector/v1", 256)
    assert np.array_equal(a, key.code("projector/v1", 256))
    assert set(np.unique(a)) <= {-1.0, 1.0}
    assert abs(float(a @ key.code("kvfa/v1", 256))) / 256 < 0.3
