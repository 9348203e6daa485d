"""LeRobot datasets as clip sources: ``lerobot:PATH`` (every camera) or
``lerobot:PATH:CAMERA`` (one), read from a local ``LeRobotDataset`` folder - never a Hub
download. ``PATH`` may be a repo id (``lerobot:ORG/NAME``) that LeRobot has already
downloaded: it is then read from LeRobot's cache, ``$HF_LEROBOT_HOME/ORG/NAME`` (default
``$HF_HOME/lerobot``, i.e. ``~/.cache/huggingface/lerobot``), as ``LeRobotDataset(repo_id)``
finds it. A folder of that relative name here wins.

Both layouts of the format are read from their ``meta/``:

- v2.x: one video per episode and camera, ``meta/episodes.jsonl`` giving each episode's
  length;
- v3.x: several episodes per video file, ``meta/episodes/chunk-*/file-*.parquet`` giving
  each episode's file and its ``from_timestamp``/``to_timestamp`` in it (read with
  pyarrow).

Each (episode, camera) becomes one record whose segment is the episode's time span in its
video, so a clip never crosses an episode boundary: frames are picked by their timestamps
inside the span. A plain folder holding ``meta/info.json`` is read the same way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from salt.io import read_json


def is_lerobot(path: Path) -> bool:
    """Whether ``path`` is a LeRobotDataset folder (it has ``meta/info.json``)."""
    return (path / "meta" / "info.json").is_file()


# What a LeRobotDataset's meta/ holds besides info.json (v2.x files, then v3.x ones).
META_FILES = ("episodes.jsonl", "tasks.jsonl", "episodes_stats.jsonl", "stats.json")
META_FOLDERS = ("episodes", "tasks.parquet")


def check_lerobot(path: Path, named: bool) -> bool:
    """Whether ``path`` is to be read as a LeRobotDataset: it holds ``meta/info.json``.
    A folder the spec names as one (``named``: ``lerobot:PATH``), or one whose ``meta/``
    holds LeRobot's other files, without that file is an error, never a plain folder of
    videos."""
    if is_lerobot(path):
        return True
    meta = path / "meta"
    traces = [n for n in META_FILES if (meta / n).is_file()]
    traces += [n for n in META_FOLDERS if (meta / n).exists()]
    if not named and not traces:
        return False
    why = (
        f"{path} has meta/{traces[0]} like a LeRobotDataset"
        if traces
        else f"lerobot:{path} names a LeRobotDataset"
    )
    raise FileNotFoundError(
        f"{meta / 'info.json'} is missing: {why}, whose root folder holds meta/info.json (its "
        f"cameras, video paths and fps); give the dataset's root folder, or complete the "
        f"download"
    )


PREFIX = "lerobot:"


REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def lerobot_home() -> Path:
    """Where LeRobot keeps downloaded datasets: ``$HF_LEROBOT_HOME``, else
    ``$HF_HOME/lerobot`` (``HF_HOME`` defaulting as huggingface_hub's does)."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return (
        Path(os.environ.get("HF_HOME", os.path.join(cache, "huggingface"))).expanduser() / "lerobot"
    )


def resolve_root(path: str) -> str:
    """A dataset folder: ``path`` as given when it exists (or is not a repo id), else - for
    ``ORG/NAME`` - its copy in the LeRobot cache when there is one."""
    if Path(path).expanduser().exists() or not REPO_ID.match(path):
        return path
    cached = lerobot_home() / path
    return str(cached) if cached.is_dir() else path


def parse_spec(spec: str) -> tuple[str, str] | None:
    """``lerobot:PATH[:CAMERA]`` -> (folder, camera or ""), ``PATH`` a folder or a repo id
    in the LeRobot cache; None for any other spec."""
    spec = str(spec)
    if not spec.startswith(PREFIX):
        return None
    path, camera = split_spec(spec[len(PREFIX) :])
    return resolve_root(path), camera


def split_spec(arg: str) -> tuple[str, str]:
    """``PATH`` or ``PATH:CAMERA`` (the part after ``lerobot:``) -> (path, camera or "")."""
    path, sep, camera = arg.rpartition(":")
    if sep and path and not Path(arg).expanduser().exists() and "/" not in camera:
        return path, camera
    return arg, ""


