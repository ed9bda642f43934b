"""Reading and rewriting video files with PyAV, frame by frame.

PyAV's wheels carry their own FFmpeg build (H.264, VP9, MPEG-4, AAC, Opus, ...), so a fresh
machine needs no system ffmpeg, and it exposes packets as well as frames: the audio is copied
packet by packet (remuxed, never re-encoded, so it keeps its quality and its exact duration),
while the video is decoded, handed to a callback and encoded again.

The output has the input's container (by file extension), upright frame size, frame rate and
time base; each frame keeps its presentation time, so variable frame rates and the sync with
the audio survive. Nothing else is copied over: metadata (titles, GPS location tags, device names),
subtitles and data streams can identify people, so they are left out, as image metadata is.
A clip that a phone tagged with a display matrix (a rotation, a mirror for a front camera) is
read as a player shows it (faces are detected the right way up) and written so, with no
matrix left to apply.

Every failure of the demuxer or decoder becomes one ``FaceanonError`` naming the file: an empty
or truncated file, a file with no video stream, or one that is not a video at all.
"""

from __future__ import annotations

import io
import math
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from faceanon.errors import FaceanonError
from faceanon.metadata import GPS, OTHER, TEXT, THUMBNAIL, Found

# Container by extension, and the video encoder and its options for it. H.264 at CRF 17 is
# visually lossless for faces; VP9 is what WebM allows; AVI players expect MPEG-4 part 2.
_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
_ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "mp4": ("libx264", {"crf": "17", "preset": "veryfast"}),
    "mov": ("libx264", {"crf": "17", "preset": "veryfast"}),
    "matroska": ("libx264", {"crf": "17", "preset": "veryfast"}),
    "webm": ("libvpx-vp9", {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "avi": ("mpeg4", {"qscale": "2"}),
}
VIDEO_SUFFIXES = tuple(_FORMATS)
# A file whose decodable frames end this many frame durations before its declared end is
# reported as truncated rather than processed in part.
_TRUNCATION_SLACK = 2

# Container and stream tags that only say how a file was muxed: all that ``rewrite`` leaves.
_PLAIN_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "software",
               "language", "handler_name", "vendor_id", "duration"}
_LOCATION_TAGS = ("location", "iso6709", "gps")

# A display matrix as (counter-clockwise quarter turns, mirrored after them).
Transform = tuple[int, bool]

# A clip to read: its file's bytes, or the file itself, which is then read as it is decoded
# (a long clip is never held in memory whole).
Clip = bytes | Path

# What the edit callback returns for a frame that must be left out (``--no-face skip``).
FrameEdit = Callable[[int, np.ndarray], "np.ndarray | None"]


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class RewriteStats:
    """What a rewrite did: frames decoded and written, and what became of the audio."""

    frames_in: int
    frames_out: int
    audio: str  # "copied", "none" (the input has none) or "dropped: <reason>"


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """FFmpeg's errors (and PyAV's own ValueErrors on damaged streams) as one line naming the
    file."""
    try:
        yield
    except FaceanonError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as e:
        reason = (getattr(e, "strerror", None) or str(e)).split("\n")[0][:160]
        raise FaceanonError(f"not a readable video ({reason})", name) from None


def _open(clip: Clip, name: str) -> av.container.InputContainer:
    try:
        empty = not clip if isinstance(clip, bytes) else clip.stat().st_size == 0
    except OSError as e:
        raise FaceanonError(f"cannot read: {e.strerror or e}", name) from None
    if empty:
        raise FaceanonError("empty file (0 bytes)", name)
    with _reading(name):
        # "file:" so that FFmpeg takes no part of a name for a protocol ("a:b.mp4").
        container = av.open(io.BytesIO(clip) if isinstance(clip, bytes) else f"file:{clip}", "r")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise FaceanonError(f"no video stream ({', '.join(kinds)} only)" if kinds else
                            "no stream found (truncated, or not a video)", name)
    return container


