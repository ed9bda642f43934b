"""Is a clip's audio kept? Compare the audio streams of an input clip and its anonymized output:
codec, sample rate, channels, duration, packet count and a hash of the packets' bytes.

    python benchmarks/audio_kept.py IN.mp4 OUT.mp4
"""

from __future__ import annotations

import hashlib
import json
import sys

import av


def audio(path: str) -> dict | None:
    with av.open(path) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        h, n, end = hashlib.sha256(), 0, 0.0
        for p in c.demux(s):
            if p.size:
                h.update(bytes(p))
                n += 1
                end = max(end, float((p.pts + (p.duration or 0)) * p.time_base))
        return {"codec": s.codec_context.name, "rate": s.codec_context.sample_rate,
                "channels": s.codec_context.channels, "packets": n,
                "duration_s": round(end, 3), "packets_sha256": h.hexdigest()[:16]}


if __name__ == "__main__":
    a, b = audio(sys.argv[1]), audio(sys.argv[2])
    print(json.dumps({"input": a, "output": b, "identical": a == b}))
