"""Building a cache: run a frozen teacher once over one split of a data source and store
its latents with each clip's view. Builds resume where they stopped."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import torch
from torch.utils.data import Dataset

from salt.cache.store import (
    DTYPES,
    INDEX,
    CacheIndex,
    LatentCache,
    check_split,
    clip_meta,
    new_index,
    read_shard_records,
    write_shard,
)
from salt.config import Config
from salt.contracts import Teacher
from salt.data import build_eval_loader, build_source, normalize_clips, parse_data_spec
from salt.io import check_folder, remove_stale_temps
from salt.video import discover

log = logging.getLogger(__name__)


class CacheBuildError(RuntimeError):
    """A cache build could not start or continue."""


def cache_meta(cfg: Config, teacher: Teacher, dtype: str, store_clips: bool) -> dict:
    """What every split of a cache shares: the teacher, latent shape, dtype, clip geometry."""
    from salt.plugins import plugin_versions
    from salt.registry import parse_spec, teachers

    plugin = teachers.get(parse_spec(cfg.teacher.spec)[0]).plugin
    return {
        "teacher": cfg.teacher.spec,
        "teacher_plugin": plugin,
        "teacher_version": plugin_versions().get(plugin),
        "teacher_dim": teacher.teacher_dim,
        "latent_shape": [cfg.geometry.num_tokens, teacher.teacher_dim],
        **clip_meta(cfg, dtype, store_clips),
    }


def split_info(cfg: Config, views: int) -> dict:
    """Where one split's clips come from: recorded so the student can be fed the same."""
    spec = parse_data_spec(cfg.data.spec)
    if spec.synthetic:
        return {
            "data_spec": cfg.data.spec,
            "data_root": None,
            "data_kind": spec.kind,
            "views_per_video": 1,
        }
    collection = discover(spec.path)
    return {
        "data_spec": cfg.data.spec,
        "data_root": str(collection.root),
        "data_kind": collection.kind,
        "views_per_video": views,
    }


def _open_for_build(out: Path, meta: dict) -> CacheIndex:
    """The index of a cache to (continue to) build into ``out``; other settings are an error."""
    if not (out / INDEX).is_file():
        if (out / "index.json").is_file():
            raise CacheBuildError(
                f"{out} holds a cache in the first layout (index.json); build into a new "
                f"--name/--out (it is still read for training as it is)"
            )
        if any(out.glob("shard_*")):
            raise CacheBuildError(
                f"{out} holds shards but no {INDEX} (a partly deleted cache); delete the folder "
                f"to rebuild it, or build into another --name/--out"
            )
        return new_index(meta)
    index = CacheIndex.read(out)
    ignore = ("created", "salt_version")
    old = {k: v for k, v in index.meta.items() if k not in ignore}
    new = {k: v for k, v in meta.items() if k not in ignore}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CacheBuildError(
            f"{out} holds a cache built with other settings ({', '.join(diff)} differ); "
            f"use another --name/--out, or delete it to rebuild"
        )
    return index


