"""Reading a teacher-latent cache: random access to single ``[1568, 768]`` fp16 samples.

Stage 2 reads one sample per ``__getitem__`` in each DataLoader worker, in a shuffled order,
so the figure of merit is random single-sample reads from a warm page cache on one thread.
Target from the issue: >= 1 GB/s.

The caches are written with the store's own writer (``salt.cache.shards.write_shard`` and
``CacheIndex``), with random latents instead of a teacher's: computing 120 real 16x224
latents would take far longer than reading them. ``verify_cache`` checks the result is a
sound cache.

Writing: the cost of writing one shard must not grow with the cache
(``test_shard_write_cost``: a shard written into a cache of 10 and of 1,000 shards).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from salt import __version__
from salt.cache import (
    LatentCache,
    encode_latents,
    new_index,
    quantization_error,
    verify_cache,
    write_shard,
)
from salt.config import build_config
from salt.data import CachedClips
from salt.quant import QuantizedLatents
from salt.video import View

LATENT_SHAPE = (1568, 768)  # 16 frames x 224 px -> grid 8x14x14, a ViT-B width teacher
GRID = (8, 14, 14)
CLIP_SHAPE = (16, 3, 224, 224)  # uint8 [T, C, H, W], as build_cache(store_clips=True) stores
SAMPLES = 120  # 120 x 2.41 MB = 289 MB of latents
SHARD_ROWS = 40
CLIP_SAMPLES = 32  # the stored-clips cache: 32 x (2.41 + 2.41) MB = 154 MB
LATENT_BYTES = math.prod(LATENT_SHAPE) * 2
CLIP_BYTES = math.prod(CLIP_SHAPE)


@pytest.fixture(autouse=True)
def _one_thread(pin_threads):
    pin_threads(1)  # one DataLoader worker reads on one core


def view_of(i: int) -> dict:
    """A realistic view record: an SSv2-like path, 16 frames, a crop of a 224x320 frame."""
    return View(
        f"class_{i % 10}/video_{i:06d}.mp4", tuple(range(0, 64, 4)), (0, 48, 224, 224), (224, 320)
    ).as_dict()


def write_cache(
    root: Path, samples: int, shard_rows: int, store_clips: bool, dtype: str = "float16"
) -> Path:
    """A cache in build_cache's format; row r of the whole cache has ``latents[r, 0, 0] == r``
    (to int8's precision in an int8 cache)."""
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    errors = []
    for shard_no, first in enumerate(range(0, samples, shard_rows)):
        rows = min(shard_rows, samples - first)
        latents = torch.randn(rows, *LATENT_SHAPE, generator=gen).to(torch.float16)
        latents[:, 0, 0] = torch.arange(first, first + rows, dtype=torch.float16)
        tensors, error = encode_latents(latents, dtype)
        errors.append(error)
        if store_clips:
            clips = torch.randint(0, 256, (rows, *CLIP_SHAPE), generator=gen, dtype=torch.uint8)
            clips[:, 0, 0, 0, 0] = torch.arange(first, first + rows) % 256
            tensors["clips"] = clips
        entries = [{"view": view_of(i), "label": i % 10} for i in range(first, first + rows)]
        write_shard(root, shard_no, "train", tensors, entries, [], error)
    index = new_index(
        {
            "teacher": "random:bench",
            "teacher_dim": LATENT_SHAPE[1],
            "latent_shape": list(LATENT_SHAPE),
            "grid": list(GRID),
            "dtype": dtype,
            "num_frames": CLIP_SHAPE[0],
            "frame_step": 4,
            "fps": 0.0,
            "image_size": CLIP_SHAPE[-1],
            "patch_size": 16,
            "tubelet_size": 2,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "store_clips": store_clips,
            "salt_version": __version__,
        }
    )
    index.splits["train"] = {
        "data_spec": str(root),
        "data_root": str(root),  # CachedClips wants it to exist; stored clips need no videos
        "data_kind": "folder",
        "views_per_video": 1,
        "total": samples,
        "complete": True,
    }
    index.write(root)
    # A sound cache, and every byte read once: the page cache is warm for the benchmarks.
    assert verify_cache(root) == []
    return root


@pytest.fixture(scope="module")
def latent_cache_dir(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("latents"), SAMPLES, SHARD_ROWS, store_clips=False)


@pytest.fixture(scope="module")
def int8_cache_dir(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("int8"), SAMPLES, SHARD_ROWS, False, "int8")


@pytest.fixture(scope="module")
def clip_cache_dir(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("clips"), CLIP_SAMPLES, 16, store_clips=True)


def shuffled(n: int, seed: int = 0):
    """Indices 0..n-1 in a fixed random order, repeated forever."""
    return itertools.cycle(np.random.default_rng(seed).permutation(n).tolist())


def report(benchmark, summary, seconds_per_call, bytes_per_call: int, what: str) -> None:
    benchmark.extra_info.update({"bytes_per_sample": bytes_per_call, "threads": 1})
    times = seconds_per_call(benchmark)
    if times is None:
        summary(f"{what}: {bytes_per_call / 1e6:.2f} MB per sample (timing disabled)")
        return
    mean, best = times
    median = benchmark.stats.stats.median  # reads are short: the mean carries the odd stall
    gbps, samples_per_s = bytes_per_call / mean / 1e9, 1 / mean
    benchmark.extra_info.update(
        {
            "gb_per_s": gbps,
            "gb_per_s_median": bytes_per_call / median / 1e9,
            "gb_per_s_best": bytes_per_call / best / 1e9,
            "samples_per_s": samples_per_s,
        }
    )
    summary(
        f"{what}: {gbps:.2f} GB/s mean, {bytes_per_call / median / 1e9:.2f} GB/s median "
        f"({samples_per_s:.0f} samples/s, {1e3 * mean:.2f} ms per {bytes_per_call / 1e6:.2f} MB "
        f"sample; target >= 1 GB/s)"
    )


@pytest.mark.benchmark(group="cache_read", min_rounds=50, max_time=2.0)
def test_latent_cache_random_read(benchmark, summary, seconds_per_call, latent_cache_dir):
    """``CacheSplit.latents(i)`` for shuffled ``i``, copied out of the memory map.

    ``latents()`` returns a zero-copy view of the memory-mapped shard; the bytes are only
    read when something uses them, so each call also copies the sample (what the
    DataLoader's collate does when it stacks a batch).
    """
    cache = LatentCache(latent_cache_dir)
    assert len(cache) == SAMPLES and cache.latent_shape == LATENT_SHAPE
    split = cache.split("train")
    order = shuffled(SAMPLES)
    for i in range(SAMPLES):  # open every shard's memory map before timing
        split.latents(i)

    def read() -> tuple[int, torch.Tensor]:
        i = next(order)
        return i, split.latents(i).clone()

    i, latents = benchmark(read)

    assert latents.shape == LATENT_SHAPE and latents.dtype == torch.float16
    assert latents[0, 0].item() == i
    assert torch.isfinite(latents).all()
    benchmark.extra_info.update({"samples": SAMPLES, "shards": len(cache.shards)})
    report(benchmark, summary, seconds_per_call, LATENT_BYTES, "latents [1568, 768] fp16")


@pytest.mark.benchmark(group="cache_read", min_rounds=50, max_time=2.0)
def test_int8_cache_random_read(benchmark, summary, seconds_per_call, int8_cache_dir):
    """The same reads from an int8 cache: codes and both scales copied out (what a worker
    hands the loop; the loop dequantizes on its device). Bytes are the stored ones, ~half of
    fp16's; the same samples per second would be half the GB/s."""
    cache = LatentCache(int8_cache_dir)
    split = cache.split("train")
    order = shuffled(SAMPLES)
    for i in range(SAMPLES):
        split.latents(i)

    def read():
        i = next(order)
        q = split.latents(i)
        return i, QuantizedLatents(q.codes.clone(), q.token_scale.clone(), q.channel_scale.clone())

    i, q = benchmark(read)

    assert q.codes.shape == LATENT_SHAPE and q.codes.dtype == torch.int8
    assert abs(q.dequantize()[0, 0].item() - i) <= 0.01 * i + 0.05
    error = quantization_error(cache)
    stored = sum(t.numel() * t.element_size() for t in q.tensors().values())
    benchmark.extra_info.update({"relative_mse": error, "samples": SAMPLES})
    summary(f"int8 cache: relative MSE {error:.2e} against fp16 (Gaussian latents)")
    report(benchmark, summary, seconds_per_call, stored, "latents [1568, 768] int8 + scales")


@pytest.mark.benchmark(group="cache_read", min_rounds=30, max_time=2.0)
def test_cached_dataset_stored_clips(benchmark, summary, seconds_per_call, clip_cache_dir):
    """``CachedClips[i]`` on a cache with stored clips: latents plus the clip, nothing
    decoded; both copied out of the memory map, as above."""
    cfg = build_config(
        overrides={"data.num_frames": CLIP_SHAPE[0], "data.image_size": CLIP_SHAPE[-1]}
    )
    dataset = CachedClips(LatentCache(clip_cache_dir).split("train"), cfg.data)
    order = shuffled(CLIP_SAMPLES)
    for i in range(CLIP_SAMPLES):
        dataset[i]

    def read() -> tuple[int, tuple[torch.Tensor, torch.Tensor, int]]:
        i = next(order)
        sample = dataset[i]
        return i, (sample.video.clone(), sample.targets.clone(), sample.label)

    i, (video, latents, label) = benchmark(read)

    assert video.shape == CLIP_SHAPE and video.dtype == torch.uint8
    assert latents.shape == LATENT_SHAPE and label == i % 10
    assert latents[0, 0].item() == i and video[0, 0, 0, 0].item() == i % 256
    benchmark.extra_info["samples"] = CLIP_SAMPLES
    report(
        benchmark,
        summary,
        seconds_per_call,
        LATENT_BYTES + CLIP_BYTES,
        "CachedClips latents + stored clip",
    )


SHARD_SAMPLES = 256  # clips per shard: salt cache build's default --shard-size


def small_shard(number: int) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A shard of ``SHARD_SAMPLES`` rows with realistic view records and tiny latents: the
    tensors are not what is measured, the bookkeeping around them is."""
    first = number * SHARD_SAMPLES
    latents = torch.zeros(SHARD_SAMPLES, 4, 8, dtype=torch.float16)
    entries = [{"view": view_of(i), "label": i % 10} for i in range(first, first + SHARD_SAMPLES)]
    return {"latents": latents}, entries


@pytest.fixture(scope="module")
def grown_caches(tmp_path_factory) -> dict[int, Path]:
    """Caches already holding 10 and 1,000 shards (2,560 and 256,000 clips: SSv2 scale)."""
    caches = {}
    for count in (10, 1000):
        root = tmp_path_factory.mktemp(f"shards{count}")
        for number in range(count):
            tensors, entries = small_shard(number)
            write_shard(root, number, "train", tensors, entries, [])
        caches[count] = root
    return caches


@pytest.mark.parametrize("existing", [10, 1000])
@pytest.mark.benchmark(group="cache_write", min_rounds=20, max_time=2.0)
def test_shard_write_cost(benchmark, summary, grown_caches, existing):
    """One more shard written into a cache of ``existing`` shards: its tensors, then its
    record. The index is never rewritten, so the two sizes should time the same (the
    issue's bound: within 1.5x)."""
    root = grown_caches[existing]
    numbers = itertools.count(existing)
    tensors, entries = small_shard(existing)

    def write() -> int:
        number = next(numbers)
        write_shard(root, number, "train", tensors, entries, [])
        return number

    number = benchmark(write)
    assert (root / f"shard_{number:05d}.json").is_file()
    benchmark.extra_info.update({"existing_shards": existing, "rows": SHARD_SAMPLES})
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        summary(
            f"write one shard into a cache of {existing} shards: "
            f"{1e3 * stats.stats.median:.2f} ms median"
        )
