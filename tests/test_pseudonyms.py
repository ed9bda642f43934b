"""Keyed pseudonyms for names in paths and labels, and an anonymized output that keeps none."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from faceanon import keys
from faceanon.cli import app
from faceanon.errors import FaceanonError
from faceanon.pseudonyms import Pseudonyms, name_parts

runner = CliRunner()
KEY_A, KEY_B = keys.Key(bytes(32), 0), keys.Key(bytes(31) + b"\x01", 0)


def test_same_name_same_pseudonym_other_key_unrelated() -> None:
    a, again, b = Pseudonyms(KEY_A), Pseudonyms(KEY_A), Pseudonyms(KEY_B)
    p = a.path("George_W_Bush/George_W_Bush_0001.jpg")
    folder, filename = p.split("/")
    assert filename == f"{folder}_0001.jpg", "folder and file name share one pseudonym"
    assert again.path("George_W_Bush/George_W_Bush_0001.jpg") == p
    assert b.name("George_W_Bush") != a.name("George_W_Bush")
    assert a.name("George_W_Bush") != a.name("George_W_Bushh")
    assert len(folder) == 17 and folder.isalnum() and not set(folder) & set("aeiouyAEIOUY")
    assert a.mapping["George_W_Bush"] == folder and len(a.mapping) == 2


@pytest.mark.parametrize("relpath, kept", [
    ("a/00017.png", "/00017.png"),            # an index alone names no one
    ("x/IMG 12.jpeg", " 12.jpeg"),            # the index keeps its separator
    ("x/Bush2003_12.png", "_12.png"),
    ("x/noext", ""),
])
def test_index_and_extension_are_kept(relpath: str, kept: str) -> None:
    out = Pseudonyms(KEY_A).path(relpath)
    assert out.endswith(kept) and "Bush" not in out and "IMG" not in out
    assert out.count("/") == relpath.count("/")


def test_name_parts_are_what_gets_replaced() -> None:
    assert name_parts("Colin_Powell/Colin_Powell_0002.jpg") == ["Colin_Powell", "Colin_Powell"]
    assert name_parts("set/00017.png") == ["set"]


def test_collision_is_an_error() -> None:
    p = Pseudonyms(KEY_A)
    p.name("Alice")
    p._owner[p.name("Bob")] = "Carol"  # as if Carol had drawn Bob's pseudonym earlier
    p.mapping.pop("Bob")
    with pytest.raises(FaceanonError, match="share the pseudonym"):
        p.name("Bob")


def test_anonymized_archive_has_pseudonyms_and_private_records(lfw_sample: Path,
                                                              tmp_path: Path) -> None:
    key = tmp_path / "k.bin"
    keys.save(KEY_A, key)
    out = tmp_path / "anon.h5"
    res = runner.invoke(app, ["anonymize", str(lfw_sample), "--key", str(key), "--out", str(out),
                              "--method", "pixelate", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    private = tmp_path / "anon.h5.private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert sorted(p.name for p in private.iterdir()) == ["manifest.jsonl", "names.json", "run.json"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon.h5", "anon.h5.private", "k.bin",
                                                          "lfw_sample"]
    names = json.loads((private / "names.json").read_text())
    assert set(names) == {"Aaron_Peirsol", "Colin_Powell", "Serena_Williams"}
    with h5py.File(out) as h5:
        stored = [bytes(n).decode() for n in h5["names"][:]]
        labels = list(h5["labels"].asstr()[:])
        raw = b"".join(bytes(n) for n in h5["names"][:]) + "".join(labels).encode()
    assert sorted(labels) == sorted([names["Aaron_Peirsol"]] * 2 + [names["Colin_Powell"]] * 3
                                    + [names["Serena_Williams"]] * 2)
    assert f"{names['Colin_Powell']}/{names['Colin_Powell']}_0003.jpg" in stored
    assert not any(n.encode() in raw for n in names), "no name in the archive's paths or labels"
    run = json.loads((private / "run.json").read_text())
    assert run["settings"]["names"].startswith("pseudonymized")
    assert run["input"] == str(lfw_sample.absolute())
