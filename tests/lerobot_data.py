"""Small LeRobotDataset folders (v2.1 and v3.0 layouts) with AV1 videos written by PyAV.

Every frame's brightness says which episode it belongs to (``EPISODE_LEVEL[e]``), so a
test can tell whether a clip stayed inside its episode.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from videos import ENCODER_OPTIONS

FPS = 10
LENGTHS = (20, 14, 26)  # frames per episode
EPISODE_LEVEL = (40, 130, 220)  # the grey level of each episode's frames
CAMERAS = ("observation.images.top", "observation.images.wrist")
SIZE = 64
CODEC = "libsvtav1" if "libsvtav1" in av.codecs_available else "libx264"


def episode_frames(episode: int, camera: int) -> np.ndarray:
    """``uint8 [L, H, W, 3]``: the episode's grey level, a bar moving right, a camera tint."""
    n = LENGTHS[episode]
    frames = np.full((n, SIZE, SIZE, 3), EPISODE_LEVEL[episode], dtype=np.uint8)
    for t in range(n):
        left = (2 * t) % (SIZE - 8)
        frames[t, 24:40, left : left + 8] = (255, 255 - 60 * camera, 0)
    return frames


def write_video(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODEC, rate=FPS, options=ENCODER_OPTIONS.get(CODEC, {}))
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.codec_context.gop_size = 8
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def info(version: str, video_path: str) -> dict:
    features = {
        key: {
            "dtype": "video",
            "shape": [SIZE, SIZE, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": FPS, "video.codec": "av1", "video.pix_fmt": "yuv420p"},
        }
        for key in CAMERAS
    }
    features["action"] = {"dtype": "float32", "shape": [2], "names": None}
    return {
        "codebase_version": version,
        "robot_type": "test",
        "fps": FPS,
        "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS),
        "chunks_size": 1000,
        "video_path": video_path,
        "features": features,
    }


def write_v2(root: Path) -> Path:
    """One video per episode and camera; episodes listed in ``meta/episodes.jsonl``."""
    template = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info("v2.1", template)))
    lines = []
    for e, n in enumerate(LENGTHS):
        lines.append(json.dumps({"episode_index": e, "tasks": [f"task {e % 2}"], "length": n}))
        for c, key in enumerate(CAMERAS):
            path = template.format(episode_chunk=0, video_key=key, episode_index=e)
            write_video(root / path, episode_frames(e, c))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_v3(root: Path) -> Path:
    """Every episode of a camera in one video; spans in ``meta/episodes/.../file-000.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    template = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info("v3.0", template)))
    for c, key in enumerate(CAMERAS):
        frames = np.concatenate([episode_frames(e, c) for e in range(len(LENGTHS))])
        write_video(root / template.format(video_key=key, chunk_index=0, file_index=0), frames)
    rows = []
    start = 0
    for e, n in enumerate(LENGTHS):
        row = {"episode_index": e, "tasks": [f"task {e % 2}"], "length": n}
        for key in CAMERAS:
            row[f"videos/{key}/chunk_index"] = 0
            row[f"videos/{key}/file_index"] = 0
            row[f"videos/{key}/from_timestamp"] = start / FPS
            row[f"videos/{key}/to_timestamp"] = (start + n) / FPS
        rows.append(row)
        start += n
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    return root
