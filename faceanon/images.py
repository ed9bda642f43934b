"""Decoding and encoding images safely: every pixel format in, plain 8-bit RGB to the networks.

Decoding refuses what would hurt (decompression bombs, animations whose other frames would
leak unanonymized) with a one-line reason; encoding never carries EXIF, XMP or GPS metadata
over from the input, because metadata can identify people as well as faces can.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceanon.errors import FaceanonError
from faceanon.fsutil import atomic_write_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_PIXELS = 100_000_000  # a 12,000 x 8,000 photo; larger headers are refused before decoding

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def decode(data: bytes, name: str = "<image>") -> np.ndarray:
    """Encoded bytes → (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    Grayscale, palette, CMYK and 16-bit images are converted; alpha is composited on white
    (faces are never transparent; the output is written without alpha).
    """
    if not data:
        raise FaceanonError("empty file (0 bytes)", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise FaceanonError(f"image too large ({w}x{h} pixels; limit {MAX_PIXELS:,})", name)
            if getattr(im, "n_frames", 1) > 1:
                raise FaceanonError(f"animated image with {im.n_frames} frames is not supported",
                                    name)
            im.load()
            im = ImageOps.exif_transpose(im)
    except FaceanonError:
        raise
    except UnidentifiedImageError:
        raise FaceanonError("not a recognised image format", name) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise FaceanonError(f"image too large: {_short(e)}", name) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise FaceanonError(f"corrupt image: {_short(e)}", name) from None
    return to_rgb8(im)


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → (H, W, 3) uint8 RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        gray = np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file (see ``decode``)."""
    return decode(read_file(path), str(path))


def read_file(path: str | Path) -> bytes:
    """Read a whole file, turning OS errors into one-line reasons."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise FaceanonError(f"cannot read: {e.strerror or e}", path) from None


def encode(rgb: np.ndarray, name: str, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB → bytes in the format that ``name``'s suffix names, no metadata."""
    fmt = _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise FaceanonError(f"cannot write images of type {Path(name).suffix!r}", name)
    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    options: dict = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def save_image(path: str | Path, rgb: np.ndarray) -> None:
    """Encode by suffix and write atomically (used for previews and contact sheets)."""
    atomic_write_bytes(path, encode(rgb, str(path)))


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
