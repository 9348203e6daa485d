"""Video files: finding them (folder, CSV manifest, SSv2 layout), sampling views, decoding.

A *view* is everything needed to reproduce a clip exactly: the source file, the frame
indices and the crop box in the resized frame. Caches store views so that the student
later sees the very pixels the teacher saw.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from salt.decoders import VideoDecodeError, VideoReader, open_reader
from salt.io import read_json
from salt.lerobot import REPO_ID, check_lerobot, lerobot_home, parse_spec, read_dataset

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")


@attrs.frozen
class VideoRecord:
    """One video of a collection: its path relative to the collection root, and its label."""

    source: str
    label: int | str | None = None
    # A segment of the file (seconds, end exclusive): one episode of a multi-episode video.
    start: float | None = None
    end: float | None = None

    @property
    def segment(self) -> tuple[float, float] | None:
        return None if self.start is None else (self.start, self.end)


@attrs.frozen
class VideoCollection:
    """Videos under one root folder."""

    root: Path
    records: tuple[VideoRecord, ...]
    kind: str  # "folder", "csv", "ssv2" or "lerobot"

    def path(self, record: VideoRecord) -> Path:
        return self.root / record.source


@attrs.frozen
class View:
    """Frame indices and the crop of one clip: ``crop`` is (top, left, height, width) in the
    frame after its short side was resized so that the frame is ``resized`` (height, width)."""

    source: str
    frames: tuple[int, ...]
    crop: tuple[int, int, int, int]
    resized: tuple[int, int]

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "frames": list(self.frames),
            "crop": list(self.crop),
            "resized": list(self.resized),
        }

    @classmethod
    def from_dict(cls, d: dict) -> View:
        return cls(d["source"], tuple(d["frames"]), tuple(d["crop"]), tuple(d["resized"]))


class ViewMismatchError(ValueError):
    """Data no longer matches a stored view (moved, re-encoded or resized videos): fatal."""


def discover(spec: str) -> VideoCollection:
    """The videos a data spec names: a folder, a CSV/TXT manifest, an SSv2 JSON list or a
    LeRobot dataset (``lerobot:PATH[:CAMERA]``, or its folder)."""
    camera = ""
    lerobot = parse_spec(spec)
    if lerobot is not None:
        spec, camera = lerobot
        if not Path(spec).expanduser().is_dir():
            what = "is not a folder" if Path(spec).expanduser().exists() else "does not exist"
            if REPO_ID.match(spec) and not Path(spec).expanduser().exists():
                what += (
                    f", nor is repo {spec!r} in the LeRobot cache ({lerobot_home() / spec}; "
                    f"HF_LEROBOT_HOME moves it): download it once with LeRobot "
                    f"(LeRobotDataset({spec!r})), salt reads it offline"
                )
            raise FileNotFoundError(
                f"LeRobot dataset folder {spec!r} {what}; give the dataset's root folder (the "
                f"one holding meta/info.json)"
            )
    path = Path(spec).expanduser()
    if path.is_dir() and check_lerobot(path, named=lerobot is not None):
        return _lerobot(path, camera)
    if path.is_dir():
        return _folder(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        return _manifest(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return _ssv2(path)
    if not path.exists():
        raise FileNotFoundError(
            f"data spec {spec!r} is neither 'synthetic[:N]' nor an existing folder of videos, "
            f"CSV manifest (.csv/.txt) or Something-Something-v2 JSON list"
        )
    raise ValueError(
        f"data spec {spec!r} is a file of an unknown kind; use a folder of videos, a .csv/.txt "
        f"manifest ('path label' lines) or an SSv2 .json list"
    )


def _lerobot(root: Path, camera: str) -> VideoCollection:
    rows, _ = read_dataset(root, camera)
    records = tuple(VideoRecord(r["source"], None, r["start"], r["end"]) for r in rows)
    return VideoCollection(root.resolve(), records, "lerobot")


def _folder(root: Path) -> VideoCollection:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
    )
    if not files:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found under {str(root)!r}")
    # A folder of class folders labels each video by its top-level folder's name.
    records = []
    for p in files:
        rel = p.relative_to(root)
        records.append(VideoRecord(str(rel), rel.parts[0] if len(rel.parts) > 1 else None))
    records = tuple(records)
    return VideoCollection(root.resolve(), records, "folder")


def _manifest(path: Path) -> VideoCollection:
    try:
        rows = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"manifest {str(path)!r} is not UTF-8 text") from None
    if not rows:
        raise ValueError(f"manifest {str(path)!r} is empty")
    records = []
    if "," in rows[0]:
        table = list(csv.reader(rows))
        header = [c.strip().lower() for c in table[0]]
        if "path" in header:
            col, lab = header.index("path"), header.index("label") if "label" in header else None
            table = table[1:]
        elif "label" in header:  # a header whose video column has another name
            raise ValueError(
                f"{path}: its header row ({','.join(table[0])}) names no 'path' column, so it "
                f"would be read as a video; name the video column 'path'"
            )
        else:
            col, lab = 0, 1
        for n, row in enumerate(table, 2 if "path" in header else 1):
            if col >= len(row) or not row[col].strip():
                raise ValueError(
                    f"{path} row {n} has no path (column {col + 1}): {','.join(row)!r}; each row "
                    f"is path,label"
                )
            label = row[lab] if lab is not None and lab < len(row) else None
            records.append(VideoRecord(row[col].strip(), _label(label)))
    else:
        if rows[0].split()[0].lower() == "path":
            rows = rows[1:]  # a one-column (or space-separated) header row
        for line in rows:
            # "path label", V-JEPA style; a path may itself contain spaces.
            parts = line.strip().rsplit(maxsplit=1)
            if len(parts) == 2 and _looks_like_label(parts[1]):
                records.append(VideoRecord(parts[0], _label(parts[1])))
            else:
                records.append(VideoRecord(line.strip(), None))
    root = path.parent.resolve()
    normalized = []
    for r in records:
        p = Path(r.source)
        source = (
            str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else r.source
        )
        normalized.append(VideoRecord(source, r.label))
    return VideoCollection(root, tuple(normalized), "csv")


def _looks_like_label(text: str) -> bool:
    return text.lstrip("-").isdigit() or Path(text).suffix.lower() not in VIDEO_EXTENSIONS


def _label(value) -> int | str | None:
    if value is None or str(value).strip() == "":
        return None
    value = str(value).strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _ssv2(path: Path) -> VideoCollection:
    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(
            f"{str(path)!r} is not a Something-Something-v2 list (a JSON list of objects with "
            f"'id', 'label', 'template')"
        )
    candidates = [path.parent / "20bn-something-something-v2", path.parent / "videos", path.parent]
    folder = next((c for c in candidates if c.is_dir() and any(c.glob("*.webm"))), None)
    labels_file = path.parent / "labels.json"
    mapping = read_json(labels_file) if labels_file.is_file() else None
    if mapping is not None and not isinstance(mapping, dict):
        raise ValueError(f"{labels_file} must map each template to a class id (a JSON object)")
    labelled = []  # (video id, label)
    for n, item in enumerate(items):
        ok = isinstance(item, dict) and isinstance(item.get("id"), str | int)
        template, label = (item.get("template"), item.get("label")) if ok else (None, None)
        if (
            not ok
            or not isinstance(template, str | type(None))
            or not isinstance(label, str | int | type(None))
        ):
            raise ValueError(
                f"{path}: entry {n} is not an SSv2 item (an object with a string or number "
                f"'id', and a string 'template' or 'label'): {str(item)[:80]}"
            )
        name = template.replace("[", "").replace("]", "") if template else label
        label = int(mapping[name]) if mapping and name in mapping else name
        labelled.append((str(item["id"]), label))
    if folder is None:
        looked = ", ".join(str(c) for c in candidates[:2])
        raise FileNotFoundError(
            f"{path} is a Something-Something-v2 list, but no <id>.webm videos lie beside it "
            f"(looked in {looked} and {path.parent}); put the videos in one of those folders"
        )
    records = [
        VideoRecord(str((folder / f"{id_}.webm").relative_to(path.parent)), label)
        for id_, label in labelled
    ]
    return VideoCollection(path.parent.resolve(), tuple(records), "ssv2")


def open_video(path: Path, decoder: str = "auto") -> VideoReader:
    """A reader of ``path`` with the ``decoder`` backend (``auto``: the fastest installed one
    that reads it; see :mod:`salt.decoders`). One thread: parallelism comes from workers."""
    return open_reader(Path(path), decoder)


def frame_indices(length: int, num_frames: int, step: int, start: int) -> tuple[int, ...]:
    """``num_frames`` indices ``step`` apart from ``start``; past the end repeats the last frame."""
    return tuple(min(start + i * step, length - 1) for i in range(num_frames))


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short_side``."""
    scale = short_side / min(height, width)
    return max(short_side, round(height * scale)), max(short_side, round(width * scale))


