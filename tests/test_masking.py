"""Masks (salt/masking.py and the built-in maskers of plugins/salt_masks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salt.batch import MaskCollator, Sample
from salt.masking import (
    FixedLengths,
    MaskGroup,
    equalize,
    fix_lengths,
    gather_tokens,
    sample_keys,
    typical_lengths,
    uniforms,
)
from salt.registry import UnknownNameError, maskers
from salt_masks import MultiBlockMasker

GRID = (8, 14, 14)  # the recipe's grid: 16 frames / tubelet 2, 224px / patch 16
TOKENS = math.prod(GRID)
SLICE = GRID[1] * GRID[2]
BATCH = 64

# Every registered masker at its defaults, plus the non-default settings worth pinning.
CASES = [(name, {}) for name in maskers.names()] + [
    ("multiblock", {"temporal_scale": 0.5}),
    ("tube:0.75", {}),
    ("random:0.5", {}),
]
CASE_IDS = [f"{spec}{'-' + str(opts) if opts else ''}" for spec, opts in CASES]


def make(spec: str, grid=GRID, **options):
    return maskers.create(spec, grid=grid, **options)


def batch_keys(batch: int = 0, epoch: int = 0, seed: int = 0, size: int = BATCH) -> np.ndarray:
    return sample_keys(seed, epoch, np.arange(batch * size, (batch + 1) * size))


# --- invariants of every masker --------------------------------------------------------------


@pytest.mark.parametrize("spec,options", CASES, ids=CASE_IDS)
def test_groups_partition_the_grid(spec, options):
    masker = make(spec, **options)
    groups = masker(batch_keys())
    assert masker.grid == GRID
    assert len(groups) == len(masker.group_names) >= 1
    everything = torch.arange(TOKENS).expand(BATCH, -1)
    for group in groups:
        assert isinstance(group, MaskGroup)
        ctx, tgt = group.context, group.target
        assert ctx.dtype == torch.int64 and tgt.dtype == torch.int64
        # One length per set for the whole batch (the tensors are rectangular) ...
        assert ctx.ndim == 2 and tgt.ndim == 2
        assert ctx.shape[0] == tgt.shape[0] == BATCH
        # ... context never empty, and something is always left to predict.
        assert ctx.shape[1] >= 1 and tgt.shape[1] >= 1
        assert ctx.shape[1] + tgt.shape[1] == TOKENS
        assert (ctx.diff(dim=1) > 0).all(), "context indices must be sorted and unique"
        assert (tgt.diff(dim=1) > 0).all(), "target indices must be sorted and unique"
        # Disjoint and complementary: together they are every token exactly once.
        both = torch.cat([ctx, tgt], dim=1).sort(dim=1).values
        assert torch.equal(both, everything)


@pytest.mark.parametrize("spec,options", CASES, ids=CASE_IDS)
def test_masks_are_a_pure_function_of_seed_epoch_and_index(spec, options):
    masker = make(spec, **options)
    first = masker(batch_keys(epoch=3))
    again = make(spec, **options)(batch_keys(epoch=3))
    other_epoch = masker(batch_keys(epoch=4))
    other_seed = masker(batch_keys(epoch=3, seed=1))
    for a, b, c, d in zip(first, again, other_epoch, other_seed, strict=True):
        assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)
        if getattr(masker, "deterministic", False):
            continue  # a masker that ignores the keys (e.g. "future")
        assert a.context.shape != c.context.shape or not torch.equal(a.context, c.context)
        assert a.context.shape != d.context.shape or not torch.equal(a.context, d.context)


@pytest.mark.parametrize("spec,options", CASES, ids=CASE_IDS)
def test_permuting_the_batch_permutes_the_masks(spec, options):
    # Equalization uses the batch minimum, which a permutation does not change, so each
    # sample must keep exactly its own mask whatever its position in the batch.
    masker = make(spec, **options)
    keys = batch_keys()
    perm = np.random.default_rng(0).permutation(BATCH)
    base, permuted = masker(keys), masker(keys[perm])
    for a, b in zip(base, permuted, strict=True):
        assert torch.equal(a.context[perm], b.context)
        assert torch.equal(a.target[perm], b.target)


@pytest.mark.parametrize("spec", ["tube", "random", "tube:0.5", "random:0.75"])
def test_fixed_count_masks_do_not_depend_on_the_rest_of_the_batch(spec):
    masker = make(spec)
    keys = batch_keys()
    together = masker(keys)[0]
    other_company = masker(np.concatenate([keys[:5], batch_keys(batch=7)[:11]]))[0]
    for i in range(5):
        alone = masker(keys[i : i + 1])[0]
        assert torch.equal(alone.context[0], together.context[i])
        assert torch.equal(alone.target[0], together.target[i])
        assert torch.equal(other_company.context[i], together.context[i])


def test_samples_in_one_batch_get_different_masks():
    for spec, options in CASES:
        masker = make(spec, **options)
        if getattr(masker, "deterministic", False):
            continue
        for group in masker(batch_keys()):
            rows = {tuple(r) for r in group.context.tolist()}
            assert len(rows) > BATCH // 2, f"{spec} {options} repeats masks across samples"


# --- per-masker behaviour --------------------------------------------------------------------


@pytest.mark.parametrize("ratio,keep_per_slice", [(0.9, 20), (0.75, 49), (0.5, 98)])
def test_tube_hides_the_same_positions_in_every_frame(ratio, keep_per_slice):
    # 196 spatial positions; keep 196 - round(196 * ratio) of them in every time slice.
    group = make(f"tube:{ratio}")(batch_keys())[0]
    assert group.context.shape[1] == GRID[0] * keep_per_slice
    spatial = (group.context % SLICE).view(BATCH, GRID[0], keep_per_slice)
    times = (group.context // SLICE).view(BATCH, GRID[0], keep_per_slice)
    assert (spatial == spatial[:, :1]).all()
    assert (times == torch.arange(GRID[0])[None, :, None]).all()


def test_tube_default_ratio_is_0_9():
    assert make("tube").ratio == 0.9
    assert make("tube").group_names == ("tube",)
    assert make("tube")(batch_keys())[0].context.shape[1] == GRID[0] * 20


@pytest.mark.parametrize("ratio,keep", [(0.9, 157), (0.5, 784)])
def test_random_keeps_its_share_of_the_whole_grid(ratio, keep):
    group = make(f"random:{ratio}")(batch_keys())[0]
    assert group.context.shape[1] == keep == TOKENS - round(TOKENS * ratio)
    # Unlike tube, the kept spatial positions differ between time slices.
    per_slice = [
        set((group.context[0][group.context[0] // SLICE == t] % SLICE).tolist())
        for t in range(GRID[0])
    ]
    assert len({frozenset(s) for s in per_slice}) > 1


def test_multiblock_has_short_and_long_range_groups():
    masker = make("multiblock")
    assert masker.group_names == ("short", "long")
    short, long = masker(batch_keys())
    # Two blocks of 70% hide more than eight of 15%, so the long group sees less context.
    assert long.context.shape[1] < short.context.shape[1]


def test_full_time_multiblock_context_is_the_same_in_every_time_slice():
    for group in make("multiblock")(batch_keys()):
        k = group.context.shape[1]
        assert k % GRID[0] == 0
        spatial = (group.context % SLICE).view(BATCH, GRID[0], k // GRID[0])
        assert (spatial == spatial[:, :1]).all()


def test_multiblock_targets_are_rectangular_blocks():
    # With a single block per group and no equalization in play (batch of one), the target
    # is exactly one axis-aligned rectangle, repeated over time.
    masker = make("multiblock", groups=[{"name": "one", "num_blocks": 1, "spatial_scale": 0.3}])
    for i in range(20):
        tgt = masker(sample_keys(0, 0, [i]))[0].target[0]
        spatial = torch.zeros(SLICE, dtype=torch.bool)
        spatial[tgt[tgt < SLICE]] = True
        rows = spatial.view(GRID[1], GRID[2]).nonzero()
        (r0, c0), (r1, c1) = rows.min(0).values.tolist(), rows.max(0).values.tolist()
        assert len(rows) == (r1 - r0 + 1) * (c1 - c0 + 1)
        assert len(tgt) == GRID[0] * len(rows)


def test_multiblock_group_names_default_to_their_position():
    masker = make(
        "multiblock",
        groups=[
            {"num_blocks": 2, "spatial_scale": 0.2},
            {"name": "big", "num_blocks": 1, "spatial_scale": 0.5},
        ],
    )
    assert masker.group_names == ("group0", "big")
    assert len(masker(batch_keys())) == 2


HEAVY = [{"name": "heavy", "num_blocks": 4, "spatial_scale": 0.6}]


def test_multiblock_respects_min_context():
    # min_context counts spatial positions for blocks that span the whole clip. Without
    # it, this group leaves some samples of the batch as few as 5 of 196 positions.
    assert make("multiblock", groups=HEAVY)(batch_keys())[0].context.shape[1] < 30 * GRID[0]
    ctx = make("multiblock", groups=HEAVY, min_context=30)(batch_keys())[0].context
    assert ctx.shape[1] >= 30 * GRID[0]


def test_multiblock_last_redraw_counts():
    # Sample 7's first draw leaves 21 positions; its first redraw leaves 43 (>= 40).
    keys = sample_keys(0, 0, [7])
    assert (
        make("multiblock", groups=HEAVY, min_context=40, max_tries=2)(keys)[0].context.shape[1]
        >= 40 * GRID[0]
    )
    make("multiblock", groups=HEAVY, min_context=40, max_tries=1)(keys)


def test_multiblock_gives_up_with_a_clear_error():
    # At least one block always covers something, so a full-grid context is impossible.
    masker = make("multiblock", min_context=SLICE, max_tries=3)
    with pytest.raises(RuntimeError, match="fewer than 196 context positions after 3 redraws"):
        masker(batch_keys(size=4))


def test_partial_time_blocks_leave_some_slices_untouched():
    masker = make(
        "multiblock",
        groups=[{"name": "one", "num_blocks": 1, "spatial_scale": 0.3}],
        temporal_scale=0.25,
    )
    # Batch of one: no equalization, the target is one block at most two slices long
    # (a block starting before the first or ending after the last slice is clipped).
    for i in range(10):
        tgt = masker(sample_keys(0, 0, [i]))[0].target[0]
        slices = set((tgt // SLICE).tolist())
        assert len(slices) in (1, 2) and max(slices) - min(slices) == len(slices) - 1


def test_future_masker_sees_the_first_time_slices_and_predicts_every_later_one():
    grid = (4, 3, 3)  # 9 tokens per time slice
    (group,) = make("future:0.25", grid=grid)(batch_keys(size=5))
    assert group.context.shape == (5, 9) and group.target.shape == (5, 27)
    assert torch.equal(group.context[0], torch.arange(9))  # the whole first time slice
    assert torch.equal(group.target[3], torch.arange(9, 36))
    (half,) = make("future", grid=grid)(batch_keys(size=2))  # default: half the slices
    assert torch.equal(half.context[1], torch.arange(18))
    (option,) = make("future", grid=grid, context_fraction=0.75)(batch_keys(size=1))
    assert torch.equal(option.target[0], torch.arange(27, 36))


@pytest.mark.parametrize("spec", ["future:1.0", "future:0.1"])
def test_future_masker_refuses_a_fraction_that_leaves_one_side_empty(spec):
    with pytest.raises(ValueError, match="at least one slice on each side"):
        make(spec, grid=(4, 3, 3))
    with pytest.raises(ValueError, match=r"future:half needs a fraction .* e\.g\. future:0\.5"):
        make("future:half", grid=(4, 3, 3))


# --- no time slice is favoured ---------------------------------------------------------------


def slice_shares(spec: str, options: dict, batches: int = 12) -> list[tuple[np.ndarray, ...]]:
    """Per group: the share of context and of target tokens falling in each time slice."""
    masker = make(spec, **options)
    ctx = np.zeros((len(masker.group_names), GRID[0]))
    tgt = np.zeros_like(ctx)
    for b in range(batches):
        for g, group in enumerate(masker(batch_keys(batch=b))):
            ctx[g] += np.bincount((group.context // SLICE).flatten().numpy(), minlength=GRID[0])
            tgt[g] += np.bincount((group.target // SLICE).flatten().numpy(), minlength=GRID[0])
    return [(c / c.sum(), t / t.sum()) for c, t in zip(ctx, tgt, strict=True)]


UNIFORM_CASES = [
    ("multiblock", {}),
    pytest.param("multiblock", {"temporal_scale": 0.5}, id="multiblock-temporal_scale=0.5"),
    ("tube", {}),
    ("random", {}),
]


@pytest.mark.parametrize("spec,options", UNIFORM_CASES)
def test_every_time_slice_gets_the_same_share_of_context_and_target(spec, options):
    for ctx, tgt in slice_shares(spec, options):
        assert ctx.max() - ctx.min() < 0.02, f"context share per slice {np.round(ctx, 3)}"
        assert tgt.max() - tgt.min() < 0.02, f"target share per slice {np.round(tgt, 3)}"


# --- equalize --------------------------------------------------------------------------------


def test_equalize_moves_only_context_to_target_down_to_the_batch_minimum():
    rng = np.random.default_rng(0)
    context = rng.random((32, 50)) < rng.uniform(0.2, 0.8, size=(32, 1))
    context[3, :] = False
    context[3, :7] = True  # the smallest row
    scores = rng.random(context.shape)
    out = equalize(context, scores)
    counts = out.sum(axis=1)
    assert (counts == 7).all()
    assert not (out & ~context).any(), "a target token became context"
    assert (out[3] == context[3]).all()
    # The survivors are each row's highest-scoring context tokens.
    for row, kept in zip(np.where(context, scores, -1.0), out, strict=True):
        assert set(np.flatnonzero(kept)) == set(np.argsort(-row)[:7])


def test_equalize_leaves_equal_rows_alone():
    context = np.zeros((4, 10), dtype=bool)
    context[:, ::3] = True
    assert equalize(context, np.random.default_rng(1).random((4, 10))) is context


def test_equalize_drops_tokens_without_positional_bias():
    # One row keeps 5 of 20 context tokens; over many draws every position survives equally.
    rng = np.random.default_rng(0)
    context = np.zeros((2, 20), dtype=bool)
    context[0] = True
    context[1, :5] = True
    survived = np.zeros(20)
    draws = 2000
    for _ in range(draws):
        survived += equalize(context, rng.random((2, 20)))[0]
    share = survived / draws
    assert share.min() > 0.2 and share.max() < 0.3  # expected 0.25 each


def test_equalize_to_a_fixed_length_tops_short_rows_up_with_their_own_targets():
    rng = np.random.default_rng(2)
    context = rng.random((64, 40)) < 0.3
    scores = rng.random(context.shape)
    out = equalize(context, scores, k=12)
    assert (out.sum(axis=1) == 12).all()
    long, short = context.sum(axis=1) >= 12, context.sum(axis=1) < 12
    assert not (out[long] & ~context[long]).any()  # long rows only lose context
    assert not (context[short] & ~out[short]).any()  # short rows keep all theirs, gain some
    with pytest.raises(ValueError, match="leaves no context or target"):
        equalize(context, scores, k=40)


# --- fixed lengths (compiled steps) ---------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"temporal_scale": 0.5}], ids=["full-time", "partial"])
def test_fixed_lengths_give_every_batch_the_same_shapes(options):
    grid, batch = (4, 8, 8), 8
    free = make("multiblock", grid=grid, **options)
    fixed = fix_lengths(free, batch)
    seen_free, seen_fixed = set(), set()
    for b in range(50):
        keys = batch_keys(b, size=batch)
        seen_free.add(tuple(g.context.shape[1] for g in free(keys)))
        groups = fixed(keys)
        seen_fixed.add(tuple(g.context.shape[1] for g in groups))
        for g in groups:  # still a partition of the grid
            both = torch.cat([g.context, g.target], dim=1).sort(dim=1).values
            assert torch.equal(both, torch.arange(math.prod(grid)).expand(batch, -1))
    assert len(seen_free) >= 5  # what a compiled step would recompile for
    assert len(seen_fixed) == 1
    # The fixed length is a typical batch's; the same masker and batch size give the same.
    (lengths,) = seen_fixed
    typical = typical_lengths(free, batch)
    for k, group in zip(lengths, typical, strict=True):
        assert min(group) <= k <= max(group)
    assert fix_lengths(free, batch).context_lengths == fixed.context_lengths
    if not options:  # full-time blocks: whole tubes move, every slice keeps the same context
        ctx = fixed(batch_keys(3, size=batch))[0].context.numpy()
        slice_size = grid[1] * grid[2]
        per_slice = [np.sort(ctx[0][ctx[0] // slice_size == t] % slice_size) for t in range(4)]
        assert all(np.array_equal(per_slice[0], p) for p in per_slice)


def test_maskers_of_constant_lengths_are_left_alone_and_others_are_wrapped():
    tube = make("tube", grid=(2, 4, 4))
    assert fix_lengths(tube, 4) is tube

    class Wobbly:  # a plugin masker whose context length varies, with no fixing of its own
        grid, group_names = (2, 4, 4), ("only",)

        def __call__(self, keys):
            keep = 4 + int(keys[0] % 5)
            context = np.zeros((len(keys), 32), dtype=bool)
            context[:, :keep] = True
            from salt.masking import split

            return [split(context)]

    fixed = fix_lengths(Wobbly(), 4)
    assert isinstance(fixed, FixedLengths)
    lengths = {fixed(batch_keys(b, size=4))[0].context.shape[1] for b in range(20)}
    assert lengths == set(fixed.lengths)


def test_a_compiled_step_compiles_once_over_50_multiblock_batches(tiny_overrides):
    """torch.compile with a counting backend: with fixed lengths every batch reuses the
    first batch's graphs; with each batch's own lengths the same model recompiles."""
    from salt.config import build_config
    from salt.models import SaltModel, masker_of, predictor_of, student_of

    overrides = {**tiny_overrides, "data.num_frames": 4, "data.image_size": 64}
    overrides.update({"train.batch_size": 2, "train.compile": True})
    cfg = build_config(overrides=overrides)
    assert cfg.mask.lengths == "auto" and cfg.grid == (2, 4, 4)
    student = student_of(cfg)
    model = SaltModel(student, predictor_of(cfg, student.embed_dim, 8))
    video = torch.randn(2, 3, 4, 64, 64)

    def count_graphs(masker, batches: int) -> list[int]:
        """Graphs compiled so far after each batch (forward and backward run each time)."""
        graphs, after = [], []

        def backend(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        step = torch.compile(model, backend=backend, dynamic=False)
        for b in range(batches):
            preds = step(video, masker(batch_keys(b, size=2)))
            sum(p.square().mean() for p in preds).backward()
            after.append(len(graphs))
        return after

    fixed = count_graphs(masker_of(cfg), 50)  # auto: fixed, because train.compile is on
    assert fixed[0] >= 1 and fixed[-1] == fixed[0], fixed
    free = count_graphs(
        masker_of(build_config(overrides={**overrides, "mask.lengths": "batch"})), 6
    )
    assert free[-1] > free[0], free
    torch._dynamo.reset()


# --- keys, uniforms, gather ------------------------------------------------------------------


def test_sample_keys_are_unique_and_broadcast_epochs():
    keys = sample_keys(0, 0, np.arange(100_000))
    assert keys.dtype == np.uint64 and keys.shape == (100_000,)
    assert len(np.unique(keys)) == 100_000
    per_sample = sample_keys(0, np.array([0, 1, 2]), np.array([5, 5, 5]))
    assert len(set(per_sample.tolist())) == 3
    assert per_sample[1] == sample_keys(0, 1, 5)[0]
    assert sample_keys(0, 0, 5)[0] != sample_keys(1, 0, 5)[0]


def test_uniforms_are_uniform_and_streams_are_independent():
    keys = sample_keys(0, 0, np.arange(200))
    u = uniforms(keys, 500)
    assert u.shape == (200, 500) and u.dtype == np.float64
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 0.09 * u.size
    assert np.array_equal(u, uniforms(keys, 500))
    assert np.array_equal(u[:, :10], uniforms(keys, 10))  # prefix-stable
    other = uniforms(keys, 500, stream=1)
    assert abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]) < 0.02


def test_gather_tokens_picks_each_rows_indices():
    x = torch.randn(3, 10, 4)
    idx = torch.tensor([[0, 2, 9], [1, 1, 3], [8, 7, 6]])
    out = gather_tokens(x, idx)
    assert out.shape == (3, 3, 4)
    for b in range(3):
        assert torch.equal(out[b], x[b, idx[b]])


# --- the collator ----------------------------------------------------------------------------


def test_mask_collator_stacks_videos_and_adds_the_samples_masks():
    masker = make("tube", grid=(2, 4, 4))
    collate = MaskCollator(masker, seed=5)
    samples = [
        Sample(torch.full((4, 3, 8, 8), i, dtype=torch.uint8), index=i, epoch=2) for i in (4, 9, 1)
    ]
    batch = collate(samples)
    assert batch.video.shape == (3, 4, 3, 8, 8) and batch.video.dtype == torch.uint8
    assert batch.video[:, 0, 0, 0, 0].tolist() == [4, 9, 1]
    assert batch.indices.tolist() == [4, 9, 1]
    expected = masker(sample_keys(5, 2, np.array([4, 9, 1])))
    assert len(batch.masks) == 1
    assert torch.equal(batch.masks[0].context, expected[0].context)
    assert torch.equal(batch.masks[0].target, expected[0].target)
    # The same sample in another batch gets the same mask.
    again = collate([samples[1]])
    assert torch.equal(again.masks[0].context[0], batch.masks[0].context[1])


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,options,error,match",
    [
        ("tube:1.5", {}, ValueError, "strictly between 0 and 1, got 1.5"),
        ("random:1.5", {}, ValueError, "strictly between 0 and 1, got 1.5"),
        ("tube", {"ratio": 0}, ValueError, "strictly between 0 and 1, got 0"),
        ("random:-0.1", {}, ValueError, "got -0.1"),
        ("multiblock:3", {}, ValueError, "takes no argument"),
        (
            "multiblock",
            {"groups": [{"name": "a", "num_blocks": 2, "spatial_scale": 0.2, "size": 3}]},
            ValueError,
            r"unknown multiblock group option\(s\) \['size'\]",
        ),
        (
            "multiblock",
            {"groups": [{"num_blocks": 2, "spatial_scale": 0}]},
            ValueError,
            "0 < spatial_scale < 1",
        ),
        (
            "multiblock",
            {"groups": [{"num_blocks": 2, "spatial_scale": 1.0}]},
            ValueError,
            "0 < spatial_scale < 1",
        ),
        (
            "multiblock",
            {"groups": [{"num_blocks": 0, "spatial_scale": 0.2}]},
            ValueError,
            "num_blocks >= 1",
        ),
        ("multiblock", {"temporal_scale": 0}, ValueError, r"temporal_scale must be in \(0, 1\]"),
        ("multiblock", {"temporal_scale": 1.5}, ValueError, "got 1.5"),
        ("multiblock", {"aspect_ratio": (2.0, 1.0)}, ValueError, "0 < low <= high"),
        ("tube", {"size": 3}, ValueError, "bad mask.options for 'tube'.*size"),
    ],
)
def test_bad_options_raise_clear_errors(spec, options, error, match):
    with pytest.raises(error, match=match):
        make(spec, **options)


def test_a_ratio_that_hides_nothing_is_rejected_when_masking():
    masker = make("tube:0.01", grid=(2, 4, 4))  # round(16 * 0.01) = 0 tokens hidden
    with pytest.raises(ValueError, match="hides nothing of 16 tokens"):
        masker(batch_keys(size=2))


def test_unknown_masker_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'tube'") as info:
        make("tubes")
    assert "multiblock, random, tube" in str(info.value)


def test_registry_describes_every_masker():
    entries = maskers.entries()
    assert {"multiblock", "tube", "random"} <= set(entries)
    assert all(e.description for e in entries.values())


def test_multiblock_masker_class_is_what_the_registry_builds():
    assert isinstance(make("multiblock"), MultiBlockMasker)
