"""The index and shard records of a cache, and where caches live.

On disk a cache is a folder::

    cache.json                  CacheIndex: format, metadata, one entry per split
    shard_00000.safetensors     latents [rows, N, D] (and clips uint8 [rows, T, C, H, W];
                                an int8 cache adds token_scale [rows, N], channel_scale [rows, D])
    shard_00000.json            ShardRecord: its split, rows, sha256, per-row view and label

Each shard's record is written once, right after its tensors (:mod:`salt.cache.shards`), so
the cost of writing a shard does not grow with the cache; a tensor file without its record
is an interrupted write.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from salt import __version__
from salt.config import Config
from salt.io import read_json, write_json

FORMAT = "salt-latent-cache"
FORMAT_VERSION = 2
INDEX = "cache.json"
V1_INDEX = "index.json"  # the first layout's single index
# "int8": codes with per-channel and per-token scales (salt.quant), half the bytes of fp16.
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "int8": torch.int8,
}
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


def check_split(split: str) -> str:
    """A split name the store accepts."""
    if split not in SPLITS:
        raise ValueError(f"cache split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


class MissingSplitError(KeyError):
    """A cache has no such split."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CacheError(ValueError):
    """A cache that is damaged, incomplete or inconsistent with its index; the message
    names the file and the fix."""


class IncompleteCacheError(CacheError):
    """A cache split whose build did not finish."""


@attrs.define
class ShardRecord:
    """What ``shard_NNNNN.json`` says about its tensor file."""

    file: str
    split: str
    sha256: str
    samples: list[dict]  # per row: {"view": View.as_dict(), "label": int, ...}
    skipped: list[str] = attrs.Factory(list)  # why each unreadable clip was left out
    # Per tensor key, each row's CRC-32, checked on every read (records written before
    # row checksums have none: their shard's SHA-256 is checked when first opened).
    row_crc32: dict[str, list[int]] | None = None
    # An int8 shard's [sum (x - x_hat)^2, sum x^2] against the fp16 latents it replaces.
    quant_error: list[float] | None = None

    @property
    def rows(self) -> int:
        return len(self.samples)

    @property
    def record_path(self) -> str:
        return self.file.replace(".safetensors", ".json")

    def to_dict(self) -> dict:
        return {**attrs.asdict(self), "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict, source: Path | None = None) -> ShardRecord:
        try:
            return cls(
                str(d["file"]),
                str(d["split"]),
                str(d["sha256"]),
                list(d["samples"]),
                list(d.get("skipped", [])),
                d.get("row_crc32"),
                d.get("quant_error"),
            )
        except (KeyError, TypeError) as err:
            raise CacheError(
                f"{source or 'a shard record'} is damaged ({type(err).__name__}: {err}); run "
                f"`salt cache verify` on the cache, then rebuild it"
            ) from None


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
            raise CacheError(f"{path / INDEX} is not a salt latent cache index")
        meta, splits = d.get("meta"), d.get("splits", {})
        if not isinstance(meta, dict) or not isinstance(splits, dict):
            raise CacheError(f"{path / INDEX} is damaged: 'meta' and 'splits' must be objects")
        return cls(meta, splits, d["format"], d.get("version", FORMAT_VERSION))

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

    @property
    def quantized(self) -> bool:
        """Whether latents are stored in 8 bits (codes and scales, read as QuantizedLatents)."""
        return self.meta.get("dtype") == "int8"


def new_index(meta: dict[str, Any]) -> CacheIndex:
    """The index of a cache about to be built, stamped with its creation time."""
    return CacheIndex({**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def read_shard_records(path: Path) -> list[ShardRecord]:
    """Every complete shard of a cache (a record per tensor file), in build order."""
    records = []
    for p in sorted(path.glob("shard_[0-9]*[0-9].json")):
        record = ShardRecord.from_dict(read_json(p), p)
        if record.record_path != p.name:
            raise CacheError(
                f"{p} describes {record.file}, not its own tensor file {p.stem}.safetensors (a "
                f"copied or renamed record); delete it and rebuild that shard"
            )
        records.append(record)
    return records
