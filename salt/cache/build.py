"""Building a cache: run a frozen teacher once over one split of a data source and store
its latents with each clip's view. Builds resume where they stopped."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import attrs
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from salt.cache.index import (
    DTYPES,
    INDEX,
    CacheIndex,
    check_split,
    clip_meta,
    new_index,
    read_shard_records,
)
from salt.cache.shards import encode_latents, shard_number, write_shard
from salt.cache.store import LatentCache
from salt.config import Config
from salt.contracts import Teacher
from salt.data import build_eval_loader, build_source, normalize_clips, parse_data_spec
from salt.distributed import agreed, resolve_device, setup_distributed
from salt.folders import CACHE, WriterLock, claim
from salt.io import remove_stale_temps
from salt.video import discover

log = logging.getLogger(__name__)


BUSY = "wait for that build to end (or stop it), or build into another --name/--out"


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
    device: str = "auto",
    progress: bool = True,
) -> LatentCache:
    """Run ``teacher`` over ``split`` of ``cfg.data`` once and write its latents into ``out``.

    ``cfg`` gives the data, the clip geometry and the teacher's spec (recorded in the
    metadata). Building another split into an existing cache adds it; a build that was
    stopped resumes with the shards it has not written. Under ``torchrun`` each process
    computes every world-th shard of the same plan (on its own GPU with ``device`` cuda or
    auto), so the cache is the one a single process would write, whatever the number of
    processes that built or resumed it.
    """
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_split(split)
    if teacher.cache is not None:
        raise CacheBuildError("a cache is built with a live teacher, not with cached:...")
    ranks = setup_distributed(device)
    on = resolve_device(device, ranks.local_rank)
    teacher = teacher.to(on)
    source = build_source(cfg.data, split, fixed_views=views)
    meta = cache_meta(cfg, teacher, dtype, store_clips)
    lock = WriterLock(out, CACHE, "salt cache build", hint=BUSY)
    try:
        plan = agreed(
            ranks,
            lambda: _prepare(
                out, lock, meta, split_info(cfg, views), split, len(source), shard_size
            ),
        )
        if plan.done:
            log.info("cache %s split %s is already complete (%d clips)", out, split, plan.total)
            return LatentCache(out)
        job = ShardJob(teacher, source, cfg, dtype, batch_size, workers, store_clips, str(on))
        _write_shards(out, split, plan, job, ranks, meta, progress)
    finally:
        lock.release()
    built = LatentCache(out)
    if ranks.main:
        for message in built.skipped:
            log.warning("not cached (unreadable): %s", message)
    return built


def _write_shards(
    out: Path, split: str, plan: SplitPlan, job: ShardJob, ranks, meta: dict, progress: bool
) -> None:
    """Compute and write this process's shards of ``plan``; rank 0 then marks the split
    complete in the index (once every process has written its own)."""
    mine = [k for k in plan.todo if k % ranks.world == ranks.rank]
    if ranks.main:
        _log_start(out, split, plan, meta, job.cfg, job.store_clips, ranks.world)
    bar = None
    if progress and ranks.main:
        from tqdm.auto import tqdm

        rows = sum(len(plan.rows(k)) for k in mine)
        bar = tqdm(total=rows, desc="cache", unit="clip", dynamic_ncols=True)
    for k in mine:
        shard = compute_shard(job, plan.rows(k), bar)
        write_shard(out, plan.first + k, split, *attrs.astuple(shard, recurse=False))
    if bar is not None:
        bar.close()
    if ranks.enabled:
        dist.barrier()  # every shard of the plan is written
    if ranks.main:
        index = CacheIndex.read(out)
        written = {shard_number(s.file) for s in read_shard_records(out)}
        index.splits[split]["complete"] = all(plan.first + k in written for k in plan.todo)
        index.write(out)
    if ranks.enabled:
        dist.barrier()  # the index says so before any process reads it


@attrs.frozen
class SplitPlan:
    """A split's shards: shard k holds clips ``[k * size, (k + 1) * size)`` of the source and
    is file number ``first + k``; ``todo`` are those without a record yet."""

    first: int
    size: int
    total: int
    todo: tuple[int, ...]

    @property
    def done(self) -> bool:
        return not self.todo

    @property
    def count(self) -> int:
        return math.ceil(self.total / self.size)

    def rows(self, k: int) -> range:
        return range(k * self.size, min((k + 1) * self.size, self.total))


def _prepare(
    out: Path, lock: WriterLock, meta: dict, info: dict, split: str, total: int, shard_size: int
) -> SplitPlan:
    """Take the cache folder (a new or empty one, or a cache) for this build alone, check
    the cache was built with these settings, drop what an interrupted write left, record
    the split's plan in the index and return it."""
    claim(out, CACHE, "the cache folder", hint="build into another --name/--out")
    lock.acquire()
    index = _open_for_build(out, meta)
    for tmp in remove_stale_temps(out):
        log.info("removed %s, left by an interrupted write", tmp)
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
    first, size = _layout(index, split, shards, shard_size)
    if size != shard_size and previous is not None:
        log.info("continuing split %s with its recorded shard size %d", split, size)
    written = {shard_number(s.file) for s in shards if s.split == split}
    count = math.ceil(total / size)
    todo = tuple(k for k in range(count) if first + k not in written)
    index.splits[split] = {
        **info,
        "total": total,
        "complete": not todo,
        "first_shard": first,
        "shard_size": size,
    }
    index.write(out)
    return SplitPlan(first, size, total, todo)


