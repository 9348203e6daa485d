"""The cache store: where caches live, the index schema, memory-mapped reads, atomic shard
writes and verification.

On disk a cache is a folder::

    cache.json                  CacheIndex: format, metadata, one entry per split
    shard_00000.safetensors     latents [rows, N, D] (and clips uint8 [rows, T, C, H, W];
                                an int8 cache adds token_scale [rows, N], channel_scale [rows, D])
    shard_00000.json            ShardRecord: its split, rows, sha256, per-row view and label

Each shard's record is written once, right after its tensors, so the cost of writing a shard
does not grow with the cache; a tensor file without its record is an interrupted write. The
first layout (one ``index.json`` holding every sample, rewritten after every shard) is still
read, as a cache with one split, ``train``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import zlib
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors import safe_open

from salt import __version__
from salt.config import Config
from salt.io import atomic_write_bytes, first_line, read_json, write_json
from salt.quant import QuantizedLatents, quantize, squared_error
from salt.video import View

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
KEYS_INT8 = ("latents", "token_scale", "channel_scale")  # an int8 shard's tensors
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


def shard_number(file: str) -> int:
    """The number in a shard's file name (``shard_00012.safetensors`` -> 12)."""
    return int(Path(file).name.split("_")[1].split(".")[0])


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


def row_checksum(row: torch.Tensor) -> int:
    """CRC-32 of one stored row's bytes (``zlib``: ~GB/s, catches any flipped byte)."""
    return zlib.crc32(row.contiguous().view(torch.uint8).numpy())


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


def encode_latents(
    latents: torch.Tensor, dtype: str
) -> tuple[dict[str, torch.Tensor], list[float] | None]:
    """The tensors a shard stores for ``latents [rows, N, D]`` in ``dtype`` and, for int8,
    ``[sum (x - x_hat)^2, sum x^2]`` against the fp16 latents it replaces."""
    if dtype != "int8":
        return {"latents": latents.to(DTYPES[dtype])}, None
    q = quantize(latents)
    return q.tensors(), list(squared_error(latents.to(torch.float16), q))


def write_shard(
    out: Path,
    number: int,
    split: str,
    tensors: dict[str, torch.Tensor],
    samples: list[dict],
    skipped: list[str],
    quant_error: list[float] | None = None,
) -> ShardRecord:
    """Atomically write a shard's tensors, then its record (the record marks it complete)."""
    from safetensors.torch import save

    name = shard_name(number)
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / name, lambda f: f.write(data))
    crcs = {k: [row_checksum(row) for row in v] for k, v in tensors.items()}
    digest = hashlib.sha256(data).hexdigest()
    record = ShardRecord(name, split, digest, samples, skipped, crcs, quant_error)
    write_json(out / record.record_path, record.to_dict())
    return record


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