def read_dataset(root: Path, camera: str = "") -> tuple[list[dict[str, Any]], dict]:
    """Records ``{"source", "start", "end", "episode", "camera", "task"}`` of every
    (episode, camera) of a LeRobotDataset, and its ``info.json``."""
    info_file = root / "meta" / "info.json"
    info = read_json(info_file)
    if not isinstance(info, dict) or "video_path" not in info or "features" not in info:
        raise ValueError(
            f"{info_file} is not a LeRobotDataset info.json (no video_path/features); give the "
            f"dataset's root folder"
        )
    cameras = [
        k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"
    ]
    if not cameras:
        raise ValueError(f"{info_file} lists no video features: the dataset has no camera videos")
    if camera:
        matches = [k for k in cameras if k == camera or k.split(".")[-1] == camera]
        if not matches:
            raise ValueError(
                f"LeRobot dataset {root} has no camera {camera!r}; it has: {', '.join(cameras)}"
            )
        cameras = matches[:1]
    version = str(info.get("codebase_version", ""))
    if not version.startswith(("v2", "v3")):
        raise ValueError(
            f"{info_file}: codebase_version is {info.get('codebase_version')!r}; salt reads "
            f"LeRobotDatasets v2.x and v3.x (their layouts differ) - convert it with LeRobot's "
            f"converter, or re-download it"
        )
    fps = float(info.get("fps") or 0)
    episodes = _episodes_v3(root) if version.startswith("v3") else _episodes_v2(root)
    records = []
    for ep in episodes:
        try:
            records += _records(info, ep, cameras, version, fps)
        except (KeyError, ValueError, TypeError) as err:
            table = "meta/episodes/" if version.startswith("v3") else "meta/episodes.jsonl"
            raise ValueError(
                f"LeRobot dataset {root}: episode {ep.get('episode_index', '?')} in {table} "
                f"lacks or garbles {err} ({version} layout); the dataset is damaged or "
                f"incomplete - re-download it"
            ) from None
    if not records:
        raise ValueError(f"LeRobot dataset {root} lists no episodes")
    return records, info


def _records(
    info: dict, ep: dict, cameras: list[str], version: str, fps: float
) -> list[dict[str, Any]]:
    """One episode's records, one per camera."""
    records = []
    for key in cameras:
        if version.startswith("v3"):
            fields = {
                "video_key": key,
                "chunk_index": int(ep[f"videos/{key}/chunk_index"]),
                "file_index": int(ep[f"videos/{key}/file_index"]),
            }
            start = float(ep[f"videos/{key}/from_timestamp"])
            end = float(ep[f"videos/{key}/to_timestamp"])
        else:
            chunk = int(ep["episode_index"]) // int(info.get("chunks_size", 1000))
            fields = {
                "video_key": key,
                "episode_chunk": chunk,
                "episode_index": int(ep["episode_index"]),
            }
            start = 0.0
            end = int(ep["length"]) / fps if fps else float("inf")
        source = info["video_path"].format(**fields)
        tasks = ep.get("tasks") or []
        records.append(
            {
                "source": source,
                "start": start,
                "end": end,
                "episode": int(ep["episode_index"]),
                "camera": key,
                "task": str(tasks[0]) if len(tasks) else None,
            }
        )
    return records


def _episodes_v2(root: Path) -> list[dict]:
    file = root / "meta" / "episodes.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: a v2 LeRobotDataset lists its episodes there")
    episodes = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            episodes.append({"episode_index": int(row["episode_index"]), **row})
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{file} line {n} is not an episode record ({err})") from None
    return episodes


def _episodes_v3(root: Path) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{root / 'meta' / 'episodes'} holds no chunk-*/file-*.parquet: a v3 LeRobotDataset "
            f"lists its episodes there"
        )
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise RuntimeError(
            f"reading the v3 LeRobotDataset {root} needs pyarrow (a salt-vla dependency): "
            f"pip install pyarrow"
        ) from None
    episodes = []
    for file in files:
        try:
            episodes.extend(pq.read_table(file).to_pylist())
        except Exception as err:
            raise ValueError(f"{file} is not a readable parquet file ({err})") from None
    return sorted(episodes, key=lambda e: int(e["episode_index"]))
