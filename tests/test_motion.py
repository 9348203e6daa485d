"""The built-in motion benchmark (salt/motion.py): deterministic, balanced, disjoint splits,
any geometry, and a first frame that says nothing about the class."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from salt.config import DataConfig
from salt.data import build_source, parse_data_spec
from salt.eval.heads import fit_linear
from salt.motion import CLASSES, MotionClasses, reversal
from salt.natural import PHOTOS, NaturalMotionClasses, PhotosMissing, photo_bank, photo_folder

# The motion benchmark and its photo-textured variant: the same class rules.
BENCHMARKS = pytest.mark.parametrize("generator", [MotionClasses, NaturalMotionClasses])


def test_fourteen_motion_classes_in_time_reversal_pairs():
    assert len(CLASSES) == 14 == len(set(CLASSES))
    pairs = {(CLASSES[i], CLASSES[reversal(i)]) for i in range(0, 14, 2)}
    assert ("right", "left") in pairs and ("grow", "shrink") in pairs
    assert ("approach", "separate") in pairs and ("uncover", "cover") in pairs
    assert all(reversal(reversal(i)) == i for i in range(14))


@BENCHMARKS
@pytest.mark.parametrize("frames,size,step", [(4, 32, 4), (8, 48, 2), (3, 20, 1)])
def test_clips_are_deterministic_balanced_and_at_any_geometry(generator, frames, size, step):
    data = generator(length=28, num_frames=frames, image_size=size, frame_step=step)
    clip = data.render(5)
    assert clip.shape == (frames, size, size, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, data.render(5))
    assert not np.array_equal(clip, data.render(6))
    assert [data.label(i) for i in range(28)] == list(range(14)) * 2
    assert not np.array_equal(clip[0], clip[-1])  # something moves in every class


# The pixels every result in docs/results.md was measured on: one of each class at 4x32,
# and a clip at other frames in another scene. A faster renderer must draw these bytes.
DIGESTS = {
    "motion": "9f3b3533ed6aaca2d32983976d015b87357ec4d8f11c18e6b8514b67d8f6bfb7",
    "motion-natural": "028f4510986827db0dbd3a374aade896db18c3f969f347d134bff9b27f29796b",
}


@BENCHMARKS
def test_the_clips_are_the_pixels_the_results_were_measured_on(generator):
    g = generator(length=28, num_frames=4, image_size=32, frame_step=4, seed=0)
    digest = hashlib.sha256()
    for i in range(28):
        digest.update(g.render(i).tobytes())
    digest.update(g.render(3, np.array([5, 9, 30]), scene=2).tobytes())
    assert digest.hexdigest() == DIGESTS[g.kind], f"{g.kind}'s clips changed"


@BENCHMARKS
def test_every_class_moves_something(generator):
    data = generator(length=14, num_frames=8, image_size=48)
    for i in range(14):
        clip = data.render(i).astype(np.float32)
        changed = np.abs(clip[-1] - clip[0]).max(axis=-1) > 40  # beyond the pixel noise
        assert changed.sum() >= 8, CLASSES[i]


@pytest.mark.parametrize("kind", ["motion", "motion-natural"])
def test_the_data_spec_gives_splits_with_disjoint_appearance(kind):
    spec = parse_data_spec(f"{kind}:28")
    assert spec.kind == kind and spec.count == 28 and spec.synthetic
    data = DataConfig(spec=f"{kind}:28", num_frames=2, image_size=32)
    train, test = build_source(data, "train"), build_source(data, "test")
    sample = train[3]
    assert sample.label == 3 and sample.video.shape == (2, 3, 32, 32)
    assert sample.view["source"] == f"{kind}/3" and train.classes[3] == "down"
    assert torch.equal(sample.video, build_source(data, "train")[3].video)
    assert not any(torch.equal(train[i].video[0], test[i].video[0]) for i in range(28))
    with pytest.raises(ValueError, match="clip count, e.g. 'motion:512'"):
        parse_data_spec("motion:lots")


@BENCHMARKS
def test_a_probe_on_the_first_frame_repeated_scores_chance(generator):
    """Appearance is drawn independently of the class: a linear probe on first-frame
    pixels (what a clip of its first frame repeated shows) stays within 3 standard errors
    of chance."""
    n_train, n_test, size = 560, 560, 24
    train = generator(length=n_train, num_frames=2, image_size=size, frame_step=28, seed=0)
    test = generator(length=n_test, num_frames=2, image_size=size, frame_step=28, seed=2)

    def features(data, both: bool):
        rows = []
        for i in range(len(data)):
            clip = data.render(i).astype(np.float32) / 255
            rows.append(
                np.concatenate(
                    [clip[0].ravel(), (clip[1] - clip[0]).ravel()] if both else [clip[0].ravel()]
                )
            )
        return torch.from_numpy(np.stack(rows))

    labels = lambda data: torch.tensor([data.label(i) for i in range(len(data))])  # noqa: E731
    chance = 1 / 14
    stderr = math.sqrt(chance * (1 - chance) / n_test)
    first = fit_linear(
        features(train, False), labels(train), features(test, False), 14, weight_decay=1.0
    )
    accuracy = float((first == labels(test)).double().mean())
    assert accuracy < chance + 3 * stderr, accuracy


def test_natural_clips_move_as_the_motion_clips_and_wear_photos():
    """Clip i of motion-natural is clip i of motion - class, cast, motion - with every
    surface cut from one of the photos."""
    plain = MotionClasses(length=28, num_frames=4, image_size=32)
    natural = NaturalMotionClasses(length=28, num_frames=4, image_size=32)
    for i in (0, 5, 13):
        p, q = plain.params(i), natural.params(i)
        assert natural.label(i) == plain.label(i) == i % 14
        for key in ("amount", "turn", "growth", "closing", "shake", "noise"):
            assert q[key] == p[key]
        assert np.array_equal(q["a"]["pos"], p["a"]["pos"]) and q["a"]["size"] == p["a"]["size"]
        surfaces = [q["background"]["texture"], q["bar"]["texture"], q["a"]["texture"]]
        assert all(0 <= t["photo"] < len(PHOTOS) for t in surfaces)
        assert len({t["photo"] for t in surfaces}) == 3  # background, bar and A differ
        assert not np.array_equal(natural.render(i), plain.render(i))
    bank = photo_bank()
    assert len(bank) == len(PHOTOS) and all(b.shape == (256, 256, 3) for b in bank)
    # Photos, not flat colour: a background varies at every scale.
    clip = natural.render(0).astype(np.float32)
    assert clip[0].std(axis=(0, 1)).min() > 5


def test_without_scikit_image_the_natural_benchmark_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(PhotosMissing, match="pip install scikit-image"):
        photo_folder()