def read_frames(clip: Clip, name: str) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of the first video stream, in presentation order: its time in seconds and
    its pixels, (H, W, 3) uint8 RGB.

    Raises ``FaceanonError`` after the last good frame when the file ends before the length its
    header declares (a truncated download or copy), so a caller that reads the whole clip before
    writing anything never publishes a clip cut short.
    """
    container = _open(clip, name)
    try:
        stream = container.streams.video[0]
        count, last = 0, 0.0
        transform: Transform | None = None
        with _reading(name):
            for frame in container.decode(stream):
                count += 1
                last = float(frame.time or 0.0)
                if transform is None:
                    transform = display_transform(frame)
                yield last, upright(frame, transform)
        if count == 0:
            raise FaceanonError("no decodable video frame", name)
        _check_complete(stream, count, last, name)
    finally:
        container.close()


def find_clip_metadata(clip: Clip, name: str) -> list[Found]:
    """What a clip carries besides one picture and one sound track (empty for what ``rewrite``
    writes): tags other than the muxer's own (titles, comments, GPS location, creation times,
    device names), chapters, and further streams (subtitles, data, cover art, another camera)."""
    container = _open(clip, name)
    found: list[Found] = []
    try:
        tagged = [("container", container.metadata)] + [
            (f"{s.type} stream {s.index}", s.metadata) for s in container.streams]
        for where, tags in tagged:
            for key, value in tags.items():
                if key.lower() not in _PLAIN_TAGS:
                    kind = GPS if any(t in key.lower() for t in _LOCATION_TAGS) else OTHER
                    found.append((kind, f"{where} tag {key}={str(value)[:60]!r}"))
        chapters = len(container.chapters())
        if chapters:
            found.append((TEXT, f"{chapters} chapters (titled marks in the timeline)"))
        for kind, streams in (("video", container.streams.video[1:]),
                              ("audio", container.streams.audio[1:])):
            for stream in streams:
                cover = kind == "video" and stream.disposition & av.stream.Disposition.attached_pic
                found.append((THUMBNAIL, f"cover picture in stream {stream.index}") if cover
                             else (OTHER, f"a further {kind} stream ({stream.index})"))
        for stream in container.streams:
            if stream.type not in ("video", "audio"):
                found.append((TEXT if stream.type == "subtitle" else OTHER,
                              f"{stream.type} stream {stream.index}"))
    finally:
        container.close()
    return found


def upright(frame: av.VideoFrame, transform: Transform) -> np.ndarray:
    """The frame's pixels as a player shows them, by its clip's ``display_transform``: turned
    by quarter turns (a portrait phone clip is stored sideways, turned -90 degrees), then
    mirrored left to right where the matrix mirrors."""
    turns, mirror = transform
    rgb = frame.to_ndarray(format="rgb24")
    if turns:
        rgb = np.rot90(rgb, turns)
    if mirror:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb) if turns or mirror else rgb


def display_transform(frame: av.VideoFrame) -> Transform:
    """(counter-clockwise quarter turns, mirror after them) of the frame's display matrix.
    Read from a clip's first frame only: the matrix belongs to the stream, and PyAV 18 leaks
    memory on every ``side_data`` read (about 100 MB over 1,337 frames).

    FFmpeg's matrix maps a row vector ``[x y] @ [[a, b], [c, d]]``; a rotation by r degrees is
    ``[[cos r, -sin r], [sin r, cos r]]`` and a mirror multiplies the first column by -1
    (determinant -1). ``VideoFrame.rotation`` reads a mirror as a half turn, so the matrix is
    read here instead."""
    for data in frame.side_data:
        if data.type == SideDataType.DISPLAYMATRIX:
            a, b, _, c, d = np.frombuffer(bytes(data), np.int32)[:5] / 65536.0
            mirror = a * d - b * c < 0
            if mirror:
                a = -a
            return round(math.degrees(math.atan2(-b, a)) / 90) % 4, bool(mirror)
    return 0, False


def _check_complete(stream: av.VideoStream, count: int, last: float, name: str) -> None:
    """Compare what was decoded with what the header declares for the video stream: its frame
    count (MP4, MOV, AVI) or its duration (Matroska and WebM tag it). The container's duration
    is not used: it covers the audio too, which may rightly run longer."""
    if stream.frames and count + _TRUNCATION_SLACK < stream.frames:
        raise FaceanonError(f"truncated video: {count} of {stream.frames} frames decodable",
                            name)
    declared = _declared_seconds(stream)
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    if declared is not None and declared - last > (1 + _TRUNCATION_SLACK) / rate:
        raise FaceanonError(f"truncated video: frames end at {last:.2f} s of a declared "
                            f"{declared:.2f} s", name)


def _declared_seconds(stream: av.VideoStream) -> float | None:
    """The video stream's duration by its header, or None where it states none."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")  # "HH:MM:SS.fraction"
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def rewrite(clip: Clip, name: str, edit: FrameEdit) -> tuple[bytes, RewriteStats]:
    """The video re-encoded with each frame replaced by ``edit(index, rgb)`` (None: the frame is
    left out; the others keep their times), its audio copied; the encoded file's bytes.

    ``name``'s extension picks the container, so the output is the input's kind of file.
    """
    fmt = _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise FaceanonError(f"not a video file type ({', '.join(VIDEO_SUFFIXES)})", name)
    source = _open(clip, name)
    buffer = io.BytesIO()
    try:
        video_in = source.streams.video[0]
        audio = _audio_fate(clip, name, fmt)
        audio_in = source.streams.audio[0] if audio == "copied" else None
        size = _upright_size(clip, name)
        with _reading(name), av.open(buffer, "w", format=fmt) as sink:
            video_out = _video_stream(sink, video_in, fmt, size)
            audio_out = sink.add_stream_from_template(audio_in) if audio_in else None
            frames_in = frames_out = 0
            transform: Transform | None = None
            for packet in source.demux(*(s for s in (video_in, audio_in) if s is not None)):
                if packet.stream is audio_in:
                    if packet.dts is not None:
                        packet.stream = audio_out
                        sink.mux(packet)
                    continue
                for frame in packet.decode():
                    if transform is None:
                        transform = display_transform(frame)
                    new = edit(frames_in, upright(frame, transform))
                    frames_in += 1
                    if new is not None:
                        frames_out += 1
                        sink.mux(video_out.encode(_frame(new, frame, video_in)))
            sink.mux(video_out.encode(None))
    finally:
        source.close()
    return buffer.getvalue(), RewriteStats(frames_in, frames_out, audio)