def _read_v1(path: Path) -> tuple[CacheIndex, list[ShardRecord]]:
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
        self._verified: set[int] = set()  # shards whose SHA-256 this process has checked

    def __getstate__(self):  # DataLoader workers reopen the memory maps themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_verified"] = set()
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
            shard = self.shards[number]
            file = self.path / shard.file
            if shard.row_crc32 is None and number not in self._verified:
                # No row checksums (an older record): check the whole shard once.
                if not file.is_file() or sha256(file) != shard.sha256:
                    raise CacheError(_damaged(file, "does not match its recorded checksum"))
                self._verified.add(number)
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as err:  # SafetensorError, OSError: missing, truncated, damaged
                raise CacheError(_damaged(file, first_line(err))) from None
            self._handles[number] = handle
        return handle

    def read(self, number: int, row: int, key: str = "latents") -> torch.Tensor:
        """Row ``row`` of a shard's ``latents`` (or ``clips``): a memory-mapped slice, checked
        against the row's recorded CRC-32 before it is returned."""
        shard = self.shards[number]
        try:
            tensor = self._shard(number).get_slice(key)[row]
        except CacheError:
            raise
        except Exception as err:
            raise CacheError(_damaged(self.path / shard.file, first_line(err))) from None
        crcs = (shard.row_crc32 or {}).get(key)
        if crcs is not None and row_checksum(tensor) != crcs[row]:
            raise CacheError(
                _damaged(self.path / shard.file, f"row {row} of {key!r} fails its checksum")
            )
        return tensor

    def structure_problems(self) -> list[str]:
        """What is wrong with the cache's structure, found cheaply (index fields, each shard's
        header: present, readable, shapes and dtypes as recorded); no data is read."""
        problems = _meta_problems(self.meta, self.path)
        for name, info in self.splits.items():
            if not isinstance(info, dict) or not isinstance(info.get("data_kind"), str):
                problems.append(f"{INDEX}: split {name!r} does not say what data it holds")
        if problems:
            return problems
        expected = list(self.latent_shape)
        for name in sorted({s.split for s in self.shards} - set(self.splits)):
            problems.append(f"shard records name split {name!r}, which {INDEX} does not list")
        for name, info in self.splits.items():
            rows = sum(s.rows + len(s.skipped) for s in self.shards if s.split == name)
            if isinstance(info.get("total"), int) and rows > info["total"]:
                problems.append(
                    f"split {name!r}: shard records hold {rows} clips, {INDEX} says {info['total']}"
                )
        num_frames = self.meta.get("num_frames")
        for shard in self.shards:
            bad = _bad_sample(shard.samples, num_frames, self.meta.get("image_size"))
            if bad is not None:
                problems.append(f"{shard.record_path}: {bad}")
        for shard in self.shards:
            file = self.path / shard.file
            if not file.is_file():
                problems.append(f"{shard.file}: missing")
                continue
            try:
                with safe_open(str(file), framework="pt") as f:
                    shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
                    dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            except Exception as err:
                problems.append(f"{shard.file}: unreadable ({first_line(err)})")
                continue
            if "latents" not in shapes:
                problems.append(f"{shard.file}: holds no 'latents' tensor")
                continue
            if shapes["latents"] != [shard.rows, *expected]:
                problems.append(
                    f"{shard.file}: latents {shapes['latents']}, but its record has {shard.rows} "
                    f"rows of {expected}"
                )
            stored = SAFETENSORS_DTYPES.get(dtypes["latents"], dtypes["latents"])
            if stored != self.meta["dtype"]:
                problems.append(f"{shard.file}: dtype {stored}, {INDEX} says {self.meta['dtype']}")
            if self.quantized:
                tokens, dim = expected
                scales = {"token_scale": [shard.rows, tokens], "channel_scale": [shard.rows, dim]}
                for key, shape in scales.items():
                    if shapes.get(key) != shape:
                        problems.append(
                            f"{shard.file}: {key} {shapes.get(key, 'missing')}, an int8 cache "
                            f"needs {shape}"
                        )
            if self.meta.get("store_clips"):
                size = self.meta.get("image_size")
                clips = [shard.rows, num_frames, 3, size, size]  # None: an older index's gap
                stored = shapes.get("clips")
                if (
                    stored is None
                    or len(stored) != 5
                    or any(
                        want is not None and want != got
                        for want, got in zip(clips, stored, strict=True)
                    )
                ):
                    problems.append(
                        f"{shard.file}: stored clips {stored or 'missing'}, but its record has "
                        f"{shard.rows} rows and {INDEX} says num_frames {num_frames}, "
                        f"image_size {size}"
                    )
            for key, crcs in (shard.row_crc32 or {}).items():
                if len(crcs) != shard.rows:
                    problems.append(
                        f"{shard.record_path}: {len(crcs)} {key} checksums for {shard.rows} rows"
                    )
        recorded = {s.file for s in self.shards}
        if (self.path / INDEX).is_file():
            for orphan in sorted(self.path.glob("shard_[0-9]*[0-9].safetensors")):
                if orphan.name not in recorded:
                    problems.append(f"{orphan.name}: no shard record (an interrupted write)")
        return problems

    def incomplete(self) -> dict[str, str]:
        """Split -> why it is not complete (a build that did not finish), for every such split."""
        found = {}
        for name, info in self.splits.items():
            done = sum(s.rows + len(s.skipped) for s in self.shards if s.split == name)
            if not info.get("complete") or done < info.get("total", done):
                found[name] = (
                    f"split {name!r}: {done} of {info.get('total', '?')} clips cached; the build "
                    f"did not finish - run the same `salt cache build` again to complete it"
                )
        return found

    def check_readable(self) -> None:
        """Raise a :class:`CacheError` naming the first structural problem (cheap: headers
        only; the data is checked row by row as it is read)."""
        problems = self.structure_problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CacheError(
                f"cache {self.path} is damaged: {problems[0]}{more}; `salt cache verify "
                f"{self.path}` lists every problem - rebuild the damaged shards with "
                f"`salt cache build` (delete them and their .json records first)"
            )


SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "I8": "int8"}


