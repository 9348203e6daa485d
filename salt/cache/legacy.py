"""Every older layout salt reads, and the one door to a cache of any layout.

- The first layout (salt-vla 0.1): one ``index.json`` holding every sample, rewritten after
  every shard; read as a cache with one split, ``train`` (:func:`read_v1`, used by
  :class:`~salt.cache.store.LatentCache`).
- ``<root>/<split>/<video_id>.pt`` holding a ``latents [N, D]`` tensor, plus
  ``<root>/<split>/metadata.json`` (``latent_shape``, ``video_ids``, ``model``, ``split``).
  It stores no views: clips are taken to be the fixed centre view of the data config. Read
  as it is (:class:`LegacyCache`) or imported into the store (:func:`import_legacy`).

:func:`open_cache` opens a cache of any layout; :func:`list_caches` lists the named ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from salt.cache.index import (
    FORMAT,
    INDEX,
    V1_INDEX,
    CacheError,
    CacheIndex,
    LatentMeta,
    MissingSplitError,
    ShardRecord,
    cache_home,
    clip_meta,
    is_cache,
    new_index,
)
from salt.cache.shards import encode_latents, write_shard
from salt.cache.store import LatentCache
from salt.config import Config
from salt.folders import CACHE, EMPTY, FolderRefused, WriterLock, claim, describe, folder_kind
from salt.io import UnreadableFileError, read_json, torch_load
from salt.video import discover, read_centre_view


def read_v1(path: Path) -> tuple[CacheIndex, list[ShardRecord]]:
    """The first layout: one ``index.json`` of meta, shards and samples; one split, train."""
    file = path / V1_INDEX
    d = read_json(file)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CacheError(f"{file} is not a salt latent cache index")
    try:
        meta = dict(d["meta"])
        data = {k: meta.pop(k, None) for k in ("data_spec", "data_root", "data_kind")}
        data["views_per_video"] = meta.pop("views_per_video", 1)
        by_shard: dict[int, list[dict]] = {}
        for s in d["samples"]:
            by_shard.setdefault(int(s["shard"]), []).append(s)
        files = [(str(shard["file"]), str(shard["sha256"])) for shard in d["shards"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CacheError(
            f"{file} is damaged ({type(err).__name__}: {err}); rebuild the cache"
        ) from None
    stray = sorted(set(by_shard) - set(range(len(files))))
    if stray:
        raise CacheError(
            f"{file}: samples name shard {stray[0]}, which it does not list; rebuild the cache"
        )
    shards = []
    for i, (name, digest) in enumerate(files):
        rows = sorted(by_shard.get(i, []), key=lambda s: s["row"])
        if [s["row"] for s in rows] != list(range(len(rows))):
            raise CacheError(
                f"{file}: the samples of {name} are not rows 0..{len(rows) - 1} (rows moved, "
                f"missing or repeated); rebuild the cache"
            )
        samples = [{k: v for k, v in s.items() if k not in ("shard", "row")} for s in rows]
        shards.append(ShardRecord(name, "train", digest, samples, []))
    if shards:
        shards[-1].skipped = list(d.get("skipped", []))
    total = sum(s.rows for s in shards) + len(d.get("skipped", []))
    splits = {"train": {**data, "total": total, "complete": True}}
    return CacheIndex(meta, splits, d["format"], d.get("version", 1)), shards


class LegacyCache(LatentMeta):
    """An older-layout cache: one folder per split, one ``.pt`` file per video."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (self.path / "metadata.json").is_file():
            meta = read_json(self.path / "metadata.json")
            self.folders = {str(meta.get("split") or "train"): self.path}
        else:
            self.folders = {
                p.parent.name: p.parent for p in sorted(self.path.glob("*/metadata.json"))
            }
        if not self.folders and any(self.path.glob("shard_*.safetensors")):
            raise FileNotFoundError(
                f"{self.path / INDEX} is missing: {str(self.path)!r} holds a cache's shards but "
                f"not its index (an interrupted build, or a partial copy); copy cache.json "
                f"too, or rebuild the cache with `salt cache build`"
            )
        if not self.folders:
            raise FileNotFoundError(
                f"{str(self.path)!r} is no latent cache: it holds neither {INDEX} (a cache "
                f"`salt cache build` wrote) nor metadata.json (the older layout, "
                f"<split>/metadata.json beside <video_id>.pt files)"
            )
        first = self.split("train" if "train" in self.folders else sorted(self.folders)[0])
        self.meta: dict[str, Any] = first.meta

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        return {name: {"data_kind": "legacy", "complete": True} for name in self.folders}

    def split(self, name: str) -> LegacySplit:
        if name == "train" and name not in self.folders and len(self.folders) == 1:
            # As before splits existed: a cache of one folder trains on it, whatever its
            # name. With several and none named train, which one is meant is unknowable.
            only = next(iter(self.folders))
            return LegacySplit(self.folders[only], only)
        if name not in self.folders:
            fix = (
                f"rename the folder to train on to {self.path / name}/"
                if name == "train"
                else f"add {self.path / name}/ with its metadata.json, or evaluate with a live "
                f"teacher"
            )
            raise MissingSplitError(
                f"older-layout cache {self.path} holds no {name!r} split (it has: "
                f"{', '.join(sorted(self.folders))}); {fix}"
            )
        return LegacySplit(self.folders[name], name)


