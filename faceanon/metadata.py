"""Metadata hidden in image files, found by walking their raw segments and chunks.

Pillow exposes only some metadata (``info``, ``getexif``) and silently ignores the rest, so a
check built on it would miss a comment segment, an unknown APP marker, a thumbnail inside EXIF
or bytes after the end of the image. ``find_metadata`` therefore parses the containers
themselves: JPEG markers, PNG chunks, RIFF (WebP) chunks and the BMP header, and reports every
piece that is not needed to show the pixels. What faceanon itself writes (a bare JFIF header,
IHDR/IDAT/IEND, a plain VP8 stream, an uncompressed BMP) gives no finding.
"""

from __future__ import annotations

import re
import struct
import zlib

# Kinds of metadata, as ``faceanon audit`` prints them.
EXIF, GPS, XMP, THUMBNAIL, ICC, COMMENT, TEXT, IPTC, OTHER, TRAILING = (
    "exif", "gps", "xmp", "thumbnail", "icc profile", "comment", "text chunk", "iptc",
    "metadata", "trailing data")

Found = tuple[str, str]  # (kind, detail)

_XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks that only describe how to show the pixels.
_PNG_PLAIN = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT",
              b"pHYs", b"bKGD"}
_WEBP_PLAIN = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"}


def find_metadata(data: bytes) -> list[Found]:
    """Every metadata item in an encoded image's bytes (empty for a clean file)."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    return [(OTHER, "not a JPEG, PNG, WebP or BMP file")]


# ---------------------------------------------------------------------------------------- JPEG

def _jpeg(data: bytes) -> list[Found]:
    found: list[Found] = []
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return found + [(OTHER, f"unparsable JPEG structure at byte {pos}")]
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            rest = len(data) - pos - 2
            return found + ([(TRAILING, f"{rest} bytes after the end of the image")] if rest else [])
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        payload = data[pos + 4:pos + 2 + length]
        found += _jpeg_segment(marker, payload)
        pos += 2 + length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data to the next marker
            pos = _next_marker(data, pos)
    return found + [(OTHER, "JPEG without an end-of-image marker")]


def _next_marker(data: bytes, pos: int) -> int:
    """Offset of the next marker after entropy-coded data (skipping stuffed 0xFF00 and RSTn)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos


def _jpeg_segment(marker: int, payload: bytes) -> list[Found]:
    if marker == 0xFE:
        return [(COMMENT, f"COM segment: {_snippet(payload)}")]
    if marker == 0xE0:
        if payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            return [(THUMBNAIL, "JFIF thumbnail")] if payload[12] and payload[13] else []
        if payload.startswith(b"JFXX\x00"):
            return [(THUMBNAIL, "JFXX thumbnail extension")]
        return [(OTHER, "unknown APP0 segment")]
    if marker == 0xE1:
        if payload.startswith(b"Exif\x00"):
            return _exif(payload[6:])
        if payload.startswith(_XMP_ID) or b"<x:xmpmeta" in payload[:200]:
            return [(XMP, "XMP packet")]
        return [(OTHER, f"APP1 segment {_snippet(payload[:30])}")]
    if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        return [(ICC, _icc_description(payload[14:]))]
    if marker == 0xED:
        return [(IPTC, "APP13 (Photoshop / IPTC) segment")]
    if marker == 0xEE and payload.startswith(b"Adobe"):
        return []  # colour transform flag, needed to decode CMYK and YCCK
    if 0xE0 <= marker <= 0xEF:
        return [(OTHER, f"APP{marker - 0xE0} segment {_snippet(payload[:30])}")]
    return []


def _exif(tiff: bytes) -> list[Found]:
    """EXIF is a TIFF structure: IFD0 may point to a GPS IFD, and IFD1 holds a thumbnail."""
    found: list[Found] = [(EXIF, "EXIF block")]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return found
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd0,) = struct.unpack(order + "I", tiff[4:8])
        tags, next_ifd = _ifd(tiff, ifd0, order)
        if 0x8825 in tags:
            found.append((GPS, "EXIF GPS position"))
        if next_ifd:
            thumb_tags, _ = _ifd(tiff, next_ifd, order)
            if 0x0201 in thumb_tags or 0x0111 in thumb_tags:
                found.append((THUMBNAIL, "EXIF thumbnail (IFD1)"))
    except struct.error:
        found.append((OTHER, "truncated EXIF block"))
    return found


