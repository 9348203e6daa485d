"""The cache store: where caches live, the index schema, memory-mapped reads, atomic shard
writes and verification.

On disk a cache is a folder::

    cache.json                  CacheIndex: format, metadata, one entry per split
    shard_00000.safetensors     latents [rows, N, D] (and clips uint8 [rows, T, C, H, W])
    shard_00000.json            ShardRecord: its split, rows, sha256, per-row view and label

Each shard's record is written once, right after its tensors, so the cost of writing a shard
does not grow with the cache; a tensor file without its record is an interrupted write. The
first layout (one ``index.json`` holding every sample, rewritten after every shard) is still
read, as a cache with one split, ``train``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import safe_open

from salt import __version__
from salt.config import Config
from salt.io import atomic_write_bytes, read_json, write_json
from salt.video import View

FORMAT = "salt-latent-cache"
FORMAT_VERSION = 2
INDEX = "cache.json"
V1_INDEX = "index.json"  # the first layout's single index
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SPLITS = ("train", "val", "test")


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


def is_cache(path: Path) -> bool:
    """Whether ``path`` holds a cache in either of salt's own layouts."""
    return (path / INDEX).is_file() or (path / V1_INDEX).is_file()


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def shard_name(number: int) -> str:
    """``shard_00012.safetensors``: shards are numbered across splits in build order."""
    return f"shard_{number:05d}.safetensors"


def check_split(split: str) -> str:
    """A split name the store accepts."""
    if split not in SPLITS:
        raise ValueError(f"cache split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


class MissingSplitError(KeyError):
    """A cache has no such split."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@attrs.define
class ShardRecord:
    """What ``shard_NNNNN.json`` says about its tensor file."""

    file: str
    split: str
    sha256: str
    samples: list[dict]  # per row: {"view": View.as_dict(), "label": int, ...}
    skipped: list[str] = attrs.Factory(list)  # why each unreadable clip was left out

    @property
    def rows(self) -> int:
        return len(self.samples)

    @property
    def record_path(self) -> str:
        return self.file.replace(".safetensors", ".json")

    def to_dict(self) -> dict:
        return {**attrs.asdict(self), "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict) -> ShardRecord:
        return cls(d["file"], d["split"], d["sha256"], list(d["samples"]), list(d["skipped"]))


@attrs.define
class CacheIndex:
    """``cache.json``: the cache-level metadata and, per split, its data and completeness.

    ``meta`` holds what every split shares (teacher, latent shape, dtype, clip geometry);
    ``splits[name]`` the data it was computed from (``data_spec``, ``data_root``,
    ``data_kind``, ``views_per_video``), ``total`` clips to cache and ``complete``.
    """

    meta: dict[str, Any]
    splits: dict[str, dict[str, Any]] = attrs.Factory(dict)
    format: str = FORMAT
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "version": self.version,
            "meta": self.meta,
            "splits": self.splits,
        }

    @classmethod
    def read(cls, path: Path) -> CacheIndex:
        d = read_json(path / INDEX)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path / INDEX} is not a salt latent cache index")
        return cls(d["meta"], d.get("splits", {}), d["format"], d["version"])

    def write(self, path: Path) -> None:
        write_json(path / INDEX, self.to_dict())


def clip_meta(cfg: Config, dtype: str, store_clips: bool) -> dict[str, Any]:
    """What every cache records about its clips: grid, geometry, normalization, dtype."""
    d = cfg.data
    return {
        "grid": list(cfg.grid),
        "dtype": dtype,
        "num_frames": d.num_frames,
        "frame_step": d.frame_step,
        "fps": d.fps,
        "image_size": d.image_size,
        "patch_size": cfg.student.patch_size,
        "tubelet_size": cfg.student.tubelet_size,
        "mean": list(d.mean),
        "std": list(d.std),
        "store_clips": store_clips,
        "salt_version": __version__,
    }


class LatentMeta:
    """The latent shape and width a cache (of either layout) declares in ``meta``."""

    meta: dict[str, Any]

    @property
    def teacher_dim(self) -> int:
        return int(self.meta["teacher_dim"])

    @property
    def latent_shape(self) -> tuple[int, int]:
        return tuple(self.meta["latent_shape"])


def write_shard(
    out: Path,
    number: int,
    split: str,
    tensors: dict[str, torch.Tensor],
    samples: list[dict],
    skipped: list[str],
) -> ShardRecord:
    """Atomically write a shard's tensors, then its record (the record marks it complete)."""
    from safetensors.torch import save

    name = shard_name(number)
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / name, lambda f: f.write(data))
    record = ShardRecord(name, split, hashlib.sha256(data).hexdigest(), samples, skipped)
    write_json(out / record.record_path, record.to_dict())
    return record