def _layout(index: CacheIndex, split: str, shards: list, shard_size: int) -> tuple[int, int]:
    """The split's first shard number and shard size: as recorded, as an older build left
    them (its shards are contiguous), or - for a new split - after every number another
    split holds or has planned."""
    entry = index.splits.get(split) or {}
    own = sorted((shard_number(s.file), s) for s in shards if s.split == split)
    if isinstance(entry.get("first_shard"), int) and isinstance(entry.get("shard_size"), int):
        return entry["first_shard"], entry["shard_size"]
    if own:
        return own[0][0], own[0][1].rows + len(own[0][1].skipped)
    taken = [shard_number(s.file) + 1 for s in shards]
    for name, other in index.splits.items():
        if name != split and isinstance(other.get("first_shard"), int):
            planned = math.ceil(other.get("total", 0) / max(other.get("shard_size", 1), 1))
            taken.append(other["first_shard"] + planned)
    return max(taken, default=0), shard_size


def _log_start(out, split, plan, meta, cfg, store_clips, world) -> None:
    left = sum(len(plan.rows(k)) for k in plan.todo)
    if left < plan.total:
        log.info(
            "resuming cache build in %s: split %s, %d of %d clips left",
            out,
            split,
            left,
            plan.total,
        )
    bytes_per = math.prod(meta["latent_shape"]) * DTYPES[meta["dtype"]].itemsize
    clip_bytes = cfg.data.num_frames * 3 * cfg.data.image_size**2 if store_clips else 0
    log.info(
        "building cache %s (%s): %d clips in %d shards on %d process(es), %.1f MB of latents%s",
        out,
        split,
        plan.total,
        plan.count,
        world,
        plan.total * bytes_per / 1e6,
        f" + {plan.total * clip_bytes / 1e6:.1f} MB of stored clips" if store_clips else "",
    )


def _complete_shards(out: Path):
    """The shards with a record; tensor files without one (a build killed mid-write) go."""
    shards = read_shard_records(out)
    recorded = {s.file for s in shards}
    for path in out.glob("shard_[0-9]*[0-9].safetensors"):
        if path.name not in recorded:
            path.unlink()
    return shards


@attrs.frozen
class Shard:
    """One computed shard, ready for :func:`write_shard`."""

    tensors: dict[str, torch.Tensor]
    samples: list[dict]
    skipped: list[str]
    quant_error: list[float] | None  # int8 caches: [sum squared error, sum squares]


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


def compute_shard(job: ShardJob, indices: range, bar=None) -> Shard:
    """The teacher's latents (and clips) for ``indices`` of the source, in the stored dtype,
    each row's view and label, and why each unreadable clip was skipped."""
    d = job.cfg.data
    loader = build_eval_loader(job.source, job.batch_size, indices, None, 0, job.workers)
    latents, clips, samples, skipped = [], [], [], []
    for batch in loader:
        skipped.extend(batch.errors)
        if batch.size:
            video = normalize_clips(batch.video.to(job.device), d.mean, d.std)
            with torch.no_grad():
                out = job.teacher(video).float().cpu()
            latents.append(out if job.dtype == "int8" else out.to(DTYPES[job.dtype]))
            if job.store_clips:
                clips.append(batch.video)
            for view, label in zip(batch.views, batch.labels.tolist(), strict=True):
                samples.append({"view": view, "label": label})
        if bar is not None:
            bar.update(batch.size + len(batch.errors))
    shape = [0, job.cfg.geometry.num_tokens, job.teacher.teacher_dim]
    stacked = torch.cat(latents) if latents else torch.empty(shape)
    tensors, error = encode_latents(stacked, job.dtype)
    if job.store_clips:
        tensors["clips"] = torch.cat(clips) if clips else torch.empty(0, dtype=torch.uint8)
    return Shard(tensors, samples, skipped, error)