def _upright_size(clip: Clip, name: str) -> tuple[int, int]:
    """(width, height) of the clip's frames as ``read_frames`` gives them."""
    frames = read_frames(clip, name)
    try:
        height, width = next(frames)[1].shape[:2]
    finally:
        frames.close()
    return width, height


def _frame(rgb: np.ndarray, like: av.VideoFrame, stream: av.VideoStream) -> av.VideoFrame:
    """A frame to encode from ``rgb``, at ``like``'s presentation time."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts, frame.time_base = like.pts, stream.time_base
    return frame


def _video_stream(sink: av.container.OutputContainer, source: av.VideoStream, fmt: str,
                  size: tuple[int, int]) -> av.VideoStream:
    """The output's video stream: the upright frames' (width, height) ``size``, the input's
    frame rate and time base."""
    codec, options = _ENCODERS[fmt]
    rate = source.average_rate or source.guessed_rate or Fraction(25)
    stream = sink.add_stream(codec, rate=rate, options=dict(options))
    stream.width, stream.height = size
    # 4:2:0 needs even sides; an odd-sized clip keeps its size in 4:4:4 instead.
    even = stream.width % 2 == 0 and stream.height % 2 == 0
    stream.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
    stream.time_base = source.time_base
    stream.codec_context.time_base = source.time_base
    return stream


def _audio_fate(clip: Clip, name: str, fmt: str) -> str:
    """What becomes of the first audio stream: "copied" when the container takes its codec as
    it is (tried on a throw-away file with its first packet), else dropped, saying why, rather
    than re-encoded behind the user's back; "none" without one."""
    source = _open(clip, name)
    try:
        if not source.streams.audio:
            return "none"
        stream = source.streams.audio[0]
        with av.open(io.BytesIO(), "w", format=fmt) as trial:
            out = trial.add_stream_from_template(stream)
            for packet in source.demux(stream):
                if packet.dts is not None:
                    packet.stream = out
                    trial.mux(packet)
                    break
    except (av.FFmpegError, ValueError) as e:
        return f"dropped: {fmt} does not take {stream.codec_context.name} as it is ({e})"
    finally:
        source.close()
    return "copied"
