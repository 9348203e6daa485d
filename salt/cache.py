"""The teacher-latent cache: sharded safetensors plus a JSON index of views and metadata.

A cache is built once with a frozen teacher; stage 2 then reads memory-mapped latents and
never loads the teacher. Every sample keeps its *view* (source, frame indices, crop), so
the student is fed exactly the clip the teacher saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset, Subset

from salt import __version__
from salt.collate import collate_samples
from salt.config import Config
from salt.runs import atomic_write_bytes, write_json
from salt.synthetic import SyntheticMotion
from salt.video import View, ViewMismatchError, decode_view, discover, open_video, sample_view

log = logging.getLogger(__name__)

FORMAT = "salt-latent-cache"
FORMAT_VERSION = 1
INDEX = "index.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cache_home() -> Path:
    """``$SALT_CACHE_DIR/latents`` (default ``~/.cache/salt/latents``): where named caches live."""
    return Path(os.environ.get("SALT_CACHE_DIR", "~/.cache/salt")).expanduser() / "latents"


def resolve_cache(name_or_path: str) -> Path:
    """A cache directory from a path or a name under :func:`cache_home`."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    named = cache_home() / name_or_path
    if named.is_dir():
        return named
    known = ", ".join(sorted(p.name for p in cache_home().glob("*") if p.is_dir())) or "none"
    raise FileNotFoundError(
        f"no latent cache {name_or_path!r}: not a directory, and not a name under "
        f"{cache_home()} (caches there: {known}). Build one with `salt cache build`, import an "
        f"older one with `salt cache import`, or set SALT_CACHE_DIR"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def synthetic_view(dataset: SyntheticMotion, index: int) -> View:
    """The (only) view of a synthetic clip."""
    size = dataset.image_size
    frames = tuple(range(0, dataset.num_frames * dataset.frame_step, dataset.frame_step))
    return View(f"synthetic/{index}", frames, (0, 0, size, size), (size, size))


class _CacheMeta:
    """What both cache layouts say about their latents."""

    meta: dict[str, Any]

    @property
    def teacher_dim(self) -> int:
        return int(self.meta["teacher_dim"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return tuple(self.meta["latent_shape"])


class LatentCache(_CacheMeta):
    """A built cache: metadata, per-sample views and memory-mapped latent reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index = self.path / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"{str(self.path)!r} is not a latent cache: {INDEX} is missing")
        self.index = json.loads(index.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(
                f"{index} is not a salt latent cache index (format {self.index.get('format')!r})"
            )
        self.meta: dict[str, Any] = self.index["meta"]
        self.samples: list[dict] = self.index["samples"]
        self.shards: list[dict] = self.index["shards"]
        self._handles: dict[int, Any] = {}

    def __getstate__(self):  # DataLoader workers reopen the memory maps themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.meta["grid"])

    def _shard(self, shard: int):
        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.path / self.shards[shard]["file"]), framework="pt")
            self._handles[shard] = handle
        return handle

    def latents(self, i: int) -> torch.Tensor:
        """Sample ``i``'s latents ``[N, D]`` in the stored dtype (a memory-mapped slice)."""
        s = self.samples[i]
        return self._shard(s["shard"]).get_slice("latents")[s["row"]]

    def clip(self, i: int) -> torch.Tensor | None:
        """Sample ``i``'s stored clip ``uint8 [T, C, H, W]``, if the cache stores clips."""
        if not self.meta.get("store_clips"):
            return None
        s = self.samples[i]
        return self._shard(s["shard"]).get_slice("clips")[s["row"]]

    def view(self, i: int) -> View:
        return View.from_dict(self.samples[i]["view"])


class CacheBuildError(RuntimeError):
    """A cache build could not start or continue."""


def build_cache(
    cfg: Config,
    out: Path,
    views: int = 1,
    dtype: str = "float16",
    batch_size: int = 8,
    workers: int = 2,
    store_clips: bool = False,
    shard_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> LatentCache:
    """Run ``cfg.teacher`` over ``cfg.data`` once and write its latents (resumable)."""
    from salt.data import VideoDataset
    from salt.model import build_teacher

    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    teacher = build_teacher(cfg).to(device)
    if getattr(teacher, "cache", None) is not None:
        raise CacheBuildError("a cache is built with a live teacher, not with cached:...")
    data = cfg.data
    if data.spec.split(":")[0] == "synthetic":
        from salt.data import build_dataset

        dataset: Dataset = build_dataset(data, "train")
        root, kind = None, "synthetic"
    else:
        collection = discover(data.spec)
        dataset = VideoDataset(collection, data, train=False, views_per_video=views)
        root, kind = str(collection.root), collection.kind
    n_tokens = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
    from salt.plugins import plugin_versions
    from salt.registry import parse_spec, teachers

    plugin = teachers.get(parse_spec(cfg.teacher.spec)[0]).plugin
    meta = {
        "teacher": cfg.teacher.spec,
        "teacher_plugin": plugin,
        "teacher_version": plugin_versions().get(plugin),
        "teacher_dim": teacher.teacher_dim,
        "latent_shape": [n_tokens, teacher.teacher_dim],
        "grid": list(cfg.grid),
        "dtype": dtype,
        "num_frames": data.num_frames,
        "frame_step": data.frame_step,
        "fps": data.fps,
        "image_size": data.image_size,
        "patch_size": cfg.student.patch_size,
        "tubelet_size": cfg.student.tubelet_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "data_spec": data.spec,
        "data_root": root,
        "data_kind": kind,
        "views_per_video": views if kind != "synthetic" else 1,
        "store_clips": store_clips,
        "salt_version": __version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    index = _resume_index(out, meta)
    total = len(dataset)
    done = sum(s["rows"] + s.get("skipped", 0) for s in index["shards"])
    if done >= total:
        log.info("cache %s is already complete (%d samples)", out, len(index["samples"]))
        return LatentCache(out)
    bytes_per = n_tokens * teacher.teacher_dim * DTYPES[dtype].itemsize
    clip_bytes = data.num_frames * 3 * data.image_size**2 if store_clips else 0
    log.info(
        "building cache %s: %d clips, %.1f MB of latents%s",
        out,
        total,
        total * bytes_per / 1e6,
        f" + {total * clip_bytes / 1e6:.1f} MB of stored clips" if store_clips else "",
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc="cache", unit="clip", dynamic_ncols=True)
    start = done
    while start < total:
        stop = min(start + shard_size, total)
        rows, skipped = _build_shard(
            teacher,
            dataset,
            range(start, stop),
            cfg,
            dtype,
            batch_size,
            workers,
            store_clips,
            device,
            bar,
        )
        shard_no = len(index["shards"])
        name = f"shard_{shard_no:05d}.safetensors"
        tensors = {
            "latents": torch.cat([r["latents"] for r in rows])
            if rows
            else torch.empty(0, *meta["latent_shape"], dtype=DTYPES[dtype])
        }
        if store_clips:
            tensors["clips"] = (
                torch.cat([r["clips"] for r in rows]) if rows else torch.empty(0, dtype=torch.uint8)
            )
        path = out / name
        atomic_write_bytes(path, lambda f, t=tensors: f.write(_safetensors_bytes(t)))
        row = 0
        for r in rows:
            for view, label in zip(r["views"], r["labels"], strict=True):
                index["samples"].append(
                    {"view": view, "label": label, "shard": shard_no, "row": row}
                )
                row += 1
        index["shards"].append(
            {"file": name, "rows": row, "skipped": len(skipped), "sha256": sha256(path)}
        )
        index["skipped"].extend(skipped)
        write_json(out / INDEX, index)
        start = stop
    if bar is not None:
        bar.close()
    for message in index["skipped"]:
        log.warning("not cached (unreadable): %s", message)
    return LatentCache(out)


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})


def _resume_index(out: Path, meta: dict) -> dict:
    path = out / INDEX
    if path.is_file():
        index = json.loads(path.read_text())
        old = {
            k: v for k, v in index.get("meta", {}).items() if k not in ("created", "salt_version")
        }
        new = {k: v for k, v in meta.items() if k != "salt_version"}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CacheBuildError(
                f"{out} holds a cache built with other settings ({', '.join(diff)} differ); "
                f"use another --name/--out, or delete it to rebuild"
            )
        # Shards past the index (a build killed mid-write) are rewritten.
        for p in out.glob("shard_*.safetensors"):
            if p.name not in {s["file"] for s in index["shards"]}:
                p.unlink()
        log.info("resuming cache build in %s after %d shards", out, len(index["shards"]))
        return index
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "meta": {**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "shards": [],
        "samples": [],
        "skipped": [],
    }


class _ViewedSynthetic(Dataset):
    """Synthetic clips with their view attached, for caching."""

    def __init__(self, dataset: SyntheticMotion):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample.pop("labels", None)
        sample["view"] = synthetic_view(self.dataset, index).as_dict()
        return sample


def _build_shard(
    teacher, dataset, indices, cfg, dtype, batch_size, workers, store_clips, device, bar
):
    from salt.data import normalize_clips

    source = _ViewedSynthetic(dataset) if isinstance(dataset, SyntheticMotion) else dataset
    loader = DataLoader(
        Subset(source, list(indices)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_samples,
    )
    rows, skipped = [], []
    for batch in loader:
        skipped.extend(batch["errors"])
        if batch["size"]:
            video = normalize_clips(batch["video"].to(device), cfg.data.mean, cfg.data.std)
            with torch.no_grad():
                latents = teacher.targets(batch, video).to(DTYPES[dtype]).cpu()
            row = {"latents": latents, "views": batch["views"], "labels": batch["label"].tolist()}
            if store_clips:
                row["clips"] = batch["video"]
            rows.append(row)
        if bar is not None:
            bar.update(batch["size"] + len(batch["errors"]))
    return rows, skipped


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a cache (checksums, shapes, row counts); empty when it is sound."""
    cache = LatentCache(path)
    problems = []
    expected = list(cache.latent_shape)
    counts: dict[int, int] = {}
    for s in cache.samples:
        counts[s["shard"]] = counts.get(s["shard"], 0) + 1
    for i, shard in enumerate(cache.shards):
        file = cache.path / shard["file"]
        if not file.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        digest = sha256(file)
        if digest != shard["sha256"]:
            problems.append(f"{shard['file']}: checksum mismatch (corrupted or modified)")
            continue
        with safe_open(str(file), framework="pt") as f:
            shape = list(f.get_slice("latents").get_shape())
            dtype = f.get_slice("latents").get_dtype()
        if shape[1:] != expected or shape[0] != shard["rows"]:
            problems.append(
                f"{shard['file']}: latents {shape}, expected [{shard['rows']}, {expected[0]}, {expected[1]}]"
            )
        if counts.get(i, 0) != shard["rows"]:
            problems.append(
                f"{shard['file']}: index lists {counts.get(i, 0)} samples, shard has {shard['rows']} rows"
            )
        stored = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(dtype, dtype)
        if stored != cache.meta["dtype"]:
            problems.append(f"{shard['file']}: dtype {stored}, expected {cache.meta['dtype']}")
    return problems


def list_caches() -> list[dict]:
    """Named caches under :func:`cache_home` with their size and teacher."""
    found = []
    for path in sorted(cache_home().glob("*")):
        if (path / INDEX).is_file():
            cache = LatentCache(path)
            found.append(
                {
                    "name": path.name,
                    "samples": len(cache),
                    "teacher": cache.meta["teacher"],
                    "latent_shape": cache.meta["latent_shape"],
                    "path": str(path),
                }
            )
        elif (path / "metadata.json").is_file() or any(path.glob("*/metadata.json")):
            found.append(
                {
                    "name": path.name,
                    "samples": None,
                    "teacher": "(older layout)",
                    "latent_shape": None,
                    "path": str(path),
                }
            )
    return found


class LegacyCache(_CacheMeta):
    """The older layout: ``<root>/<split>/<video_id>.pt`` holding ``latents [N, D]`` plus
    ``<root>/<split>/metadata.json`` (``latent_shape``, ``video_ids``, ``model``, ``split``).

    It stores no views: clips are assumed to be the fixed centre view of the data config.
    """

    def __init__(self, path: str | Path, split: str | None = None):
        path = Path(path)
        if not (path / "metadata.json").is_file():
            splits = sorted(p.parent.name for p in path.glob("*/metadata.json"))
            if not splits:
                raise FileNotFoundError(
                    f"{str(path)!r} holds no metadata.json: not an older-layout cache"
                )
            chosen = split or ("train" if "train" in splits else splits[0])
            if chosen not in splits:
                raise ValueError(f"older-layout cache {path} has splits {splits}, not {chosen!r}")
            path = path / chosen
        self.path = path
        meta = json.loads((path / "metadata.json").read_text())
        missing = [k for k in ("latent_shape", "video_ids") if k not in meta]
        if missing:
            raise ValueError(f"{path / 'metadata.json'} lacks {', '.join(missing)}")
        self.video_ids: list[str] = [str(v) for v in meta["video_ids"]]
        shape = list(meta["latent_shape"])
        self.meta = {
            "teacher": meta.get("model", "unknown"),
            "latent_shape": shape[-2:],
            "teacher_dim": int(shape[-1]),
            "split": meta.get("split", path.name),
            "store_clips": False,
            "legacy": True,
        }

    def __len__(self) -> int:
        return len(self.video_ids)

    def latents(self, i: int) -> torch.Tensor:
        file = self.path / f"{self.video_ids[i]}.pt"
        if not file.is_file():
            raise FileNotFoundError(
                f"older-layout cache: {file} is listed in metadata.json but missing"
            )
        obj = torch.load(file, map_location="cpu", weights_only=True)
        latents = obj["latents"] if isinstance(obj, dict) else obj
        if list(latents.shape[-2:]) != list(self.latent_shape):
            raise ValueError(
                f"{file}: latents {tuple(latents.shape)}, metadata says {self.latent_shape}"
            )
        return latents.reshape(self.latent_shape)

    def clip(self, i: int) -> None:
        return None


def open_cache(path: str | Path) -> LatentCache | LegacyCache:
    """A cache of either layout."""
    path = Path(path)
    if (path / INDEX).is_file():
        return LatentCache(path)
    return LegacyCache(path)


class CachedDataset(Dataset):
    """Samples of a cache: its latents plus the student's clip, decoded with the stored view.

    ``data_root`` relocates the videos (they moved since the build). Clips stored in the
    cache are used as they are, and then nothing is decoded.
    """

    def __init__(self, cache: LatentCache | LegacyCache, cfg: Config, data_root: str | None = None):
        self.cache = cache
        self.cfg = cfg
        meta = cache.meta
        self.synthetic = None
        self.root: Path | None = None
        if meta.get("store_clips"):
            return  # every clip is in the cache: nothing to decode, no videos needed
        if isinstance(cache, LegacyCache):
            if data_root is None:
                raise ValueError(
                    f"the older-layout cache {cache.path} does not record where its videos are; "
                    f"pass --data DIR (a folder with files named <video_id>.<ext>)"
                )
            collection = discover(data_root)
            by_stem = {Path(r.source).stem: r.source for r in collection.records}
            absent = [v for v in cache.video_ids if v not in by_stem]
            if absent:
                raise ViewMismatchError(
                    f"{len(absent)} video ids of the cache have no file under {data_root} "
                    f"(first: {absent[:3]})"
                )
            self.sources = [by_stem[v] for v in cache.video_ids]
            self.root = Path(collection.root)
        elif meta["data_kind"] == "synthetic":
            from salt.data import build_dataset

            geometry = {k: meta[k] for k in ("num_frames", "frame_step", "image_size")}
            self.synthetic = build_dataset(
                attrs.evolve(cfg.data, spec=meta["data_spec"], **geometry)
            )
        elif data_root is not None:
            root = Path(data_root)
            if root.is_file():  # a manifest or SSv2 list: its paths are relative to its folder
                root = root.parent
            if not root.is_dir():
                raise ViewMismatchError(
                    f"--data {str(data_root)!r} does not exist; give the folder (or the CSV "
                    f"manifest or SSv2 list) where the cache's videos are now"
                )
            self.root = root
        else:
            root = Path(meta["data_root"])
            if not root.is_dir():
                raise ViewMismatchError(
                    f"the cache's videos were under {meta['data_root']}, which does not exist "
                    f"now; pass --data DIR to say where they moved"
                )
            self.root = root

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        latents = self.cache.latents(i)
        clip = self.cache.clip(i)
        label = -1
        if isinstance(self.cache, LatentCache):
            label = self.cache.samples[i].get("label", -1)
            if label is None or not isinstance(label, int):
                label = -1
        if clip is None:
            try:
                clip = self._decode(i)
            except ViewMismatchError:
                raise
            except Exception as err:  # unreadable now: skip, like any bad video
                return {"error": f"cache sample {i}: {err}", "index": i}
        return {"video": clip, "latents": latents, "label": label}

    def _decode(self, i: int) -> torch.Tensor:
        if isinstance(self.cache, LegacyCache):
            reader = open_video(self.root / self.sources[i])
            h, w = reader[0].shape[:2]
            d = self.cfg.data
            view = sample_view(
                self.sources[i], len(reader), h, w, d.num_frames, d.frame_step, d.image_size
            )
            return decode_view(reader, view)
        view = self.cache.view(i)
        if self.synthetic is not None:
            index = int(view.source.split("/", 1)[1])
            return self.synthetic[index]["video"]
        path = self.root / view.source
        if not path.is_file():
            raise ViewMismatchError(
                f"cache sample {i}: its source {view.source!r} is missing under {self.root}; "
                f"pass --data DIR if the videos moved"
            )
        try:
            return decode_view(open_video(path), view)
        except ViewMismatchError as err:
            raise ViewMismatchError(f"cache sample {i}: {err}") from None


def import_legacy(
    path: str | Path, out: Path, cfg: Config, data: str, dtype: str | None = None
) -> LatentCache:
    """Convert an older-layout cache into a view-locked one, reading every latent once.

    The old files store no views, so each clip's view is the fixed centre view that
    ``cfg.data`` gives for the video named ``<video_id>.<ext>`` under ``data``.
    """
    legacy = LegacyCache(path)
    collection = discover(data)
    by_stem = {Path(r.source).stem: r for r in collection.records}
    missing = [v for v in legacy.video_ids if v not in by_stem]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} video ids of {legacy.path} have no video under {data} (first: {missing[:3]})"
        )
    first = legacy.latents(0)
    dtype = dtype or {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(
        first.dtype, "float32"
    )
    grid = list(cfg.grid)
    if legacy.latent_shape[0] != grid[0] * grid[1] * grid[2]:
        raise ValueError(
            f"{legacy.path} holds {legacy.latent_shape[0]} latents per clip but data.num_frames="
            f"{cfg.data.num_frames} at {cfg.data.image_size}px makes a {tuple(grid)} grid; set them to the "
            f"geometry the old cache was computed with"
        )
    d = cfg.data
    samples, latents = [], []
    for i, vid in enumerate(legacy.video_ids):
        record = by_stem[vid]
        reader = open_video(collection.path(record))
        h, w = reader[0].shape[:2]
        view = sample_view(
            record.source, len(reader), h, w, d.num_frames, d.frame_step, d.image_size
        )
        samples.append(
            {
                "view": view.as_dict(),
                "label": record.label if isinstance(record.label, int) else -1,
                "shard": 0,
                "row": i,
                "video_id": vid,
            }
        )
        latents.append(legacy.latents(i).to(DTYPES[dtype]))
    out.mkdir(parents=True, exist_ok=True)
    name = "shard_00000.safetensors"
    tensors = {"latents": torch.stack(latents)}
    atomic_write_bytes(out / name, lambda f: f.write(_safetensors_bytes(tensors)))
    meta = {
        "teacher": str(legacy.meta["teacher"]),
        "teacher_dim": legacy.teacher_dim,
        "latent_shape": list(legacy.latent_shape),
        "grid": grid,
        "dtype": dtype,
        "num_frames": d.num_frames,
        "frame_step": d.frame_step,
        "fps": d.fps,
        "image_size": d.image_size,
        "patch_size": cfg.student.patch_size,
        "tubelet_size": cfg.student.tubelet_size,
        "mean": list(d.mean),
        "std": list(d.std),
        "data_spec": data,
        "data_root": str(collection.root),
        "data_kind": collection.kind,
        "views_per_video": 1,
        "store_clips": False,
        "salt_version": __version__,
        "imported_from": str(legacy.path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    index = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "meta": meta,
        "skipped": [],
        "samples": samples,
        "shards": [
            {"file": name, "rows": len(samples), "skipped": 0, "sha256": sha256(out / name)}
        ],
    }
    write_json(out / INDEX, index)
    return LatentCache(out)
