"""Datasets, the resumable sampler, the loader and clip normalization (salt/data.py)."""

from __future__ import annotations

from itertools import islice

import attrs
import numpy as np
import pytest
import torch

from salt.config import build_config
from salt.data import (
    EpochBatchSampler,
    KeyedDataset,
    MotionClips,
    SyntheticClips,
    build_loader,
    build_source,
    keep_rendered,
    normalize_clips,
    shared_clips,
    steps_per_epoch,
)
from salt.masking import sample_keys
from salt.registry import maskers


def take(sampler: EpochBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    return list(islice(iter(sampler), n))


# --- EpochBatchSampler -----------------------------------------------------------------------


def test_each_epoch_visits_every_index_at_most_once():
    sampler = EpochBatchSampler(size=103, batch_size=8, seed=0)
    assert len(sampler) == sampler.batches_per_epoch == 12
    batches = take(sampler, 36)
    assert all(len(b) == 8 for b in batches)
    orders = []
    for epoch in range(3):
        keys = [k for b in batches[12 * epoch : 12 * (epoch + 1)] for k in b]
        assert {e for e, _ in keys} == {epoch}
        indices = [i for _, i in keys]
        assert len(set(indices)) == 96 and set(indices) <= set(range(103))
        orders.append(indices)
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch


def test_ranks_get_disjoint_shards_of_equal_length():
    world = 3
    samplers = [EpochBatchSampler(100, 4, seed=1, rank=r, world=world) for r in range(world)]
    assert {len(s) for s in samplers} == {8}  # 33 clips per rank -> 8 batches of 4
    for epoch in range(2):
        shards = []
        for s in samplers:
            batches = take(s, 16)[8 * epoch : 8 * (epoch + 1)]
            keys = [k for b in batches for k in b]
            assert {e for e, _ in keys} == {epoch}
            shards.append({i for _, i in keys})
        assert all(len(shard) == 32 for shard in shards)
        assert not (shards[0] & shards[1] or shards[0] & shards[2] or shards[1] & shards[2])


@pytest.mark.parametrize("start", [0, 1, 5, 11, 12, 13, 30])
def test_resuming_at_a_batch_continues_the_same_stream(start):
    full = take(EpochBatchSampler(103, 8, seed=4), start + 20)
    resumed = take(EpochBatchSampler(103, 8, seed=4, start=start), 20)
    assert resumed == full[start:]


def test_resuming_works_per_rank():
    full = take(EpochBatchSampler(64, 4, seed=2, rank=1, world=2), 25)
    resumed = take(EpochBatchSampler(64, 4, seed=2, rank=1, world=2, start=9), 16)
    assert resumed == full[9:]


def test_the_stream_depends_on_the_seed():
    assert take(EpochBatchSampler(50, 5, seed=0), 3) == take(EpochBatchSampler(50, 5, seed=0), 3)
    assert take(EpochBatchSampler(50, 5, seed=0), 3) != take(EpochBatchSampler(50, 5, seed=1), 3)


@pytest.mark.parametrize(
    "size,batch,world,match",
    [
        (5, 8, 1, "the dataset has 5 clips, fewer than one batch of 8 per process on 1"),
        (20, 8, 3, "fewer than one batch of 8 per process on 3 process"),
    ],
)
def test_too_small_a_dataset_is_rejected(size, batch, world, match):
    with pytest.raises(ValueError, match=match):
        EpochBatchSampler(size, batch, seed=0, world=world)


# --- datasets --------------------------------------------------------------------------------


def test_build_source_makes_synthetic_clips_at_the_config_geometry():
    cfg = build_config(
        "demo",
        overrides={
            "data.spec": "synthetic:12",
            "data.num_frames": 4,
            "data.image_size": 32,
            "data.frame_step": 3,
        },
    )
    train = build_source(cfg.data)
    assert isinstance(train, SyntheticClips) and len(train) == 12
    g = train.generator
    assert (g.num_frames, g.image_size, g.frame_step) == (4, 32, 3)
    assert train[0].video.shape == (4, 3, 32, 32)
    assert train[0].view["source"] == "synthetic/0" and train[0].view["frames"] == [0, 3, 6, 9]
    assert len(build_source(build_config().data)) == 2048
    # The held-out split draws different clips.
    val = build_source(cfg.data, "val")
    assert not torch.equal(train[0].video, val[0].video)
    assert torch.equal(train[0].video, build_source(cfg.data, "train")[0].video)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("synthetic:many", "the part after 'synthetic:' is a clip count"),
        ("kinetics", "data spec 'kinetics' is neither 'synthetic\\[:N\\]' nor an existing folder"),
    ],
)
def test_bad_data_specs_are_explained(spec, match):
    cfg = build_config(overrides={"data.spec": spec})
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        build_source(cfg.data)


def test_keyed_dataset_returns_the_sample_with_its_key():
    data = build_config(overrides={"data.num_frames": 2, "data.image_size": 16}).data
    base = SyntheticClips(data, "train", 5)
    keyed = KeyedDataset(base)
    assert len(keyed) == 5
    item = keyed[(3, 4)]
    assert item.epoch == 3 and item.index == 4
    assert torch.equal(item.video, base[4].video)
    assert item.label == base[4].label == base.generator.params(4)["direction"]


