"""Temporal probes (salt/eval/temporal.py): tasks, folds, probes, reports, and proof that each task
measures what it claims (a motion oracle solves it, an order-blind encoder cannot)."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch
from torch import nn
from videos import write_video

from salt.clipspec import ClipSpec, MotionSource, SyntheticSource, VideoSource, make_source
from salt.eval.baseline import random_like
from salt.eval.heads import fit_linear
from salt.eval.stats import standard_error
from salt.eval.temporal import (
    FOLDS,
    STRIDES,
    TASKS,
    ProbeReport,
    accepts,
    build_task,
    compare,
    fold_videos,
    retrieval_accuracy,
    retrieval_hits,
    run_probes,
    select_videos,
    shuffled_order,
)
from salt.registry import students
from salt.synthetic import DIRECTIONS
from salt.video import discover

FRAMES, SIZE, VIDEOS = 4, 32, 16
CHANCE = {
    "time-arrow": 0.5,
    "motion-static": 0.5,
    "temporal-shuffle": 0.5,
    "stride": 1 / 3,
    "clip-consistency": 1 / VIDEOS,
}


def tiny_vit(**kwargs) -> nn.Module:
    geometry = dict(num_frames=FRAMES, image_size=SIZE, patch_size=16, tubelet_size=2)
    return students.create("vit_tiny", **{**geometry, **kwargs})


class MotionOracle(nn.Module):
    """Encodes motion explicitly: one token per later frame holding the frame-to-frame
    change and the (signed) shift from the first frame, found by phase correlation."""

    def __init__(self, num_frames: int, image_size: int):
        super().__init__()
        self.num_frames, self.image_size = num_frames, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> ``[B, T-1, 4]``."""
        lag = torch.arange(1, x.shape[2], dtype=x.dtype)
        energy = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 3, 4))  # [B, T-1]
        cross = (torch.fft.fft2(x[:, :, 1:]) * torch.fft.fft2(x[:, :, :1]).conj()).sum(1)
        corr = torch.fft.ifft2(cross / (cross.abs() + 1e-9)).real  # [B, T-1, H, W]
        corr[..., 0, 0] = -float("inf")  # the static background's peak
        height, width = corr.shape[-2:]
        peak = corr.flatten(-2).argmax(-1)
        moving = (energy > 1e-6).to(x.dtype)
        dy = ((peak // width + height // 2) % height - height // 2) / lag * moving
        dx = ((peak % width + width // 2) % width - width // 2) / lag * moving
        return torch.stack([energy, dy, dx, (dy**2 + dx**2).sqrt()], -1)


class BagOfFrames(nn.Module):
    """Order-blind: patch tokens of the per-pixel mean of the (sorted) frames."""

    def __init__(self, num_frames: int, image_size: int, patch: int = 8):
        super().__init__()
        self.num_frames, self.image_size, self.patch = num_frames, image_size, patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sorting first makes the mean exactly (bitwise) independent of frame order.
        frames = x.sort(dim=2).values.mean(2)  # [B, C, H, W]
        b, c, p = frames.shape[0], frames.shape[1], self.patch
        patches = frames.unfold(2, p, p).unfold(3, p, p)  # [B, C, h, w, p, p]
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    torch.manual_seed(1)  # random_like's default seed is 0
    return tiny_vit().eval()


@pytest.fixture(scope="module")
def report(encoder) -> ProbeReport:
    return run_probes(encoder, "synthetic", num_videos=VIDEOS, seed=0)


def test_every_task_scores_in_range_with_its_chance_level(report):
    assert report.tasks == TASKS
    for result in report.results:
        assert 0.0 <= result.accuracy <= 1.0, result
        assert result.chance == pytest.approx(CHANCE[result.task]), result.task
    assert report["stride"].classes == tuple(f"step {s}" for s in STRIDES)
    assert (report.num_frames, report.image_size) == (FRAMES, SIZE)  # from the encoder


def test_counts_folds_and_every_clip_scored_once(report):
    clips_per_video = {"stride": 3, "clip-consistency": 2}
    for result in report.results:
        assert len(result.videos) == VIDEOS
        assert result.clips == clips_per_video.get(result.task, 2) * VIDEOS
        assert result.folds == (0 if result.metric == "retrieval" else FOLDS)
        assert 0.0 <= result.stderr < 0.5


def test_same_seed_same_report_other_seed_other_videos(encoder, report):
    again = run_probes(encoder, "synthetic", num_videos=VIDEOS, seed=0)
    assert again.to_dict() | {"seconds": 0} == report.to_dict() | {"seconds": 0}
    other = run_probes(encoder, "synthetic", num_videos=VIDEOS, seed=1, tasks=["time-arrow"])
    assert other["time-arrow"].videos != report["time-arrow"].videos


def test_fold_videos_partitions_seeded_and_balanced():
    videos = list(range(100, 142))
    folds = fold_videos(videos, seed=3)
    assert len(folds) == FOLDS
    assert sorted(v for fold in folds for v in fold) == videos  # each video in one fold
    assert {len(fold) for fold in folds} == {8, 9}
    assert fold_videos(videos, seed=3) == folds
    assert fold_videos(videos, seed=4) != folds
    assert fold_videos(videos[::-1] + videos[:3], seed=3) == folds  # a set of ids
    assert sorted(fold_videos(range(3), seed=0, folds=5)) == [(0,), (1,), (2,)]
    with pytest.raises(ValueError, match="at least 2 videos"):
        fold_videos([7], seed=0)


def test_every_clip_is_predicted_once_by_a_probe_that_never_saw_its_video(monkeypatch):
    class VideoIdentity(nn.Module):
        """The first frame's mean colour: it names the video (the backgrounds differ) and
        is the same for both versions of a motion-static video."""

        num_frames, image_size = FRAMES, SIZE

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, 0].mean((2, 3))[:, None, :]  # [B, 1, C]

    fits = []

    def recording_probe(train_x, train_y, test_x, num_classes):
        fits.append((train_x, test_x))
        return torch.zeros(len(test_x), dtype=torch.long)

    monkeypatch.setattr("salt.eval.temporal.fit_linear", recording_probe)
    result = run_probes(VideoIdentity(), "synthetic", num_videos=20, tasks=["motion-static"])
    assert len(fits) == FOLDS
    assert sum(len(test) for _, test in fits) == result.results[0].clips == 40
    for train, test in fits:
        assert len(train) + len(test) == 40
        assert not (torch.cdist(train, test) == 0).any()  # no test video among the training
    assert result["motion-static"].accuracy == 0.5  # all predicted "moving", half right


def test_synthetic_task_videos_fit_the_task():
    source = SyntheticSource(length=512, image_size=SIZE)
    falling = select_videos(source, "time-arrow", 12, seed=0)
    falling_directions = {DIRECTIONS.index(d) for d in ("S", "SW", "SE")}
    assert all(source.data.params(v)["direction"] in falling_directions for v in falling)
    fast = select_videos(source, "stride", 12, seed=0)
    assert len({source.data.params(v)["speed"] for v in fast}) == 1
    assert select_videos(source, "stride", 12, seed=0) == fast
    with pytest.raises(ValueError, match="at least 4 usable videos"):
        select_videos(SyntheticSource(length=8, image_size=SIZE), "stride", 8, seed=0)


def test_task_clips_are_the_claimed_transformations():
    source = SyntheticSource(length=64, image_size=SIZE)
    data = {t: build_task(t, [3, 5], FRAMES, 4, SIZE, seed=0) for t in TASKS}

    def render(spec: ClipSpec) -> torch.Tensor:
        clip = source.clip(ClipSpec(spec.video, spec.step, spec.position, spec.shift), FRAMES)
        return clip[list(spec.order)] if spec.order else clip

    base, reverse = (render(c) for c in data["time-arrow"].clips[:2])
    assert data["time-arrow"].labels == (0, 1, 0, 1)
    assert torch.equal(reverse, base.flip(0))
    static = render(data["motion-static"].clips[1])
    assert torch.equal(static, base[:1].expand_as(base))
    shuffled = data["temporal-shuffle"].clips[1]
    assert sorted(shuffled.order) == list(range(FRAMES))
    assert list(shuffled.order) not in (list(range(FRAMES)), list(range(FRAMES))[::-1])
    assert [c.step for c in data["stride"].clips[:3]] == list(STRIDES)
    assert data["stride"].labels == (0, 1, 2, 0, 1, 2)
    first, second = data["clip-consistency"].clips[:2]
    assert first.video == second.video and first.position < 0.5 <= second.position
    assert data["clip-consistency"].pairs == ((0, 1), (2, 3))


def test_clip_consistency_cannot_be_solved_by_the_background():
    """The second sub-clip shows the same motion over another background: an 'encoder' that
    only sees the background's colour retrieves at chance, one that sees the moving shape's
    path finds its pair."""

    class Background(nn.Module):
        num_frames, image_size = FRAMES, SIZE

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # the median colour of frame 0
            return x[:, :, 0].flatten(2).median(-1).values[:, None, :]

    source = SyntheticSource(length=64, image_size=SIZE)
    report = run_probes(Background(), source, num_videos=24, tasks=["clip-consistency"])
    assert report["clip-consistency"].accuracy < 0.2  # chance 1/24; it used to be ~1.0
    spec = ClipSpec(3, step=2, position=0.0)
    same, other = source.clip(spec, FRAMES), source.clip(attrs.evolve(spec, scene=1), FRAMES)
    moved = (same[1:].int() - same[:-1].int()).abs().sum(1) > 0  # where the shape moved
    assert not torch.equal(same, other)
    assert torch.equal(moved, (other[1:].int() - other[:-1].int()).abs().sum(1) > 0)


def test_shuffled_order_never_identity_or_reversal():
    orders = {shuffled_order(3, seed=0, video=v) for v in range(50)}
    assert orders and not orders & {(0, 1, 2), (2, 1, 0)}
    with pytest.raises(ValueError, match="at least 3 frames"):
        shuffled_order(2, seed=0, video=0)


def test_a_motion_oracle_solves_the_motion_tasks():
    oracle = MotionOracle(num_frames=4, image_size=64)
    tasks = ["time-arrow", "motion-static", "stride"]
    acc = run_probes(oracle, "synthetic", num_videos=24, tasks=tasks).accuracies
    # Cross-validation tests every video, and the oracle's phase correlation misreads the
    # odd one at 64 px: one clip of 48.
    assert acc["time-arrow"] >= 0.97
    assert acc["motion-static"] >= 0.97
    assert acc["stride"] >= 0.9


def test_an_order_blind_encoder_is_at_chance_on_order_tasks():
    bag = BagOfFrames(num_frames=FRAMES, image_size=SIZE)
    tasks = ["time-arrow", "temporal-shuffle"]
    for probe in ("linear", "attentive"):
        acc = run_probes(bag, "synthetic", num_videos=24, tasks=tasks, probe=probe).accuracies
        # Both versions of a test video get the same features, hence the same prediction.
        assert acc == {"time-arrow": 0.5, "temporal-shuffle": 0.5}, probe


def test_attentive_probe_runs_and_learns(encoder):
    report = run_probes(
        encoder, "synthetic", num_videos=12, probe="attentive", tasks=TASKS[:2], folds=2
    )
    assert [(r.metric, r.folds) for r in report.results] == [("attentive", 2)] * 2
    assert all(0.0 <= r.accuracy <= 1.0 for r in report.results)
    oracle = MotionOracle(num_frames=4, image_size=64)
    tasks = ["time-arrow", "motion-static"]
    acc = run_probes(oracle, "synthetic", num_videos=24, probe="attentive", tasks=tasks).accuracies
    assert acc["time-arrow"] >= 0.95 and acc["motion-static"] >= 0.95  # 2 clips of 48 may miss


def test_standard_error_is_over_videos():
    assert standard_error(torch.tensor([1.0, 1.0, 1.0])) == 0.0
    assert standard_error(torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(
        np.std([0, 1, 0, 1], ddof=1) / 2
    )
    assert standard_error(torch.tensor([0.5])) == 0.0


def test_linear_probe_and_retrieval_on_known_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=gen)
    y = (x[:, 2] > -0.5).long() + (x[:, 2] > 0.5).long()  # three ordered classes
    predicted = fit_linear(x[:200], y[:200], x[200:], num_classes=3)
    assert (predicted == y[200:]).float().mean() >= 0.9
    a = torch.randn(10, 6, generator=gen)
    assert retrieval_accuracy(a, a + 0.01 * torch.randn(10, 6, generator=gen)) == 1.0
    assert retrieval_accuracy(a, a.roll(1, 0)) == 0.0
    hits = retrieval_hits(a, torch.cat([a[:5], a[5:].roll(1, 0)]))
    assert hits.tolist() == [1.0] * 5 + [0.0] * 5


def test_report_table_and_json(report):
    text = report.table()
    assert "linear probe, 5-fold cross-validation by video, synthetic:2048" in text
    for result in report.results:
        row = next(line for line in text.splitlines() if line.startswith(result.task))
        assert f"{result.accuracy:.3f}" in row and f"{result.chance:.3f}" in row
    assert "top-1 retrieval" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d["tasks"]) == set(TASKS)
    assert d["tasks"]["stride"]["chance"] == pytest.approx(1 / 3)
    assert d["tasks"]["time-arrow"]["videos"] == list(report["time-arrow"].videos)
    assert d["tasks"]["time-arrow"]["folds"] == FOLDS
    assert f"{FOLDS}-fold cross-validation by video" in text
    assert (d["probe"], d["seed"], d["num_frames"], d["image_size"]) == ("linear", 0, 4, 32)
    assert ProbeReport.from_dict(d) == report


def test_compare_has_a_column_per_model(report):
    other = ProbeReport.from_dict(report.to_dict() | {"tasks": {}})
    text = compare({"trained": report, "random": other})
    header = text.splitlines()[1].split()
    assert header == ["task", "chance", "trained", "random"]
    arrow = next(line for line in text.splitlines() if line.startswith("time-arrow")).split()
    result = report["time-arrow"]
    assert arrow == ["time-arrow", "0.500", f"{result.accuracy:.3f}+-{result.stderr:.3f}", "-"]


def test_random_like_same_architecture_new_weights(encoder):
    state = torch.get_rng_state()
    baseline = random_like(encoder, "vit_tiny", seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert type(baseline) is type(encoder)
    assert (baseline.num_frames, baseline.image_size) == (encoder.num_frames, encoder.image_size)
    mine, theirs = encoder.state_dict(), baseline.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(mine[k].shape == theirs[k].shape for k in mine)
    assert not torch.equal(mine["blocks.0.attn.qkv.weight"], theirs["blocks.0.attn.qkv.weight"])
    again = random_like(encoder, "vit_tiny", seed=0)
    assert torch.equal(
        again.state_dict()["patch_embed.proj.weight"], theirs["patch_embed.proj.weight"]
    )
    with pytest.raises(ValueError, match="architecture"):
        random_like(encoder)


def test_errors_speak_to_the_user(encoder):
    with pytest.raises(ValueError, match="unknown probe task"):
        run_probes(encoder, "synthetic", tasks=["arrow"])
    with pytest.raises(ValueError, match="probe must be one of"):
        run_probes(encoder, "synthetic", probe="mlp")
    with pytest.raises(ValueError, match="num_frames= and image_size="):
        run_probes(nn.Identity(), "synthetic")
    with pytest.raises(ValueError, match="clip count"):
        run_probes(encoder, "synthetic:many")


def test_probes_on_a_folder_of_videos(tmp_path, encoder):
    for i in range(6):
        write_video(tmp_path / "videos" / f"clip{i}.mp4", n=24, seed=i)
    source = VideoSource(discover(str(tmp_path / "videos")), image_size=SIZE)
    clip = source.clip(ClipSpec(0, step=2, position=0.5, shift=(1, -2)), FRAMES)
    assert clip.dtype == torch.uint8 and clip.shape == (FRAMES, 3, SIZE, SIZE)
    seen = []
    report = run_probes(
        encoder,
        str(tmp_path / "videos"),
        num_videos=6,
        progress=lambda task, done, total: seen.append((task, done, total)),
    )
    assert report.source == str(tmp_path / "videos")
    assert report.tasks == TASKS
    assert all(0.0 <= r.accuracy <= 1.0 for r in report.results)
    assert report["clip-consistency"].chance == pytest.approx(1 / 6)
    last = {task: (done, total) for task, done, total in seen}  # each task's final call
    assert set(last) == set(TASKS)
    assert all(done == total for done, total in last.values())


def test_the_motion_benchmark_as_a_probe_source():
    from salt.motion import MotionClasses

    source = make_source("motion:28", SIZE)
    assert isinstance(source, MotionSource) and source.name == "motion:28"
    # time-arrow keeps the even classes: an odd class is an even one played backwards
    assert [v for v in range(28) if accepts(source, "time-arrow", v)] == list(range(0, 28, 2))
    assert all(accepts(source, "stride", v) for v in range(28))
    held_out = MotionClasses(length=28, image_size=SIZE, seed=1)
    spec = ClipSpec(5, step=2, position=0.0)
    expected = torch.from_numpy(held_out.render(5, np.arange(FRAMES) * 2)).permute(0, 3, 1, 2)
    assert torch.equal(source.clip(spec, FRAMES), expected)
    # another scene: the same clip over another background (so it cannot identify the video)
    other = source.clip(attrs.evolve(spec, scene=1), FRAMES)
    same = (other == expected).all(dim=1).float().mean()  # the cast's pixels, not the scene's
    assert 0.02 < same < 0.9
    assert torch.equal(other, source.clip(attrs.evolve(spec, scene=1), FRAMES))


def test_render_matches_the_synthetic_dataset():
    source = SyntheticSource(length=16, image_size=SIZE)
    spec = ClipSpec(2, step=2, position=0.0)
    expected = source.data.render(2, np.arange(FRAMES) * 2)
    assert torch.equal(source.clip(spec, FRAMES), torch.from_numpy(expected).permute(0, 3, 1, 2))
    shifted = source.clip(ClipSpec(2, step=2, position=0.0, shift=(1, 2)), FRAMES)
    assert torch.equal(shifted, torch.from_numpy(expected).permute(0, 3, 1, 2).roll((1, 2), (2, 3)))