def sample_view(
    source: str,
    length: int,
    height: int,
    width: int,
    num_frames: int,
    step: int,
    image_size: int,
    u: tuple[float, float, float] | None = None,
    position: float = 0.5,
    crop: float = 0.5,
) -> View:
    """A view of a video: random start and crop from uniforms ``u`` (training), else the
    start at ``position`` of the free range and the crop at ``crop`` of the free room along
    both sides (0.5: the centre crop; evaluation, caching)."""
    span = (num_frames - 1) * step + 1
    free = max(0, length - span)
    rh, rw = resized_shape(height, width, image_size)
    if u is None:
        start = round(position * free)
        if crop == 0.5:
            top, left = (rh - image_size) // 2, (rw - image_size) // 2
        else:  # spatial test views: from one end of the long side to the other
            top, left = round(crop * (rh - image_size)), round(crop * (rw - image_size))
    else:
        start = math.floor(u[0] * (free + 1))
        top = math.floor(u[1] * (rh - image_size + 1))
        left = math.floor(u[2] * (rw - image_size + 1))
    return View(
        source,
        frame_indices(length, num_frames, step, start),
        (top, left, image_size, image_size),
        (rh, rw),
    )


def view_of(
    reader,
    source: str,
    num_frames: int,
    frame_step: int,
    image_size: int,
    fps: float = 0.0,
    u: tuple[float, float, float] | None = None,
    position: float = 0.5,
    crop: float = 0.5,
    segment: tuple[float, float] | None = None,
) -> View:
    """The view of an open video: its length and frame size read from ``reader``, the step
    from ``fps`` when set (> 0), else ``frame_step``; random (``u``) or at ``position`` and
    ``crop`` (see :func:`sample_view`). With a ``segment`` (seconds), only the frames whose
    timestamps fall inside it are drawn from."""
    first, stop = (0, len(reader)) if segment is None else reader.frame_range(*segment)
    if stop <= first:
        where = "" if segment is None else f" in {segment[0]:.3f}-{segment[1]:.3f} s"
        raise VideoDecodeError(f"video {source!r} has no frames{where}")
    height, width = reader.size
    step = frame_step
    if fps > 0:
        if reader.fps <= 0:
            raise VideoDecodeError(f"video {source!r} has no frame rate; sample it by frame_step")
        step = max(1, round(reader.fps / fps))
    view = sample_view(
        source,
        stop - first,
        height,
        width,
        num_frames,
        step,
        image_size,
        u=u,
        position=position,
        crop=crop,
    )
    return attrs.evolve(view, frames=tuple(first + f for f in view.frames)) if first else view


