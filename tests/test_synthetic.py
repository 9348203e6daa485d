"""The built-in procedural dataset (salt/synthetic.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salt.synthetic import COLOURS, DIRECTIONS, SHAPES, SPEEDS, SyntheticMotion

SIZE = 64


def first_index_with(ds: SyntheticMotion, **labels) -> int:
    for i in range(len(ds)):
        p = ds.params(i)
        if all(p[k] == v for k, v in labels.items()):
            return i
    raise AssertionError(f"no clip with {labels} in {len(ds)} clips")


def shape_pixels(ds: SyntheticMotion, index: int, clip: np.ndarray) -> np.ndarray:
    """Boolean ``[T, H, W]``: pixels painted in the clip's shape colour."""
    colour = np.array(COLOURS[ds.params(index)["colour"]], dtype=np.uint8)
    return (clip == colour).all(axis=-1)


def centroid(mask: np.ndarray) -> np.ndarray:
    """Circular mean (y, x) of a ``[H, W]`` mask in image widths; robust to wrap-around."""
    ys, xs = np.nonzero(mask)
    out = []
    for coord in (ys, xs):
        angle = 2 * math.pi * (coord + 0.5) / mask.shape[0]
        mean = math.atan2(np.sin(angle).mean(), np.cos(angle).mean())
        out.append((mean / (2 * math.pi)) % 1.0)
    return np.array(out)


def wrapped(delta: np.ndarray) -> np.ndarray:
    return (delta + 0.5) % 1.0 - 0.5


@pytest.mark.parametrize("frames,size", [(1, 16), (4, 32), (5, 48), (16, 24)])
def test_clips_have_the_requested_geometry(frames, size):
    ds = SyntheticMotion(length=3, num_frames=frames, image_size=size)
    item = ds[2]
    assert item["video"].shape == (frames, 3, size, size)
    assert item["video"].dtype == torch.uint8
    assert item["video"].is_contiguous()
    assert ds.render(2).shape == (frames, size, size, 3)
    assert torch.equal(item["video"], torch.from_numpy(ds.render(2)).permute(0, 3, 1, 2))


def test_clips_are_a_pure_function_of_seed_and_index():
    a = SyntheticMotion(length=10, num_frames=4, image_size=32)
    b = SyntheticMotion(length=10, num_frames=4, image_size=32)
    assert torch.equal(a[7]["video"], b[7]["video"])
    assert a[7]["labels"] == b[7]["labels"]
    assert torch.equal(a[7]["video"], a[7]["video"])
    assert not torch.equal(a[7]["video"], a[8]["video"])
    other = SyntheticMotion(length=10, num_frames=4, image_size=32, seed=1)
    assert not torch.equal(a[7]["video"], other[7]["video"])
    # The length only bounds the index; it does not change the content.
    assert torch.equal(
        SyntheticMotion(length=100, num_frames=4, image_size=32)[7]["video"], a[7]["video"]
    )


def test_labels_are_in_range_and_cover_every_class():
    ds = SyntheticMotion(length=300, num_frames=1, image_size=8)
    seen = {k: set() for k in ("direction", "speed", "shape", "colour")}
    for i in range(len(ds)):
        p = ds.params(i)
        for k in seen:
            seen[k].add(p[k])
    assert seen["direction"] == set(range(len(DIRECTIONS)))
    assert seen["speed"] == set(range(len(SPEEDS)))
    assert seen["shape"] == set(range(len(SHAPES)))
    assert seen["colour"] == set(range(len(COLOURS)))
    item = ds[5]
    assert item["label"] == item["labels"]["direction"] == ds.params(5)["direction"]
    assert set(item["labels"]) == set(SyntheticMotion.label_names)


def test_out_of_range_and_empty_datasets_are_rejected():
    ds = SyntheticMotion(length=4, num_frames=1, image_size=8)
    assert len(ds) == 4
    for bad in (-1, 4):
        with pytest.raises(IndexError, match=rf"synthetic clip {bad} out of range \[0, 4\)"):
            ds[bad]
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        SyntheticMotion(length=0)


