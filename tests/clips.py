"""Synthetic video clips for the tests and the video benchmark: a real face (the public-domain
astronaut photo of examples/images) moving and growing across a textured background, with a
tone as audio, written with PyAV in any of the supported containers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FACE_IMAGE = REPO / "examples" / "images" / "astronaut.jpg"
_AUDIO = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "mp3"}
_VIDEO = {".webm": "libvpx-vp9", ".avi": "mpeg4"}
SAMPLE_RATE = 48000


def face_frames(n: int, size: tuple[int, int] = (320, 240), face: int = 150,
                grow: float = 0.3, gap: tuple[int, int] | None = None) -> list[np.ndarray]:
    """``n`` (H, W, 3) RGB frames of ``size`` (w, h): the astronaut's head, ``face`` px wide at
    first and ``grow`` times larger at the end, moving left to right; frames in ``gap`` (start,
    stop) show the background only."""
    w, h = size
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (h, w, 3), dtype=np.uint8), (0, 0), 6)
    head = np.asarray(Image.open(FACE_IMAGE).convert("RGB"))[20:300, 130:380]
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        side = int(face * (1 + grow * t))
        tile = cv2.resize(head, (side, int(side * head.shape[0] / head.shape[1])))
        frame = background.copy()
        if gap is None or not gap[0] <= i < gap[1]:
            x = int((w - side) * (0.2 + 0.6 * t))
            y = max((h - tile.shape[0]) // 2, 0)
            part = tile[:h - y, :w - x]
            frame[y:y + part.shape[0], x:x + part.shape[1]] = part
        frames.append(frame)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = True,
               faststart: bool = False, audio_seconds: float | None = None,
               rotation: int = 0, tags: dict[str, str] | None = None) -> Path:
    """``frames`` written to ``path`` (container by extension) at ``fps``, with a 440 Hz tone
    as long as the video (or ``audio_seconds``) when ``audio``; ``faststart`` puts an MP4's
    index first, as streaming sites do (a truncated copy still opens); ``rotation`` is the
    display rotation a player applies (counter-clockwise degrees; phones write -90); ``tags``
    are container tags (title, location, ...)."""
    suffix = path.suffix.lower()
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as out:
        out.metadata.update(tags or {})
        video = out.add_stream(_VIDEO.get(suffix, "libx264"), rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(_AUDIO[suffix], rate=SAMPLE_RATE) if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i  # in the encoder's time base, 1 / fps
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            write_tone(out, sound, audio_seconds or len(frames) / fps)
    return path


def write_tone(out: av.container.OutputContainer, stream: av.AudioStream,
                seconds: float) -> None:
    samples = int(seconds * SAMPLE_RATE)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE)).astype(np.float32)
    step = 960
    for start in range(0, samples, step):
        chunk = np.ascontiguousarray(tone[None, start:start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            out.mux(packet)
    out.mux(stream.encode(None))


def probe(path: Path) -> dict[str, object]:
    """What a round trip must keep: frame count, size, frame rate, and the audio's duration in
    seconds (from its packets) and codec."""
    with av.open(str(path)) as box:
        video = box.streams.video[0]
        frames = sum(1 for _ in box.decode(video))
        size, fps = (video.codec_context.width, video.codec_context.height), video.average_rate
    with av.open(str(path)) as box:
        audio = box.streams.audio[0] if box.streams.audio else None
        seconds = None
        if audio is not None:
            packets = [p for p in box.demux(audio) if p.dts is not None]
            seconds = float(sum(p.duration for p in packets) * audio.time_base)
        return {"frames": frames, "size": size, "fps": fps, "audio_seconds": seconds,
                "audio_codec": None if audio is None else audio.codec_context.name}
