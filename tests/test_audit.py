"""faceanon audit on a small LFW-style set made from examples/images: nothing on the clean
output, and each of a corpus of planted leaks found, one kind per planted file."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from conftest import REPO
from faceanon import keys
from faceanon.audit import audit
from faceanon.cli import app
from faceanon.images import decode, encode

runner = CliRunner()
EXAMPLES = REPO / "examples" / "images"


def named_input(root: Path) -> Path:
    """examples/images laid out as LFW: Name/Name_0001.jpg."""
    layout = {"Eileen_Collins/Eileen_Collins_0001.jpg": "astronaut.jpg",
              "Eileen_Collins/Eileen_Collins_0002.png": "cameraman.png",
              "Chelsea_Cat/Chelsea_Cat_0001.jpg": "chelsea_cat.jpg"}
    for rel, example in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLES / example, root / rel)
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(input, anonymized output): blur under a fixed key, names pseudonymized."""
    base = tmp_path_factory.mktemp("audit")
    key = base / "k.bin"
    keys.save(keys.Key(bytes(range(32)), 0), key)
    src = named_input(base / "in")
    res = runner.invoke(app, ["anonymize", str(src), "--key", str(key), "--out",
                              str(base / "anon"), "--method", "blur", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return src, base / "anon"


def manifest(out: Path) -> dict[str, dict]:
    path = out.with_name(out.name + ".private") / "manifest.jsonl"
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}


def with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """A JPEG with one more marker segment right after SOI."""
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def exif(gps: bool = False, thumbnail: bool = False) -> bytes:
    """A little-endian EXIF block: IFD0 with a GPS pointer and/or IFD1 describing a thumbnail."""
    entries = [(0x8825, 4, 1, 26)] if gps else [(0x010F, 2, 4, 0x00414243)]  # GPS IFD / Make
    ifd0 = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    ifd1_at = 8 + len(ifd0) + 4 + 2 + 4  # after IFD0 and an empty GPS IFD
    ifd0 += struct.pack("<I", ifd1_at if thumbnail else 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + struct.pack("<HI", 0, 0)
    if thumbnail:
        tiff += struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, 0) \
            + struct.pack("<HHII", 0x0202, 4, 1, 0) + struct.pack("<I", 0)
    return b"Exif\x00\x00" + tiff


def icc_with_description(text: str) -> bytes:
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text.encode() + b"\x00"
    body = struct.pack(">I", 1) + struct.pack(">4sII", b"desc", 144, len(desc)) + desc
    return struct.pack(">I", 128 + len(body)) + bytes(124) + body


def test_clean_output_has_no_finding(clean: tuple[Path, Path]) -> None:
    src, out = clean
    assert not (out / "manifest.jsonl").exists() and not (out / "run.json").exists()
    assert not any("Eileen" in str(p) or "Chelsea" in str(p) for p in out.rglob("*"))
    folders = {Path(r["output"]).parent for r in manifest(out).values()}
    assert len(folders) == 2, "one pseudonym folder per person"
    report = audit(out)
    assert report.findings == [] and report.checked["images"] == 3 and report.checked["names"] >= 2
    res = runner.invoke(app, ["audit", str(out), "--orig", str(src), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[-1])["leaks"] == 0


def test_every_planted_leak_is_found(clean: tuple[Path, Path], tmp_path: Path) -> None:
    src, anon = clean
    out = tmp_path / "leaky"
    shutil.copytree(anon, out)
    private = anon.with_name(anon.name + ".private")
    shutil.copytree(private, out.with_name(out.name + ".private"))
    written = manifest(anon)
    face_jpg = written["Eileen_Collins/Eileen_Collins_0001.jpg"]["output"]
    folder = Path(face_jpg).parent.as_posix()
    jpeg = (out / face_jpg).read_bytes()
    png = (out / written["Eileen_Collins/Eileen_Collins_0002.png"]["output"]).read_bytes()
    assert len(jpeg) > 1000 and png.startswith(b"\x89PNG")
    plants: dict[str, str] = {}

    def plant(rel: str, data: bytes, kind: str) -> None:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        plants[rel] = kind

    plant(f"{folder}/Eileen Collins_0007.jpg", jpeg, "name")
    plant(f"{folder}/p_0001.jpg", with_segment(jpeg, 0xE1, exif(gps=True)), "gps")
    plant(f"{folder}/p_0002.jpg", with_segment(jpeg, 0xE1, exif()), "exif")
    plant(f"{folder}/p_0003.jpg", with_segment(jpeg, 0xE1, exif(thumbnail=True)), "thumbnail")
    plant(f"{folder}/p_0004.jpg", with_segment(jpeg, 0xE1, b"http://ns.adobe.com/xap/1.0/\x00"
                                               b"<x:xmpmeta>Eileen Collins</x:xmpmeta>"), "xmp")
    plant(f"{folder}/p_0005.jpg", with_segment(jpeg, 0xE2, b"ICC_PROFILE\x00\x01\x01"
                                               + icc_with_description("Eileen's camera")),
          "icc profile")
    plant(f"{folder}/p_0006.jpg", with_segment(jpeg, 0xFE, b"photo of Eileen Collins"), "comment")
    plant(f"{folder}/p_0007.jpg", jpeg + b"Eileen Collins", "trailing data")
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Eileen Collins")
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, "PNG", pnginfo=info)
    plant(f"{folder}/p_0008.png", buf.getvalue(), "text chunk")
    plant(f"{folder}/p_0009.jpg", (src / "Eileen_Collins/Eileen_Collins_0001.jpg").read_bytes(),
          "copied image")  # --no-face copy, or an original dropped in
    plant("manifest.jsonl", (private / "manifest.jsonl").read_bytes(), "private record")
    plant("extra/run.json", (private / "run.json").read_bytes(), "private record")
    plant("old.h5.private/names.json", (private / "names.json").read_bytes(), "private record")
    plants["old.h5.private"] = plants.pop("old.h5.private/names.json")  # found as a whole
    # An original re-encoded over its anonymized version: not byte- or pixel-identical, but
    # unchanged (the cat has no face, as with --no-face copy).
    cat = decode((src / "Chelsea_Cat/Chelsea_Cat_0001.jpg").read_bytes())
    plant(written["Chelsea_Cat/Chelsea_Cat_0001.jpg"]["output"], encode(cat, "x.jpg"),
          "copied image")
    # Brighter but otherwise the original: not a copy, yet the recognizer still knows the face.
    astronaut = decode((src / "Eileen_Collins/Eileen_Collins_0001.jpg").read_bytes())
    plant(face_jpg, encode(np.clip(astronaut.astype(int) + 25, 0, 255).astype(np.uint8), "x.jpg"),
          "face matches original")
    assert len(plants) == 15 and len(set(plants.values())) == 12

    res = runner.invoke(app, ["audit", str(out), "--orig", str(src), "--json"])
    assert res.exit_code == 1, res.output
    found = {(f["path"], f["kind"]) for f in json.loads(res.output.splitlines()[-1])["findings"]}
    missing = set(plants.items()) - found
    assert not missing, f"audit missed {sorted(missing)}"
    assert {path for path, _ in found} <= set(plants), "no finding on the clean files"

    res = runner.invoke(app, ["audit", str(out)])
    assert res.exit_code == 1
    lines = res.stdout.strip().splitlines()
    assert lines[-1].endswith("leaks in 13 images") and all(": " in line for line in lines[:-1])


def test_names_kept_in_an_archive_are_found(clean: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = clean
    out = tmp_path / "kept.h5"
    res = runner.invoke(app, ["anonymize", str(src), "--out", str(out), "--method", "blur",
                              "--keep-names", "--no-face", "copy", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = audit(out)
    kinds = {(f.path, f.kind) for f in report.findings}
    assert ("Eileen_Collins/Eileen_Collins_0001.jpg", "name") in kinds
    assert ("Chelsea_Cat/Chelsea_Cat_0001.jpg", "copied image") in kinds, "--no-face copy"
    assert sum(f.detail.endswith("in the label") for f in report.findings) == 3


def test_audit_errors_are_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["audit", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.output.startswith("error: ")
    (tmp_path / "alone").mkdir()
    res = runner.invoke(app, ["audit", str(tmp_path / "alone"), "--orig", str(tmp_path / "nope")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