@pytest.mark.parametrize("direction", range(len(DIRECTIONS)))
def test_the_shape_moves_in_its_labelled_direction(direction):
    ds = SyntheticMotion(length=400, num_frames=2, image_size=SIZE)
    index = first_index_with(ds, direction=direction)
    speed = SPEEDS[ds.params(index)["speed"]]
    steps = round(0.25 / speed)  # a quarter width apart: clear motion, no wrap ambiguity
    clip = ds.render(index, frames=np.array([0, steps]))
    mask = shape_pixels(ds, index, clip)
    assert mask[0].sum() > 20 and mask[1].sum() > 20
    dy, dx = wrapped(centroid(mask[1]) - centroid(mask[0]))
    angle = 2 * math.pi * direction / len(DIRECTIONS)
    # Image rows grow downwards, so "north" is a negative dy.
    expected = speed * steps * np.array([-math.sin(angle), math.cos(angle)])
    np.testing.assert_allclose([dy, dx], expected, atol=1.5 / SIZE)


def test_frame_step_scales_the_displacement():
    # Same clip content, twice the source-frame step: frame t of the coarse clip is
    # frame 2t of the fine one, so motion per clip frame doubles.
    fine = SyntheticMotion(length=4, num_frames=8, image_size=32, frame_step=2)
    coarse = SyntheticMotion(length=4, num_frames=4, image_size=32, frame_step=4)
    for index in range(4):
        assert torch.equal(coarse[index]["video"], fine[index]["video"][::2])
    assert coarse.params(0)["speed"] == fine.params(0)["speed"]

    ds1 = SyntheticMotion(length=50, num_frames=2, image_size=SIZE, frame_step=10)
    ds3 = SyntheticMotion(length=50, num_frames=2, image_size=SIZE, frame_step=30)
    index = first_index_with(ds1, speed=2)
    moves = []
    for ds in (ds1, ds3):
        mask = shape_pixels(ds, index, ds.render(index))
        moves.append(np.hypot(*wrapped(centroid(mask[1]) - centroid(mask[0]))))
    assert moves[1] == pytest.approx(3 * moves[0], rel=0.1)
    assert moves[0] == pytest.approx(SPEEDS[2] * 10, abs=1.5 / SIZE)


def test_background_is_static_and_the_shape_keeps_its_size_while_wrapping():
    ds = SyntheticMotion(length=50, num_frames=16, image_size=SIZE, frame_step=8)
    index = first_index_with(ds, speed=2, shape=1)  # fastest square: crosses the edges
    clip = ds.render(index)
    mask = shape_pixels(ds, index, clip)
    # The shape travels 0.016 * 8 * 15 = 1.9 image widths, wrapping at least once ...
    centres = np.array([centroid(m) for m in mask])
    assert np.abs(wrapped(np.diff(centres, axis=0))).sum(axis=0).max() > 1.0
    # ... without ever shrinking at an edge.
    counts = mask.sum(axis=(1, 2))
    assert counts.min() >= 0.85 * counts.max()
    never_covered = ~mask.any(axis=0)
    assert never_covered.sum() > 0.3 * SIZE * SIZE
    assert (clip[:, never_covered] == clip[0, never_covered]).all()


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_each_shape_is_drawn_with_a_plausible_area(shape):
    ds = SyntheticMotion(length=200, num_frames=1, image_size=SIZE)
    index = first_index_with(ds, shape=shape)
    area = shape_pixels(ds, index, ds.render(index))[0].mean()
    r = ds.params(index)["radius"]
    expected = {0: math.pi * r**2, 1: (1.6 * r) ** 2, 2: 1.7 * r * 0.85 * r}[shape]
    assert area == pytest.approx(expected, rel=0.2)
