"""Regenerate tests/data/bad/: one small file per kind of awkward input (run from the repo root).

Cases that a file cannot carry in git (permissions, symbolic-link loops, non-UTF-8 names) are
made at test time by tests/test_datasets.py.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).parent / "bad"


def face_like(h: int = 64, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 5) % 256, (y * 4) % 256, ((x + y) * 3) % 256], -1).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(face_like())
    (OUT / "zero_bytes.jpg").write_bytes(b"")
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=90)
    (OUT / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (OUT / "text_named.jpg").write_text("this is not an image\n")
    header = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)  # 40 gigapixels
    (OUT / "huge_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                                          + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                                          + png_chunk(b"IEND", b""))
    sixteen = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 20)
    Image.fromarray(sixteen).save(OUT / "sixteen_bit.png")
    rgb.convert("CMYK").save(OUT / "cmyk.jpg", quality=90)
    rgb.convert("L").save(OUT / "grayscale.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(OUT / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(OUT / "palette.png")
    frames = [rgb, Image.fromarray(255 - face_like())]
    frames[0].save(OUT / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "FaceCam"  # camera make: must not reach the outputs
    rgb.save(OUT / "exif_rotated.jpg", exif=exif.tobytes(), quality=90)
    (OUT / "notes.txt").write_text("not an image: recorded as skipped\n")


if __name__ == "__main__":
    main()