@pytest.mark.parametrize("cls", [SyntheticClips, MotionClips])
def test_built_in_clips_are_rendered_once_up_to_the_memory_budget(cls, monkeypatch):
    # 2 frames x 3 x 16 x 16 = 1536 bytes a clip: room for 3 of them.
    overrides = {"data.num_frames": 2, "data.image_size": 16, "data.keep_clips_gb": 4608e-9}
    data = build_config(overrides=overrides).data
    kept = cls(data, "train", 5)
    fresh = cls(attrs.evolve(data, keep_clips_gb=0.0), "train", 5)
    renders = []
    render = kept.generator.render
    monkeypatch.setattr(kept.generator, "render", lambda i, *a: renders.append(i) or render(i, *a))
    first = [kept[i].video for i in (0, 1, 2, 3, 4)]
    again = [kept[i].video for i in (4, 0, 1, 2, 3)]
    assert renders == [0, 1, 2, 3, 4, 4, 3]  # 0-2 kept; 3 and 4 rendered every time
    assert sorted(kept.kept) == [0, 1, 2]
    for i, video in enumerate(first):
        assert torch.equal(video, fresh[i].video)  # kept or not, the same pixels
    assert torch.equal(again[1], first[0]) and torch.equal(again[0], first[4])
    assert fresh.capacity == 0 and not fresh.kept and len(fresh) == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_datasets_of_one_generator_share_their_clips_only_inside_shared_clips(workers):
    data = build_config(overrides={"data.num_frames": 2, "data.image_size": 16}).data
    with shared_clips():
        first = MotionClips(data, "train", 40)
        keep_rendered(first, range(20), workers)
        again = MotionClips(data, "train", 8)  # a shorter dataset draws the same clips
        other = MotionClips(data, "val", 40)  # another split: other clips
        coarser = MotionClips(attrs.evolve(data, image_size=32), "train", 40)
    after = MotionClips(data, "train", 40)
    assert sorted(first.kept) == list(range(20)) and again.kept is first.kept
    assert not other.kept and not coarser.kept and not after.kept
    for i in (0, 7, 19):
        assert torch.equal(again[i].video, after[i].video)  # kept, or rendered again
    assert not torch.equal(other[0].video, after[0].video)


def test_clips_rendered_up_front_stop_at_the_memory_budget():
    # 2 frames x 3 x 16 x 16 = 1536 bytes a clip: room for 3 of them.
    overrides = {"data.num_frames": 2, "data.image_size": 16, "data.keep_clips_gb": 4608e-9}
    clips = SyntheticClips(build_config(overrides=overrides).data, "train", 10)
    keep_rendered(clips, [5, 1], workers=0)
    keep_rendered(clips, range(10), workers=0)
    assert sorted(clips.kept) == [0, 1, 5]  # what was kept stays; the budget's rest filled


def test_loader_yields_masked_batches_in_sampler_order():
    cfg = build_config(
        "demo",
        overrides={
            "data.spec": "synthetic:10",
            "data.num_frames": 4,
            "data.image_size": 32,
            "data.num_workers": 0,
            "student.patch_size": 8,
            "train.batch_size": 3,
            "train.seed": 7,
        },
    )
    dataset = build_source(cfg.data)
    masker = maskers.create("tube", grid=cfg.grid)
    loader = build_loader(dataset, masker, cfg, start_batch=4)
    expected = take(EpochBatchSampler(10, 3, seed=7, start=4), 3)
    for batch, keys in zip(loader, expected, strict=False):
        epochs, indices = zip(*keys, strict=True)
        assert batch.epochs.tolist() == list(epochs)
        assert batch.indices.tolist() == list(indices)
        assert batch.video.shape == (3, 4, 3, 32, 32) and batch.video.dtype == torch.uint8
        assert torch.equal(batch.video[1], dataset[indices[1]].video)
        assert batch.targets is None and batch.errors == [] and batch.size == 3
        (group,) = batch.masks
        want = masker(sample_keys(7, np.array(epochs), np.array(indices)))[0]
        assert torch.equal(group.context, want.context)
        assert torch.equal(group.target, want.target)


def test_steps_per_epoch_accounts_for_world_and_accumulation():
    cfg = build_config(overrides={"train.batch_size": 8, "train.accum_steps": 2})
    assert steps_per_epoch(100, cfg) == 6  # 12 batches / 2
    assert steps_per_epoch(100, cfg, world=2) == 3  # 50 clips per rank: 6 batches / 2
    assert steps_per_epoch(10, cfg) == 1  # never zero


# --- normalization ---------------------------------------------------------------------------


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_normalize_clips_moves_channels_first_and_standardizes():
    video = torch.randint(
        0, 256, (2, 4, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    out = normalize_clips(video, MEAN, STD)
    assert out.shape == (2, 3, 4, 5, 6) and out.dtype == torch.float32
    assert out.is_contiguous()
    for c in range(3):
        expected = (video[:, :, c].float() / 255 - MEAN[c]) / STD[c]  # [B, T, H, W]
        torch.testing.assert_close(out[:, c], expected)


def test_normalize_clips_extremes():
    black = normalize_clips(torch.zeros(1, 1, 3, 1, 1, dtype=torch.uint8), MEAN, STD)
    white = normalize_clips(torch.full((1, 1, 3, 1, 1), 255, dtype=torch.uint8), MEAN, STD)
    for c in range(3):
        assert black[0, c, 0, 0, 0].item() == pytest.approx(-MEAN[c] / STD[c], rel=1e-6)
        assert white[0, c, 0, 0, 0].item() == pytest.approx((1 - MEAN[c]) / STD[c], rel=1e-6)


def test_normalize_clips_takes_float_input_as_already_scaled():
    video = torch.rand(1, 2, 3, 4, 4)
    before = video.clone()
    out = normalize_clips(video, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.testing.assert_close(out, (video * 2 - 1).permute(0, 2, 1, 3, 4))
    assert torch.equal(video, before)  # the caller's tensor is untouched
    half = normalize_clips(video, MEAN, STD, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