def read_shard_records(path: Path) -> list[ShardRecord]:
    """Every complete shard of a cache (a record per tensor file), in build order."""
    return [
        ShardRecord.from_dict(read_json(p)) for p in sorted(path.glob("shard_[0-9]*[0-9].json"))
    ]


def _read_v1(path: Path) -> tuple[CacheIndex, list[ShardRecord]]:
    """The first layout: one ``index.json`` of meta, shards and samples; one split, train."""
    d = read_json(path / V1_INDEX)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path / V1_INDEX} is not a salt latent cache index")
    meta = dict(d["meta"])
    data = {k: meta.pop(k, None) for k in ("data_spec", "data_root", "data_kind")}
    data["views_per_video"] = meta.pop("views_per_video", 1)
    by_shard: dict[int, list[dict]] = {}
    for s in d["samples"]:
        by_shard.setdefault(s["shard"], []).append(s)
    shards = []
    for i, shard in enumerate(d["shards"]):
        rows = sorted(by_shard.get(i, []), key=lambda s: s["row"])
        samples = [{k: v for k, v in s.items() if k not in ("shard", "row")} for s in rows]
        shards.append(ShardRecord(shard["file"], "train", shard["sha256"], samples, []))
    if shards:
        shards[-1].skipped = list(d.get("skipped", []))
    total = sum(s.rows for s in shards) + len(d.get("skipped", []))
    splits = {"train": {**data, "total": total, "complete": True}}
    return CacheIndex(meta, splits, d["format"], d.get("version", 1)), shards


class LatentCache(LatentMeta):
    """A built cache: metadata, its splits, per-sample views and memory-mapped latent reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (self.path / INDEX).is_file():
            self.index = CacheIndex.read(self.path)
            self.shards = read_shard_records(self.path)
        elif (self.path / V1_INDEX).is_file():
            self.index, self.shards = _read_v1(self.path)
        else:
            raise FileNotFoundError(f"{str(self.path)!r} is not a latent cache: {INDEX} is missing")
        self.meta: dict[str, Any] = self.index.meta
        # (shard number, row) of every sample, grouped by split in build order.
        self._rows: dict[str, list[tuple[int, int]]] = {}
        for number, shard in enumerate(self.shards):
            rows = self._rows.setdefault(shard.split, [])
            rows.extend((number, row) for row in range(shard.rows))
        self._handles: dict[int, Any] = {}

    def __getstate__(self):  # DataLoader workers reopen the memory maps themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.meta["grid"])

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        """Each split's data and completeness (``cache.json``'s ``splits``)."""
        return self.index.splits

    @property
    def skipped(self) -> list[str]:
        """Why each clip that could not be read was left out, over all splits."""
        return [message for s in self.shards for message in s.skipped]

    def split(self, name: str) -> CacheSplit:
        """The samples of one split; a split the cache lacks is a clear error."""
        if name not in self.splits:
            have = ", ".join(sorted(self.splits)) or "none"
            raise MissingSplitError(
                f"cache {self.path} holds no {name!r} split (it has: {have}); build one with "
                f"`salt cache build --split {name} --data HELD_OUT_DATA` into the same cache"
            )
        return CacheSplit(self, name, self._rows.get(name, []))

    def _shard(self, number: int):
        handle = self._handles.get(number)
        if handle is None:
            handle = safe_open(str(self.path / self.shards[number].file), framework="pt")
            self._handles[number] = handle
        return handle

    def read(self, number: int, row: int, key: str = "latents") -> torch.Tensor:
        """Row ``row`` of a shard's ``latents`` (or ``clips``): a memory-mapped slice."""
        return self._shard(number).get_slice(key)[row]