def build_cache(
    teacher: Teacher,
    cfg: Config,
    out: Path,
    split: str = "train",
    views: int = 1,
    dtype: str = "float16",
    batch_size: int = 8,
    workers: int = 2,
    store_clips: bool = False,
    shard_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
) -> LatentCache:
    """Run ``teacher`` over ``split`` of ``cfg.data`` once and write its latents into ``out``.

    ``cfg`` gives the data, the clip geometry and the teacher's spec (recorded in the
    metadata). Building another split into an existing cache adds it; a build that was
    stopped resumes at its first unwritten shard.
    """
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_split(split)
    if teacher.cache is not None:
        raise CacheBuildError("a cache is built with a live teacher, not with cached:...")
    teacher = teacher.to(device)
    source = build_source(cfg.data, split, fixed_views=views)
    meta = cache_meta(cfg, teacher, dtype, store_clips)
    info = split_info(cfg, views)
    check_folder(out, "the cache folder").mkdir(parents=True, exist_ok=True)
    for tmp in remove_stale_temps(out):
        log.info("removed %s, left by an interrupted write", tmp)
    index = _open_for_build(out, meta)
    previous = index.splits.get(split)
    if previous is not None:
        known = {k: previous.get(k) for k in info}
        if known != info:
            diff = sorted(k for k in info if known[k] != info[k])
            raise CacheBuildError(
                f"{out} already holds a {split!r} split built from other data ({', '.join(diff)} "
                f"differ); build it into another cache, or delete that one"
            )
    shards = _complete_shards(out)
    done = sum(s.rows + len(s.skipped) for s in shards if s.split == split)
    total = len(source)
    index.splits[split] = {**info, "total": total, "complete": done >= total}
    index.write(out)
    if done >= total:
        log.info("cache %s split %s is already complete (%d clips)", out, split, done)
        return LatentCache(out)
    if done:
        log.info("resuming cache build in %s: split %s after %d clips", out, split, done)
    bytes_per = meta["latent_shape"][0] * teacher.teacher_dim * DTYPES[dtype].itemsize
    clip_bytes = cfg.data.num_frames * 3 * cfg.data.image_size**2 if store_clips else 0
    log.info(
        "building cache %s (%s): %d clips, %.1f MB of latents%s",
        out,
        split,
        total,
        total * bytes_per / 1e6,
        f" + {total * clip_bytes / 1e6:.1f} MB of stored clips" if store_clips else "",
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, desc="cache", unit="clip", dynamic_ncols=True)
    job = ShardJob(teacher, source, cfg, dtype, batch_size, workers, store_clips, device)
    number = len(shards)
    for start in range(done, total, shard_size):
        tensors, samples, skipped = compute_shard(
            job, range(start, min(start + shard_size, total)), bar
        )
        write_shard(out, number, split, tensors, samples, skipped)
        number += 1
    if bar is not None:
        bar.close()
    index.splits[split]["complete"] = True
    index.write(out)
    built = LatentCache(out)
    for message in built.skipped:
        log.warning("not cached (unreadable): %s", message)
    return built


def _complete_shards(out: Path):
    """The shards with a record; tensor files without one (a build killed mid-write) go."""
    shards = read_shard_records(out)
    recorded = {s.file for s in shards}
    for path in out.glob("shard_[0-9]*[0-9].safetensors"):
        if path.name not in recorded:
            path.unlink()
    return shards


@attrs.frozen
class ShardJob:
    """What computing any shard of one build needs."""

    teacher: Teacher
    source: Dataset
    cfg: Config  # the data's normalization and the clip geometry
    dtype: str
    batch_size: int
    workers: int
    store_clips: bool
    device: str


def compute_shard(
    job: ShardJob, indices: range, bar=None
) -> tuple[dict[str, torch.Tensor], list[dict], list[str]]:
    """The teacher's latents (and clips) for ``indices`` of the source, each row's view and
    label, and why each unreadable clip was skipped."""
    d = job.cfg.data
    loader = build_eval_loader(job.source, job.batch_size, indices, None, 0, job.workers)
    latents, clips, samples, skipped = [], [], [], []
    for batch in loader:
        skipped.extend(batch.errors)
        if batch.size:
            video = normalize_clips(batch.video.to(job.device), d.mean, d.std)
            with torch.no_grad():
                latents.append(job.teacher(video).to(DTYPES[job.dtype]).cpu())
            if job.store_clips:
                clips.append(batch.video)
            for view, label in zip(batch.views, batch.labels.tolist(), strict=True):
                samples.append({"view": view, "label": label})
        if bar is not None:
            bar.update(batch.size + len(batch.errors))
    shape = [0, job.cfg.geometry.num_tokens, job.teacher.teacher_dim]
    tensors = {
        "latents": torch.cat(latents) if latents else torch.empty(shape, dtype=DTYPES[job.dtype])
    }
    if job.store_clips:
        tensors["clips"] = torch.cat(clips) if clips else torch.empty(0, dtype=torch.uint8)
    return tensors, samples, skipped