def _ifd(tiff: bytes, offset: int, order: str) -> tuple[set[int], int]:
    """The tag numbers of one TIFF IFD and the offset of the next one."""
    (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
    tags = {struct.unpack(order + "H", tiff[offset + 2 + 12 * i:offset + 4 + 12 * i])[0]
            for i in range(count)}
    (next_ifd,) = struct.unpack(order + "I", tiff[offset + 2 + 12 * count:offset + 6 + 12 * count])
    return tags, next_ifd


def _icc_description(profile: bytes) -> str:
    """The ICC profile's 'desc' text (where a tool or a person may have written anything)."""
    try:
        (count,) = struct.unpack(">I", profile[128:132])
        for i in range(count):
            sig, off, size = struct.unpack(">4sII", profile[132 + 12 * i:144 + 12 * i])
            if sig == b"desc":
                text = profile[off:off + size]
                if text[:4] == b"mluc":  # v4: UTF-16BE records
                    _, _, _, length, start = struct.unpack(">5I", text[8:28])  # first record
                    return "ICC profile: " + text[start:start + length].decode("utf-16-be", "replace")
                (length,) = struct.unpack(">I", text[8:12])
                return "ICC profile: " + text[12:12 + length].rstrip(b"\x00").decode("latin-1")
    except struct.error:
        pass
    return "ICC profile"


# ----------------------------------------------------------------------------------------- PNG

def _png(data: bytes) -> list[Found]:
    found: list[Found] = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IEND":
            rest = len(data) - pos
            return found + ([(TRAILING, f"{rest} bytes after IEND")] if rest else [])
        if ctype in _PNG_PLAIN:
            continue
        if ctype in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = body.split(b"\x00", 1)[0]
            kind = XMP if keyword == b"XML:com.adobe.xmp" else TEXT
            found.append((kind, f"{ctype.decode()} chunk {_snippet(keyword)}"))
        elif ctype == b"eXIf":
            found += _exif(body)
        elif ctype == b"iCCP":
            found.append((ICC, _png_icc(body)))
        else:
            found.append((OTHER, f"{_snippet(ctype)} chunk"))
    return found + [(OTHER, "PNG without an IEND chunk")]


def _png_icc(body: bytes) -> str:
    name, _, rest = body.partition(b"\x00")
    try:
        return f"{_icc_description(zlib.decompress(rest[1:]))} (named {_snippet(name)})"
    except zlib.error:
        return f"ICC profile named {_snippet(name)}"


# ---------------------------------------------------------------------------------- WebP, BMP

def _webp(data: bytes) -> list[Found]:
    found: list[Found] = []
    (size,) = struct.unpack("<I", data[4:8])
    pos, end = 12, min(8 + size, len(data))
    while pos + 8 <= end:
        ctype, length = struct.unpack("<4sI", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 8 + length + (length & 1)
        if ctype in _WEBP_PLAIN:
            continue
        kinds = {b"EXIF": EXIF, b"XMP ": XMP, b"ICCP": ICC}
        if ctype == b"EXIF":
            found += _exif(body[6:] if body.startswith(b"Exif\x00") else body)
        else:
            found.append((kinds.get(ctype, OTHER), f"{_snippet(ctype)} chunk"))
    rest = len(data) - (8 + size)
    return found + ([(TRAILING, f"{rest} bytes after the RIFF container")] if rest > 0 else [])


def _bmp(data: bytes) -> list[Found]:
    (size,) = struct.unpack("<I", data[2:6])
    found: list[Found] = []
    if len(data) >= 14 + 124 and struct.unpack("<I", data[14:18])[0] >= 124 \
            and data[14 + 56:14 + 60] in (b"MBED", b"DEBM"):
        found.append((ICC, "embedded ICC profile (BMP v5)"))
    if len(data) > size:
        found.append((TRAILING, f"{len(data) - size} bytes after the bitmap"))
    return found


def _snippet(raw: bytes, limit: int = 40) -> str:
    """A short printable rendering of some metadata bytes, for the finding's detail."""
    text = re.sub(r"[^\x20-\x7e]", "?", raw[:limit].decode("latin-1"))
    return repr(text + ("…" if len(raw) > limit else ""))
