"""Test videos written with PyAV: moving squares in mp4 (h264/mpeg4) and webm (vp9/vp8)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CODECS = {".mp4": ("libx264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}
# SVT-AV1 runs dozens of threads per encoder and can deadlock when the test processes
# compete for two cores; one level of parallelism keeps it to a few.
ENCODER_OPTIONS = {"libsvtav1": {"svtav1-params": "lp=1"}}


def frames_of(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``uint8 [n, H, W, 3]``: a bright square moving right over a dark gradient."""
    rng = np.random.default_rng(seed)
    base = np.linspace(20, 90, width, dtype=np.float32)[None, :, None] + rng.uniform(0, 20, 3)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    for t in range(n):
        frame = np.broadcast_to(base, (height, width, 3)).copy()
        left = (t * 3) % max(1, width - side)
        frame[height // 3 : height // 3 + side, left : left + side] = (230, 200, 40)
        out[t] = frame.clip(0, 255)
    return out


def write_video(
    path: Path, n: int = 24, height: int = 48, width: int = 64, fps: int = 24, seed: int = 0
) -> Path:
    """Encode ``frames_of(...)`` to ``path`` (the suffix picks the container and codec)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    last_error = None
    for codec in CODECS[path.suffix]:
        try:
            with av.open(str(path), mode="w") as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                for frame in frames_of(n, height, width, seed):
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            return path
        except Exception as err:  # noqa: BLE001 - try the next codec this build has
            last_error = err
    raise RuntimeError(f"no codec could write {path}: {last_error}")


def write_corrupt(path: Path) -> Path:
    """A file with a video extension that no decoder can read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path
