"""anonymize --reversible and faceanon restore on examples/images laid out as LFW: originals
back pixel-identical with the key, nothing with a wrong key, a tampered face refused alone,
payloads bound to their image, folder and archive outputs, audit's notice."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO
from faceanon import keys
from faceanon.audit import audit
from faceanon.cli import app
from faceanon.datasets import PAYLOAD_SUFFIX, open_input
from faceanon.images import decode, encode, load_image
from faceanon.reversible import PayloadError, Sealer, parse
from test_audit import named_input

runner = CliRunner()
KEY = keys.Key(bytes(range(32)), 0)
OTHER = keys.Key(bytes(range(1, 33)), 0)


def image() -> np.ndarray:
    return load_image(REPO / "examples" / "images" / "astronaut.jpg")


def sealed(name: str = "p/p_0001.jpg") -> tuple[np.ndarray, bytes, bytes]:
    """(original, published JPEG, payload) for two blurred 'faces' of the astronaut photo."""
    original = image()
    boxes = np.array([[150.0, 60, 260, 200], [20, 20, 80, 90]])
    output = original.copy()
    for x1, y1, x2, y2 in boxes.astype(int):
        output[y1:y2, x1:x2] = cv2.GaussianBlur(output[y1:y2, x1:x2], (0, 0), 8)
    published = encode(output, name)
    payload = Sealer(KEY).seal(name, original=original, output=output, published=published,
                               boxes=boxes, source="Eileen_Collins/Eileen_Collins_0001.jpg",
                               label="Eileen_Collins")
    return original, published, payload


def test_payload_restores_pixel_identical_and_is_bound_to_key_name_and_bytes() -> None:
    original, published, payload = sealed()
    restored = Sealer(KEY).open("p/p_0001.jpg", published, payload)
    assert np.array_equal(restored.pixels, original)
    assert (restored.relpath, restored.label) == ("Eileen_Collins/Eileen_Collins_0001.jpg",
                                                  "Eileen_Collins")
    assert b"Eileen" not in payload and len(list(parse(payload))) == 3  # image + 2 faces
    with pytest.raises(PayloadError, match="does not open with this key"):
        Sealer(OTHER).open("p/p_0001.jpg", published, payload)
    with pytest.raises(PayloadError, match="does not open"):
        Sealer(KEY).open("p/p_0002.jpg", published, payload)       # moved to another image
    records = list(parse(payload))
    last_face_byte = len(payload) - 1                             # inside face 1's ciphertext
    flipped = payload[:last_face_byte] + bytes([payload[last_face_byte] ^ 1])
    with pytest.raises(PayloadError, match=r"face 1 refused"):
        Sealer(KEY).open("p/p_0001.jpg", published, flipped)
    assert records[2][:2] == (1, 1)
    edited = encode(decode(published) // 2 * 2, "x.jpg")             # published file re-encoded
    with pytest.raises(PayloadError, match="re-encoded"):
        Sealer(KEY).open("p/p_0001.jpg", edited, payload)
    with pytest.raises(PayloadError, match="not a faceanon restore payload"):
        parse(b"GIF89a" + payload)


@pytest.fixture(scope="module")
def reversible(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(input, key file, base folder) with a blur --reversible output in base/anon."""
    base = tmp_path_factory.mktemp("reversible")
    key = base / "k.bin"
    keys.save(KEY, key)
    src = named_input(base / "in")
    res = runner.invoke(app, ["anonymize", str(src), "--key", str(key), "--out",
                              str(base / "anon"), "--method", "blur", "--reversible",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return src, key, base


def originals(src: Path) -> dict[str, np.ndarray]:
    return {e.relpath: e.load() for e in open_input(src).entries()}


def test_restore_gives_the_originals_back_under_their_names(reversible) -> None:
    src, key, base = reversible
    anon = base / "anon"
    assert len(list(anon.rglob("*" + PAYLOAD_SUFFIX))) == 3
    res = runner.invoke(app, ["restore", str(anon), "--key", str(key), "--out", str(base / "back")])
    assert res.exit_code == 0, res.output
    for rel, pixels in originals(src).items():
        name = rel if rel.endswith(".png") else rel + ".png"   # JPEGs come back lossless
        assert np.array_equal(load_image(base / "back" / name), pixels), rel
    again = runner.invoke(app, ["restore", str(anon), "--key", str(key), "--out",
                                str(base / "back"), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout.splitlines()[-1])["ok"] == 3


def test_wrong_key_restores_nothing(reversible, tmp_path: Path) -> None:
    _, _, base = reversible
    other = tmp_path / "other.bin"
    keys.save(OTHER, other)
    res = runner.invoke(app, ["restore", str(base / "anon"), "--key", str(other), "--out",
                              str(tmp_path / "back")])
    assert res.exit_code == 1
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 3 and all("does not open with this key" in l for l in errors)
    assert not [p for p in (tmp_path / "back").rglob("*") if p.is_file()]


def test_tampered_payload_refuses_its_image_only(reversible, tmp_path: Path) -> None:
    src, key, base = reversible
    anon = tmp_path / "anon"
    for path in (base / "anon").rglob("*"):
        if path.is_file():
            (anon / path.relative_to(base / "anon")).parent.mkdir(parents=True, exist_ok=True)
            (anon / path.relative_to(base / "anon")).write_bytes(path.read_bytes())
    sidecars = sorted(anon.rglob("*" + PAYLOAD_SUFFIX))
    data = bytearray(sidecars[0].read_bytes())
    data[-1] ^= 0x01
    sidecars[0].write_bytes(bytes(data))
    sidecars[1].write_bytes(sidecars[2].read_bytes())         # a payload moved to another image
    res = runner.invoke(app, ["restore", str(anon), "--key", str(key), "--out", str(tmp_path / "b")])
    assert res.exit_code == 1
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 2 and "refused" in res.stderr
    restored = [p for p in (tmp_path / "b").rglob("*") if p.is_file()]
    assert len(restored) == 1


def test_audit_reports_the_payload_as_a_notice_not_a_leak(reversible, tmp_path: Path) -> None:
    _, _, base = reversible
    report = audit(base / "anon")
    assert report.findings == [] and report.checked["restore payloads"] == 3
    assert "reversible payload present" in report.notices[0]
    stray = base / "anon" / ("stray.jpg" + PAYLOAD_SUFFIX)
    stray.write_bytes(b"plain text")
    try:
        kinds = {(f.path, f.detail) for f in audit(base / "anon").findings}
    finally:
        stray.unlink()
    assert kinds == {("stray.jpg" + PAYLOAD_SUFFIX, "restore payload without its image")}


def test_archive_output_keeps_payloads_and_restores(reversible, tmp_path: Path) -> None:
    src, key, _ = reversible
    res = runner.invoke(app, ["anonymize", str(src), "--key", str(key), "--out",
                              str(tmp_path / "anon.h5"), "--method", "pixelate", "--reversible",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = audit(tmp_path / "anon.h5")
    assert report.findings == [] and report.checked["restore payloads"] == 3
    res = runner.invoke(app, ["restore", str(tmp_path / "anon.h5"), "--key", str(key), "--out",
                              str(tmp_path / "back.h5")])
    assert res.exit_code == 0, res.output
    back = {e.relpath: (e.load(), e.label) for e in open_input(tmp_path / "back.h5").entries()}
    for rel, pixels in originals(src).items():
        name = rel if rel.endswith(".png") else rel + ".png"
        assert np.array_equal(back[name][0], pixels) and back[name][1] == rel.split("/")[0]


def test_reversible_needs_a_key_and_changes_no_published_image(reversible, tmp_path: Path) -> None:
    src, key, base = reversible
    res = runner.invoke(app, ["anonymize", str(src), "--keep-names", "--out", str(tmp_path / "o"),
                              "--method", "blur", "--reversible"])
    assert res.exit_code == 2 and res.stderr.strip().startswith("error:")
    assert "--reversible needs --key" in res.stderr
    res = runner.invoke(app, ["anonymize", str(src), "--key", str(key), "--out",
                              str(tmp_path / "plain"), "--method", "blur", "--device", "cpu"])
    assert res.exit_code == 0
    plain = sorted(p for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert plain and all(p.read_bytes() == (base / "anon" / p.relative_to(tmp_path / "plain"))
                         .read_bytes() for p in plain)
    res = runner.invoke(app, ["restore", str(tmp_path / "plain"), "--key", str(key), "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 1 and "no restore payload" in res.stderr


def test_a_clip_payload_in_parts_restores_the_file_and_misses_no_part(monkeypatch) -> None:
    import faceanon.reversible as reversible

    monkeypatch.setattr(reversible, "CLIP_PART", 1000)
    original, published = bytes(range(256)) * 15, b"published clip"
    payload = Sealer(KEY).seal_clip("a.mp4", original=original, published=published,
                                    source="Eileen_Collins/holiday.mp4", label=None)
    records = list(parse(payload))
    assert len(records) == 4 and b"holiday" not in payload
    restored = Sealer(KEY).open("a.mp4", published, payload)
    assert (restored.data(), restored.relpath) == (original, "Eileen_Collins/holiday.mp4")
    with pytest.raises(PayloadError, match="does not open with this key"):
        Sealer(OTHER).open("a.mp4", published, payload)
    with pytest.raises(PayloadError, match="changed or re-encoded"):
        Sealer(KEY).open("a.mp4", published + b"!", payload)
    # Drop the last part: the header says 4.
    short = payload[:-(reversible._RECORD.size + len(records[-1][3]))]
    short = reversible._HEAD.pack(reversible.MAGIC, 3) + short[reversible._HEAD.size:]
    with pytest.raises(PayloadError, match="clip part 3 of 4 missing"):
        Sealer(KEY).open("a.mp4", published, short)