class CacheSplit:
    """One split of a cache, indexed 0..len-1 in build order."""

    def __init__(self, cache: LatentCache, name: str, rows: list[tuple[int, int]]):
        self.cache = cache
        self.name = name
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def info(self) -> dict[str, Any]:
        """The data this split was computed from (``data_spec``, ``data_root``, ...)."""
        return self.cache.splits[self.name]

    @property
    def stores_clips(self) -> bool:
        """Whether every clip is stored with its latents (nothing to decode)."""
        return bool(self.cache.meta.get("store_clips"))

    def sample(self, i: int) -> dict:
        """Sample ``i``'s stored record: its view, label (and ``video_id`` if imported)."""
        number, row = self.rows[i]
        return self.cache.shards[number].samples[row]

    def latents(self, i: int) -> torch.Tensor:
        """Sample ``i``'s latents ``[N, D]`` in the stored dtype."""
        return self.cache.read(*self.rows[i])

    def clip(self, i: int) -> torch.Tensor | None:
        """Sample ``i``'s stored clip ``uint8 [T, C, H, W]``, if the cache stores clips."""
        if not self.stores_clips:
            return None
        return self.cache.read(*self.rows[i], key="clips")

    def view(self, i: int) -> View:
        return View.from_dict(self.sample(i)["view"])

    def label(self, i: int) -> int:
        label = self.sample(i).get("label", -1)
        return label if isinstance(label, int) else -1


def new_index(meta: dict[str, Any]) -> CacheIndex:
    """The index of a cache about to be built, stamped with its creation time."""
    return CacheIndex({**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a cache (checksums, shapes, row counts, unfinished builds); empty
    when it is sound."""
    cache = LatentCache(path)
    problems = []
    expected = list(cache.latent_shape)
    for shard in cache.shards:
        file = cache.path / shard.file
        if not file.is_file():
            problems.append(f"{shard.file}: missing")
            continue
        if sha256(file) != shard.sha256:
            problems.append(f"{shard.file}: checksum mismatch (corrupted or modified)")
            continue
        with safe_open(str(file), framework="pt") as f:
            shape = list(f.get_slice("latents").get_shape())
            dtype = f.get_slice("latents").get_dtype()
        if shape[1:] != expected or shape[0] != shard.rows:
            problems.append(
                f"{shard.file}: latents {shape}, expected [{shard.rows}, {expected[0]}, {expected[1]}]"
            )
        stored = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(dtype, dtype)
        if stored != cache.meta["dtype"]:
            problems.append(f"{shard.file}: dtype {stored}, expected {cache.meta['dtype']}")
    recorded = {s.file for s in cache.shards}
    for orphan in sorted(cache.path.glob("shard_[0-9]*[0-9].safetensors")):
        if orphan.name not in recorded and (cache.path / INDEX).is_file():
            problems.append(f"{orphan.name}: no shard record (an interrupted write)")
    for name, info in cache.splits.items():
        done = sum(s.rows + len(s.skipped) for s in cache.shards if s.split == name)
        if not info.get("complete") or done < info.get("total", done):
            problems.append(
                f"split {name!r}: {done} of {info.get('total', '?')} clips cached; the build did "
                f"not finish - run the same `salt cache build` again to complete it"
            )
    return problems


def list_caches() -> list[dict]:
    """Named caches under :func:`cache_home` with their size and teacher."""
    found = []
    for path in sorted(cache_home().glob("*")):
        if is_cache(path):
            cache = LatentCache(path)
            found.append(
                {
                    "name": path.name,
                    "samples": len(cache),
                    "splits": {name: len(cache.split(name)) for name in cache.splits},
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
                    "splits": {},
                    "teacher": "(older layout)",
                    "latent_shape": None,
                    "path": str(path),
                }
            )
    return found