def read_centre_view(
    path: Path,
    source: str,
    data,
    position: float = 0.5,
    decode: bool = True,
) -> tuple[View, torch.Tensor | None]:
    """Open ``path`` and take the evaluation view of ``data`` (a ``DataConfig``): the window
    at ``position`` of the free range, centre crop. Returns the view and its clip
    ``uint8 [T, C, H, W]`` (None when ``decode`` is False)."""
    reader = open_video(Path(path), getattr(data, "decoder", "auto"))
    view = view_of(
        reader,
        source,
        data.num_frames,
        data.frame_step,
        data.image_size,
        data.fps,
        position=position,
    )
    return view, decode_view(reader, view) if decode else None


def decode_view(reader, view: View) -> torch.Tensor:
    """The view's clip as ``uint8 [T, C, H, W]``."""
    length = len(reader)
    if max(view.frames) >= length:
        raise ViewMismatchError(
            f"{view.source}: the view needs frame {max(view.frames)} but the video has {length} frames"
        )
    try:
        frames = reader.read(view.frames)  # [T, H, W, 3]
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(f"cannot decode frames of {view.source}: {err}") from None
    height, width = frames.shape[1:3]
    expected = resized_shape(height, width, min(view.resized))
    if tuple(expected) != tuple(view.resized):
        raise ViewMismatchError(
            f"{view.source}: frames are {height}x{width}, which resize to {expected[0]}x{expected[1]}, "
            f"but the view was made on {view.resized[0]}x{view.resized[1]} frames"
        )
    return crop_resize(frames, view)


def crop_resize(frames: np.ndarray, view: View) -> torch.Tensor:
    """``uint8 [T, H, W, 3]`` -> resized to ``view.resized``, cropped -> ``uint8 [T, 3, h, w]``."""
    x = torch.from_numpy(frames).permute(
        0, 3, 1, 2
    )  # channels-last memory: torch's fast uint8 path
    if tuple(x.shape[-2:]) != tuple(view.resized):
        x = F.interpolate(
            x, size=view.resized, mode="bilinear", antialias=True, align_corners=False
        )
    top, left, h, w = view.crop
    return x[..., top : top + h, left : left + w].contiguous()