class LegacySplit(LatentMeta):
    """One split folder of the older layout."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        file = path / "metadata.json"
        meta = read_json(file)
        if not isinstance(meta, dict):
            raise ValueError(f"{file} must hold a JSON object")
        missing = [k for k in ("latent_shape", "video_ids") if k not in meta]
        if missing:
            raise ValueError(f"{file} lacks {', '.join(missing)}")
        shape, ids = meta["latent_shape"], meta["video_ids"]
        if not (
            isinstance(shape, list)
            and len(shape) >= 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            raise ValueError(f"{file}: latent_shape must list [tokens, dim], got {shape!r}")
        if not isinstance(ids, list) or not ids:
            raise ValueError(f"{file}: video_ids must be a non-empty list, got {ids!r}")
        self.video_ids: list[str] = [str(v) for v in ids]
        self.meta = {
            "teacher": meta.get("model", "unknown"),
            "latent_shape": shape[-2:],
            "teacher_dim": int(shape[-1]),
            "split": name,
            "store_clips": False,
            "legacy": True,
        }

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def info(self) -> dict[str, Any]:
        return {"data_kind": "legacy", "data_root": None}

    def latents(self, i: int) -> torch.Tensor:
        file = self.path / f"{self.video_ids[i]}.pt"
        if not file.is_file():
            raise FileNotFoundError(
                f"older-layout cache: {file} is listed in metadata.json but missing"
            )
        obj = torch_load(file)
        latents = obj.get("latents") if isinstance(obj, dict) else obj
        if not isinstance(latents, torch.Tensor):
            raise UnreadableFileError(
                f"{file} holds no latents tensor (a tensor, or a dict with 'latents'); "
                f"rebuild this clip's cache file"
            )
        if list(latents.shape[-2:]) != list(self.latent_shape):
            raise ValueError(
                f"{file}: latents {tuple(latents.shape)}, metadata says {self.latent_shape}"
            )
        return latents.reshape(self.latent_shape)

    stores_clips = False

    def check_complete(self, allow: bool = False) -> None:
        """Older-layout caches record no build progress: always taken as complete."""
        return None

    def clip(self, i: int) -> None:
        return None

    def label(self, i: int) -> int:
        return -1


def open_cache(path: str | Path) -> LatentCache | LegacyCache:
    """A cache of any layout salt reads."""
    path = Path(path)
    return LatentCache(path) if is_cache(path) else LegacyCache(path)


def list_caches() -> list[dict]:
    """Named caches under :func:`cache_home` with their size and teacher."""
    found = []
    for path in sorted(cache_home().glob("*")):
        if is_cache(path):
            try:
                cache = LatentCache(path)
                entry = {
                    "samples": len(cache),
                    "splits": {name: len(cache.split(name)) for name in cache.splits},
                    "teacher": str(cache.meta.get("teacher", "?")),
                    "latent_shape": cache.meta.get("latent_shape"),
                }
            except (ValueError, KeyError, TypeError, OSError) as err:  # listed, not fatal
                why = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
                entry = {"samples": None, "splits": {}, "latent_shape": None}
                entry["teacher"] = f"(damaged: {why}; see salt cache verify {path.name})"
            found.append({"name": path.name, **entry, "path": str(path)})
        elif (path / "metadata.json").is_file() or any(path.glob("*/metadata.json")):
            found.append(
                {
                    "name": path.name,
                    "samples": None,
                    "splits": {},
                    "teacher": "(older layout)",
                    "latent_shape": None,
                    "path": str(path),
                }
            )
    return found


def import_legacy(
    path: str | Path, out: Path, cfg: Config, data: str, dtype: str | None = None
) -> LatentCache:
    """Convert an older-layout cache into a view-locked one, reading every latent once.

    The old files store no views, so each clip's view is the fixed centre view that
    ``cfg.data`` gives for the video named ``<video_id>.<ext>`` under ``data`` (at
    ``frame_step``: the older layout predates ``data.fps``). Its ``train`` split (else its
    first) becomes the new cache's ``train`` split.
    """
    out = Path(out)
    if folder_kind(out) != EMPTY:
        raise FolderRefused(
            f"{out} {describe(out, folder_kind(out))}; import into a new or empty --name/--out"
        )
    legacy = LegacyCache(path)
    collection = discover(data)
    by_stem = {Path(r.source).stem: r for r in collection.records}
    grid = list(cfg.grid)
    if legacy.latent_shape[0] != grid[0] * grid[1] * grid[2]:
        raise ValueError(
            f"{legacy.path} holds {legacy.latent_shape[0]} latents per clip but data.num_frames="
            f"{cfg.data.num_frames} at {cfg.data.image_size}px makes a {tuple(grid)} grid; set "
            f"them to the geometry the old cache was computed with"
        )
    splits = [legacy.split("train")]
    for split in splits:
        missing = [v for v in split.video_ids if v not in by_stem]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} video ids of {split.path} have no video under {data} "
                f"(first: {missing[:3]})"
            )
    first = splits[0].latents(0)
    dtype = dtype or {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(
        first.dtype, "float32"
    )
    index = new_index(
        {
            "teacher": str(legacy.meta["teacher"]),
            "teacher_dim": legacy.teacher_dim,
            "latent_shape": list(legacy.latent_shape),
            **clip_meta(cfg, dtype, store_clips=False),
            "imported_from": str(legacy.path),
        }
    )
    claim(out, CACHE, "--out")
    with WriterLock(out, CACHE, "salt cache import"):
        _write_imported(out, splits, by_stem, collection, cfg, data, dtype, index)
    return LatentCache(out)


def _write_imported(out, splits, by_stem, collection, cfg, data, dtype, index) -> None:
    """Each split's latents with the views ``cfg.data`` gives their videos, then the index."""
    d = cfg.data
    for number, split in enumerate(splits):
        samples, latents = [], []
        for i, vid in enumerate(split.video_ids):
            record = by_stem[vid]
            view, _ = read_centre_view(
                collection.path(record), record.source, attrs.evolve(d, fps=0.0), decode=False
            )
            label = record.label if isinstance(record.label, int) else -1
            samples.append({"view": view.as_dict(), "label": label, "video_id": vid})
            latents.append(split.latents(i))
        tensors, error = encode_latents(torch.stack(latents), dtype)
        write_shard(out, number, "train", tensors, samples, [], error)
        index.splits["train"] = {
            "data_spec": data,
            "data_root": str(collection.root),
            "data_kind": collection.kind,
            "views_per_video": 1,
            "total": len(samples),
            "complete": True,
        }
    index.write(out)
