"""Mask generation for one batch of 64 clips at the 16x224 token grid (8x14x14), on one core.

Target from the issue: the multiblock masker (both groups) under 6 ms per batch. Every
round masks a different batch of sample indices, as a DataLoader worker would.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from salt.batch import MaskCollator, Sample
from salt.masking import MaskGroup, sample_keys
from salt.registry import maskers

GRID = (8, 14, 14)
NUM_TOKENS = math.prod(GRID)  # 1568
BATCH = 64
SEED = 0
NUM_BATCHES = 64  # distinct index batches cycled through by the rounds
SMALL_VIDEO = (3, 16, 32, 32)  # [C, T, H, W] uint8: keeps the collate cost about the masks


@pytest.fixture(autouse=True)
def _one_thread(pin_threads):
    pin_threads(1)  # masks are made in DataLoader workers, one core each


def key_batches() -> list[np.ndarray]:
    """``NUM_BATCHES`` key arrays ``[64]`` uint64 over consecutive indices, epochs 0 and 1."""
    return [
        sample_keys(SEED, b % 2, np.arange(b * BATCH, (b + 1) * BATCH)) for b in range(NUM_BATCHES)
    ]


def check_groups(groups: list[MaskGroup], names: tuple[str, ...]) -> None:
    """Every group splits each row's 1568 tokens into sorted, disjoint context and target."""
    assert len(groups) == len(names)
    for group in groups:
        assert group.context.dtype == torch.int64 and group.target.dtype == torch.int64
        assert group.context.shape[0] == group.target.shape[0] == BATCH
        assert group.context.shape[1] >= 1 and group.target.shape[1] >= 1
        assert group.context.shape[1] + group.target.shape[1] == NUM_TOKENS
        both = torch.cat([group.context, group.target], dim=1).sort(dim=1).values
        assert torch.equal(both, torch.arange(NUM_TOKENS).expand(BATCH, -1))
        assert bool((group.context.diff(dim=1) > 0).all())
        assert bool((group.target.diff(dim=1) > 0).all())


def bench_masker(benchmark, summary, seconds_per_call, spec: str) -> None:
    masker = maskers.create(spec, grid=GRID)
    batches = key_batches()
    rounds = itertools.cycle(batches)
    check_groups(masker(batches[0]), masker.group_names)

    groups = benchmark(lambda: masker(next(rounds)))

    check_groups(groups, masker.group_names)
    # Different indices must give different masks, or the rounds would not vary the work.
    assert not torch.equal(masker(batches[0])[0].context, masker(batches[1])[0].context)
    sizes = {
        name: int(g.context.shape[1]) for name, g in zip(masker.group_names, groups, strict=True)
    }
    benchmark.extra_info.update({"grid": GRID, "batch": BATCH, "context_tokens": sizes})
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["ms_per_batch"] = 1e3 * times[0]
        summary(f"{1e3 * times[0]:.2f} ms per batch of {BATCH} (context tokens {sizes})")


@pytest.mark.benchmark(group="masking", min_rounds=30, max_time=1.0)
def test_multiblock_masker(benchmark, summary, seconds_per_call):
    """Registered 'multiblock' with defaults: two groups (8 x 0.15 and 2 x 0.7 blocks)."""
    bench_masker(benchmark, summary, seconds_per_call, "multiblock")


@pytest.mark.benchmark(group="masking", min_rounds=30, max_time=1.0)
def test_tube_masker(benchmark, summary, seconds_per_call):
    """Registered 'tube' (VideoMAE, ratio 0.9), for reference."""
    bench_masker(benchmark, summary, seconds_per_call, "tube")


@pytest.mark.benchmark(group="masking", min_rounds=30, max_time=1.0)
def test_random_masker(benchmark, summary, seconds_per_call):
    """Registered 'random' (ratio 0.9 over the whole grid), for reference."""
    bench_masker(benchmark, summary, seconds_per_call, "random")


@pytest.mark.benchmark(group="masking", min_rounds=30, max_time=1.0)
def test_mask_collator(benchmark, summary, seconds_per_call):
    """The DataLoader ``collate_fn``: stack 64 small uint8 clips + multiblock masks."""
    masker = maskers.create("multiblock", grid=GRID)
    collate = MaskCollator(masker, SEED)
    gen = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (BATCH, *SMALL_VIDEO), dtype=torch.uint8, generator=gen)
    sample_lists = [
        [Sample(videos[i], label=i % 8, index=b * BATCH + i, epoch=b % 2) for i in range(BATCH)]
        for b in range(NUM_BATCHES)
    ]
    rounds = itertools.cycle(sample_lists)

    batch = benchmark(lambda: collate(next(rounds)))

    assert batch.video.shape == (BATCH, *SMALL_VIDEO)
    assert batch.video.dtype == torch.uint8
    check_groups(batch.masks, masker.group_names)
    # The collator's masks are exactly the masker's for the batch's (seed, epoch, index) keys.
    first = collate(sample_lists[3])
    direct = masker(sample_keys(SEED, 1, np.arange(3 * BATCH, 4 * BATCH)))
    for got, want in zip(first.masks, direct, strict=True):
        assert torch.equal(got.context, want.context) and torch.equal(got.target, want.target)
    benchmark.extra_info.update({"grid": GRID, "batch": BATCH, "video": SMALL_VIDEO})
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["ms_per_batch"] = 1e3 * times[0]
        summary(f"{1e3 * times[0]:.2f} ms per batch of {BATCH} small clips {SMALL_VIDEO} + masks")