def _meta_problems(meta: dict, path: Path) -> list[str]:
    """Index fields a cache cannot be read without, checked for type and consistency."""
    where = path / (INDEX if (path / INDEX).is_file() else V1_INDEX)
    shape = meta.get("latent_shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        return [f"{where}: latent_shape must be [tokens, dim], got {shape!r}"]
    if meta.get("dtype") not in DTYPES:
        return [f"{where}: dtype must be one of {', '.join(DTYPES)}, got {meta.get('dtype')!r}"]
    problems = []
    if not isinstance(meta.get("grid", []), list):
        problems.append(f"{where}: grid must be a list, got {meta.get('grid')!r}")
    if "teacher_dim" in meta and meta["teacher_dim"] != shape[1]:
        problems.append(f"{where}: teacher_dim {meta['teacher_dim']} but latent_shape {shape}")
    grid = meta.get("grid")
    if grid is not None and (not isinstance(grid, list) or math.prod(grid) != shape[0]):
        problems.append(
            f"{where}: grid {grid} makes {math.prod(grid) if isinstance(grid, list) else '?'} tokens, latent_shape says {shape[0]}"
        )
    return problems + _geometry_problems(meta, where)


GEOMETRY = ("num_frames", "image_size", "patch_size", "tubelet_size")


def _geometry_problems(meta: dict, where: Path) -> list[str]:
    """Whether the clip geometry the index records makes the token grid and latent shape it
    records: ``tokens = (num_frames / tubelet_size) * (image_size / patch_size)^2``.
    Indexes that predate a field are not judged on it."""
    given = {k: meta[k] for k in GEOMETRY if k in meta}
    bad = [k for k, v in given.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        return [f"{where}: {bad[0]} must be a positive integer, got {given[bad[0]]!r}"]
    if len(given) < len(GEOMETRY):
        return []
    frames, size, patch, tubelet = (given[k] for k in GEOMETRY)
    said = f"num_frames {frames}, tubelet_size {tubelet}, image_size {size}, patch_size {patch}"
    if frames % tubelet or size % patch:
        return [f"{where}: {said} do not tile into tokens; the index contradicts itself"]
    made = [frames // tubelet, size // patch, size // patch]
    problems = []
    grid = meta.get("grid")
    if isinstance(grid, list) and grid != made:
        problems.append(f"{where}: {said} make the grid {made}, but grid says {grid}")
    tokens = math.prod(made)
    if tokens != meta["latent_shape"][0]:
        problems.append(
            f"{where}: {said} make {tokens} tokens per clip, but latent_shape says "
            f"{meta['latent_shape'][0]}; the index contradicts itself - rebuild the cache"
        )
    return problems


def _bad_sample(samples: list, num_frames: int | None, image_size: int | None = None) -> str | None:
    """What is wrong with the first malformed row record (its view and label, and a crop
    the size of ``image_size``), or None."""
    for row, sample in enumerate(samples):
        view = sample.get("view") if isinstance(sample, dict) else None
        if view is None and isinstance(sample, dict) and "video_id" in sample:
            continue  # imported from the older layout: located by its video id
        ok = (
            isinstance(view, dict)
            and isinstance(view.get("source"), str)
            and _ints(view.get("frames"), num_frames or len(view.get("frames") or []))
            and _ints(view.get("crop"), 4)
            and _ints(view.get("resized"), 2)
            and isinstance(sample.get("label", -1), int)
        )
        if not ok:
            return f"row {row} has no valid view (source, {num_frames} frames, crop, resized)"
        if isinstance(image_size, int) and view["crop"][2:] != [image_size, image_size]:
            crop = "x".join(map(str, view["crop"][2:]))
            return (
                f"row {row}: its view crops {crop} pixels, but {INDEX} says image_size {image_size}"
            )
    return None


def _ints(value, length: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )


def _damaged(file: Path, why: str) -> str:
    return (
        f"{file} is damaged: {why}; `salt cache verify` lists every problem - rebuild it "
        f"(delete the shard and its .json record, then run the same `salt cache build`)"
    )


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

    def latents(self, i: int) -> torch.Tensor | QuantizedLatents:
        """Sample ``i``'s latents ``[N, D]`` in the stored dtype (int8 ones as codes and
        scales: the loop dequantizes them on its device)."""
        if self.cache.quantized:
            return QuantizedLatents(*(self.cache.read(*self.rows[i], key=k) for k in KEYS_INT8))
        return self.cache.read(*self.rows[i])

    def clip(self, i: int) -> torch.Tensor | None:
        """Sample ``i``'s stored clip ``uint8 [T, C, H, W]``, if the cache stores clips."""
        if not self.stores_clips:
            return None
        return self.cache.read(*self.rows[i], key="clips")

    def view(self, i: int) -> View:
        return View.from_dict(self.sample(i)["view"])

    def incomplete(self) -> str | None:
        """Why this split is not complete (its build did not finish), or None."""
        return self.cache.incomplete().get(self.name)

    def label(self, i: int) -> int:
        label = self.sample(i).get("label", -1)
        return label if isinstance(label, int) else -1


def quantization_error(cache: LatentCache) -> float | None:
    """An int8 cache's relative MSE against the fp16 latents it replaces (sum of squared
    errors over sum of squares, over every shard that recorded them); None otherwise."""
    errors = [s.quant_error for s in cache.shards if s.quant_error]
    if not cache.quantized or not errors:
        return None
    reference = sum(e[1] for e in errors)
    return sum(e[0] for e in errors) / reference if reference > 0 else 0.0


def new_index(meta: dict[str, Any]) -> CacheIndex:
    """The index of a cache about to be built, stamped with its creation time."""
    return CacheIndex({**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a cache (structure, checksums, unfinished builds); empty when it is
    sound. Every byte is read."""
    cache = LatentCache(path)
    problems = cache.structure_problems()
    broken = {p.split(":")[0] for p in problems}
    for shard in cache.shards:
        file = cache.path / shard.file
        if shard.file not in broken and sha256(file) != shard.sha256:
            problems.append(f"{shard.file}: checksum mismatch (corrupted or modified)")
    return problems + list(cache.incomplete().values())


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
