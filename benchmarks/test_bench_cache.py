"""Reading a teacher-latent cache: random access to single ``[1568, 768]`` fp16 samples.

Stage 2 reads one sample per ``__getitem__`` in each DataLoader worker, in a shuffled order,
so the figure of merit is random single-sample reads from a warm page cache on one thread.
Target from the issue: >= 1 GB/s.

The caches are written here the way ``salt.cache.build_cache`` writes them (safetensors
shards of ``latents [rows, N, D]``, optional ``clips``, and an ``index.json`` of views), with
random latents instead of a teacher's: computing 120 real 16x224 latents would take far
longer than reading them. ``verify_cache`` checks the result is a sound cache.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from salt import __version__
from salt.cache import (
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    CachedDataset,
    LatentCache,
    sha256,
    verify_cache,
)
from salt.config import build_config
from salt.runs import write_json
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


def write_cache(root: Path, samples: int, shard_rows: int, store_clips: bool) -> Path:
    """A cache in build_cache's format; row r of the whole cache has ``latents[r, 0, 0] == r``."""
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    shards, entries = [], []
    for shard_no, first in enumerate(range(0, samples, shard_rows)):
        rows = min(shard_rows, samples - first)
        latents = torch.randn(rows, *LATENT_SHAPE, generator=gen).to(torch.float16)
        latents[:, 0, 0] = torch.arange(first, first + rows, dtype=torch.float16)
        tensors = {"latents": latents}
        if store_clips:
            clips = torch.randint(0, 256, (rows, *CLIP_SHAPE), generator=gen, dtype=torch.uint8)
            clips[:, 0, 0, 0, 0] = torch.arange(first, first + rows) % 256
            tensors["clips"] = clips
        name = f"shard_{shard_no:05d}.safetensors"
        save_file(tensors, str(root / name), metadata={"format": "pt"})
        shards.append({"file": name, "rows": rows, "skipped": 0, "sha256": sha256(root / name)})
        for row in range(rows):
            i = first + row
            view = View(
                f"class_{i % 10}/video_{i:04d}.mp4",
                tuple(range(0, 64, 4)),
                (0, 48, 224, 224),
                (224, 320),
            )
            entries.append({"view": view.as_dict(), "label": i % 10, "shard": shard_no, "row": row})
    meta = {
        "teacher": "random:bench",
        "teacher_dim": LATENT_SHAPE[1],
        "latent_shape": list(LATENT_SHAPE),
        "grid": list(GRID),
        "dtype": "float16",
        "num_frames": CLIP_SHAPE[0],
        "frame_step": 4,
        "fps": 0.0,
        "image_size": CLIP_SHAPE[-1],
        "patch_size": 16,
        "tubelet_size": 2,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "data_spec": str(root),
        "data_root": str(root),  # CachedDataset wants it to exist; stored clips need no videos
        "data_kind": "folder",
        "views_per_video": 1,
        "store_clips": store_clips,
        "salt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    index = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "meta": meta,
        "shards": shards,
        "samples": entries,
        "skipped": [],
    }
    write_json(root / INDEX, index)
    # A sound cache, and every byte read once: the page cache is warm for the benchmarks.
    assert verify_cache(root) == []
    return root


@pytest.fixture(scope="module")
def latent_cache_dir(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("latents"), SAMPLES, SHARD_ROWS, store_clips=False)


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
    """``LatentCache.latents(i)`` for shuffled ``i``, copied out of the memory map.

    ``latents()`` returns a zero-copy view of the memory-mapped shard; the bytes are only
    read when something uses them, so each call also copies the sample (what the
    DataLoader's collate does when it stacks a batch).
    """
    cache = LatentCache(latent_cache_dir)
    assert len(cache) == SAMPLES and cache.latent_shape == LATENT_SHAPE
    order = shuffled(SAMPLES)
    for i in range(SAMPLES):  # open every shard's memory map before timing
        cache.latents(i)

    def read() -> tuple[int, torch.Tensor]:
        i = next(order)
        return i, cache.latents(i).clone()

    i, latents = benchmark(read)

    assert latents.shape == LATENT_SHAPE and latents.dtype == torch.float16
    assert latents[0, 0].item() == i
    assert torch.isfinite(latents).all()
    benchmark.extra_info.update({"samples": SAMPLES, "shards": len(cache.shards)})
    report(benchmark, summary, seconds_per_call, LATENT_BYTES, "latents [1568, 768] fp16")


@pytest.mark.benchmark(group="cache_read", min_rounds=30, max_time=2.0)
def test_cached_dataset_stored_clips(benchmark, summary, seconds_per_call, clip_cache_dir):
    """``CachedDataset[i]`` on a cache with stored clips: latents plus the clip, nothing
    decoded; both copied out of the memory map, as above."""
    cfg = build_config(
        overrides={"data.num_frames": CLIP_SHAPE[0], "data.image_size": CLIP_SHAPE[-1]}
    )
    dataset = CachedDataset(LatentCache(clip_cache_dir), cfg)
    order = shuffled(CLIP_SAMPLES)
    for i in range(CLIP_SAMPLES):
        dataset[i]

    def read() -> tuple[int, dict]:
        i = next(order)
        sample = dataset[i]
        return i, {k: v.clone() if torch.is_tensor(v) else v for k, v in sample.items()}

    i, sample = benchmark(read)

    assert set(sample) == {"video", "latents", "label"}
    assert sample["video"].shape == CLIP_SHAPE and sample["video"].dtype == torch.uint8
    assert sample["latents"].shape == LATENT_SHAPE and sample["label"] == i % 10
    assert sample["latents"][0, 0].item() == i and sample["video"][0, 0, 0, 0].item() == i % 256
    benchmark.extra_info["samples"] = CLIP_SAMPLES
    report(
        benchmark,
        summary,
        seconds_per_call,
        LATENT_BYTES + CLIP_BYTES,
        "CachedDataset latents + stored clip",
    )
