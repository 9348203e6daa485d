"""Verifying a cache: what is wrong with its structure (cheap: the index and each shard's
header) and, reading every byte, its checksums and unfinished builds."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors import safe_open

from salt.cache.index import DTYPES, INDEX, V1_INDEX, CacheError
from salt.cache.shards import sha256
from salt.cache.store import LatentCache
from salt.io import first_line


def verify_cache(path: str | Path) -> list[str]:
    """Problems found in a cache (structure, checksums, unfinished builds); empty when it is
    sound. Every byte is read."""
    cache = LatentCache(path)
    problems = structure_problems(cache)
    broken = {p.split(":")[0] for p in problems}
    for shard in cache.shards:
        file = cache.path / shard.file
        if shard.file not in broken and sha256(file) != shard.sha256:
            problems.append(f"{shard.file}: checksum mismatch (corrupted or modified)")
    return problems + list(cache.incomplete().values())


def structure_problems(cache: LatentCache) -> list[str]:
    """What is wrong with a cache's structure, found cheaply (index fields, each shard's
    header: present, readable, shapes and dtypes as recorded); no data is read."""
    problems = _meta_problems(cache.meta, cache.path)
    for name, info in cache.splits.items():
        if not isinstance(info, dict) or not isinstance(info.get("data_kind"), str):
            problems.append(f"{INDEX}: split {name!r} does not say what data it holds")
    if problems:
        return problems
    expected = list(cache.latent_shape)
    for name in sorted({s.split for s in cache.shards} - set(cache.splits)):
        problems.append(f"shard records name split {name!r}, which {INDEX} does not list")
    for name, info in cache.splits.items():
        rows = sum(s.rows + len(s.skipped) for s in cache.shards if s.split == name)
        if isinstance(info.get("total"), int) and rows > info["total"]:
            problems.append(
                f"split {name!r}: shard records hold {rows} clips, {INDEX} says {info['total']}"
            )
    num_frames = cache.meta.get("num_frames")
    for shard in cache.shards:
        bad = _bad_sample(shard.samples, num_frames, cache.meta.get("image_size"))
        if bad is not None:
            problems.append(f"{shard.record_path}: {bad}")
    for shard in cache.shards:
        file = cache.path / shard.file
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
        if stored != cache.meta["dtype"]:
            problems.append(f"{shard.file}: dtype {stored}, {INDEX} says {cache.meta['dtype']}")
        if cache.quantized:
            tokens, dim = expected
            scales = {"token_scale": [shard.rows, tokens], "channel_scale": [shard.rows, dim]}
            for key, shape in scales.items():
                if shapes.get(key) != shape:
                    problems.append(
                        f"{shard.file}: {key} {shapes.get(key, 'missing')}, an int8 cache "
                        f"needs {shape}"
                    )
        if cache.meta.get("store_clips"):
            size = cache.meta.get("image_size")
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
    recorded = {s.file for s in cache.shards}
    if (cache.path / INDEX).is_file():
        for orphan in sorted(cache.path.glob("shard_[0-9]*[0-9].safetensors")):
            if orphan.name not in recorded:
                problems.append(f"{orphan.name}: no shard record (an interrupted write)")
    return problems


def check_readable(cache: LatentCache) -> None:
    """Raise a :class:`CacheError` naming the first structural problem (cheap: headers
    only; the data is checked row by row as it is read)."""
    problems = structure_problems(cache)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CacheError(
            f"cache {cache.path} is damaged: {problems[0]}{more}; `salt cache verify "
            f"{cache.path}` lists every problem - rebuild the damaged shards with "
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
