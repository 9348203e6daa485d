"""Write a small LeRobot dataset (AV1 videos, as LeRobot records them) from the built-in
synthetic clips, to try ``--data lerobot:PATH`` before pointing salt at a real one.

    python examples/make_lerobot.py lerobot-demo                 # v3.0 layout
    python examples/make_lerobot.py lerobot-demo --layout v2.1   # one video per episode

Each episode is one synthetic clip - a shape moving in one of 8 directions - seen by two
cameras (``observation.images.top`` and ``observation.images.wrist``: the same motion over
another background), with episodes of different lengths. The episode's task is its
direction ("move right", ...) and the per-frame ``action`` its velocity, so a policy has
something to predict (``examples/lerobot_policy.py``). The layout follows LeRobotDataset:
``meta/info.json``, the episode table (``meta/episodes.jsonl`` for v2.1, parquet for v3.0),
the frame tables ``data/...parquet`` (one per episode for v2.1) and the videos.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from make_videos import write_video

from salt.synthetic import DIRECTIONS, SyntheticMotion

CAMERAS = ("observation.images.top", "observation.images.wrist")
AV1 = ("libsvtav1", "libaom-av1", "libx264")  # AV1 as LeRobot writes it; H.264 if absent
GOP = 2  # LeRobot's encoding default: a keyframe every 2 frames, cheap to seek
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def velocity(direction: int) -> list[float]:
    angle = 2 * math.pi * direction / len(DIRECTIONS)
    return [math.cos(angle), -math.sin(angle)]


def info(layout: str, episodes: int, frames: int, fps: int, size: int) -> dict:
    video = {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"]}
    video["info"] = {"video.fps": fps, "video.codec": "av1", "video.pix_fmt": "yuv420p"}
    return {
        "codebase_version": layout,
        "robot_type": "synthetic",
        "fps": fps,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": len(DIRECTIONS),
        "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        if layout.startswith("v3")
        else "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": V3_VIDEO if layout.startswith("v3") else V2_VIDEO,
        "features": {
            **{key: dict(video) for key in CAMERAS},
            "action": {"dtype": "float32", "shape": [2], "names": ["vx", "vy"]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layout", choices=["v3.0", "v2.1"], default="v3.0")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    v3 = args.layout.startswith("v3")
    import pyarrow as pa  # a salt-vla dependency: LeRobot's frame tables are parquet
    import pyarrow.parquet as pq

    clips = SyntheticMotion(length=args.episodes, num_frames=1, image_size=args.size, seed=7)
    rng = np.random.default_rng(7)
    lengths = [int(rng.integers(30, 61)) for _ in range(args.episodes)]
    episodes, frames_table, per_camera = [], [], {key: [] for key in CAMERAS}
    start = 0
    for e, length in enumerate(lengths):
        direction = clips.label(e)
        task = f"move {DIRECTIONS[direction]}"
        for c, key in enumerate(CAMERAS):
            frames = clips.render(e, frames=np.arange(length), scene=c)
            if v3:
                per_camera[key].append(frames)
            else:
                path = V2_VIDEO.format(episode_chunk=0, video_key=key, episode_index=e)
                write_video(args.out / path, frames, args.fps, AV1, GOP)
        row = {"episode_index": e, "tasks": [task], "length": length}
        if v3:
            for key in CAMERAS:
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = 0
                row[f"videos/{key}/from_timestamp"] = start / args.fps
                row[f"videos/{key}/to_timestamp"] = (start + length) / args.fps
        episodes.append(row)
        for t in range(length):
            frames_table.append(
                {
                    "timestamp": t / args.fps,
                    "frame_index": t,
                    "episode_index": e,
                    "index": start + t,
                    "task_index": direction,
                    "action": velocity(direction),
                }
            )
        start += length
    meta = args.out / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(
        json.dumps(info(args.layout, args.episodes, start, args.fps, args.size), indent=2)
    )
    if v3:
        for key, parts in per_camera.items():
            path = V3_VIDEO.format(video_key=key, chunk_index=0, file_index=0)
            write_video(args.out / path, np.concatenate(parts), args.fps, AV1, GOP)
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episodes), meta / "episodes/chunk-000/file-000.parquet")
        (args.out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(frames_table), args.out / "data/chunk-000/file-000.parquet"
        )
        tasks = [{"task_index": i, "task": f"move {d}"} for i, d in enumerate(DIRECTIONS)]
        pq.write_table(pa.Table.from_pylist(tasks), meta / "tasks.parquet")
    else:
        # v2.1: one frame table per episode, as LeRobot writes them
        for e in range(args.episodes):
            path = args.out / f"data/chunk-000/episode_{e:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [row for row in frames_table if row["episode_index"] == e]
            pq.write_table(pa.Table.from_pylist(rows), path)
        (meta / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
        tasks = [{"task_index": i, "task": f"move {d}"} for i, d in enumerate(DIRECTIONS)]
        (meta / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    print(
        f"wrote a LeRobot {args.layout} dataset to {args.out}: {args.episodes} episodes "
        f"({start} frames at {args.fps} fps) x {len(CAMERAS)} cameras"
    )


if __name__ == "__main__":
    main()
