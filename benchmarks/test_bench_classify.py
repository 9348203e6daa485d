"""``salt eval classify``: feature extraction (frozen encoder over labelled clips) and probe
training, timed apart.

* ``test_feature_extraction``: vit_tiny tokens of 8x112 motion-benchmark clips, batch 16,
  two torch threads, clips rendered beforehand (the generator is not what is measured).
* ``test_probe_training``: one epoch of the attentive and the linear probe (3 seeds each)
  over 256 clips' kept tokens (8x112 -> 196 tokens x 192), batch 64.
* ``test_three_encoders``: the quick start's classify stage in miniature - three vit_tiny
  encoders scored on ``motion:CLIPS`` at 8x64 (the ``--long`` geometry), the clips drawn
  once and shared (``share_clips``) or drawn again for each encoder, as before; the
  generator is part of what is measured.
* ``test_render_clip``: one clip of the motion benchmark (or its photo-textured variant) at
  8x64, rendered by its generator on one thread - what every classify, cache build and
  training run on the built-in data draws.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from salt.config import DataConfig
from salt.data import GENERATED, build_source, normalize_clips
from salt.eval.classify import (
    ClassifySettings,
    classify,
    labelled_splits,
    probe_schedule,
    share_clips,
)
from salt.eval.heads import make_probe
from salt.optim import lr_at
from salt.registry import students

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 16


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return students.create(
        "vit_tiny", num_frames=8, image_size=112, patch_size=16, tubelet_size=2
    ).eval()


@pytest.mark.benchmark(group="classify", min_rounds=5, max_time=5.0)
def test_feature_extraction(benchmark, summary, seconds_per_call, pin_threads, encoder):
    pin_threads(2)
    source = build_source(DataConfig(spec=f"motion:{BATCH}", num_frames=8, image_size=112))
    video = torch.stack([source[i].video for i in range(BATCH)])  # uint8 [B, T, C, H, W]

    def extract() -> torch.Tensor:
        with torch.inference_mode():
            return encoder(normalize_clips(video, MEAN, STD)).to(torch.float16)

    tokens = benchmark(extract)
    assert tokens.shape == (BATCH, 196, 192)
    times = seconds_per_call(benchmark)
    if times:
        mean, best = times
        benchmark.extra_info["clips_per_s"] = BATCH / mean
        summary(
            f"vit_tiny 8x112 tokens: {BATCH / mean:.1f} clips/s ({1e3 * mean / BATCH:.1f} ms per clip)"
        )


@pytest.mark.parametrize("kind", ["attentive", "linear"])
@pytest.mark.benchmark(group="classify", min_rounds=3, max_time=5.0)
def test_probe_training(benchmark, summary, seconds_per_call, pin_threads, kind):
    pin_threads(2)
    clips, settings = 256, ClassifySettings(seeds=3)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(clips, 196, 192, generator=gen).to(torch.float16)
    labels = torch.randint(0, 14, (clips,), generator=gen)
    probes = [make_probe(kind, 192, 14, seed) for seed in range(settings.seeds)]
    optimizers = [torch.optim.AdamW(p.parameters(), lr=settings.lr) for p in probes]
    steps = clips // settings.probe_batch_size
    schedule = probe_schedule(settings, steps)

    def epoch() -> float:
        loss = torch.zeros(())
        for step in range(steps):
            chunk = slice(step * settings.probe_batch_size, (step + 1) * settings.probe_batch_size)
            x, y = tokens[chunk].float(), labels[chunk]
            for probe, optimizer in zip(probes, optimizers, strict=True):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, schedule, steps)
                loss = torch.nn.functional.cross_entropy(probe(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return float(loss)

    assert torch.isfinite(torch.tensor(benchmark(epoch)))
    times = seconds_per_call(benchmark)
    if times:
        mean, _ = times
        summary(
            f"{kind} probe x {settings.seeds} seeds: {1e3 * mean:.0f} ms per epoch of {clips} "
            f"clips ({clips * settings.seeds / mean:.0f} clip-probe steps/s)"
        )


CLIPS = 672  # 672 training clips, 336 test


@pytest.mark.parametrize("clips", ["shared", "drawn per encoder"])
@pytest.mark.benchmark(group="classify-stage")
def test_three_encoders(benchmark, summary, seconds_per_call, pin_threads, clips):
    pin_threads(2)
    encoders = []
    for seed in range(3):
        torch.manual_seed(seed)
        encoders.append(
            students.create("vit_tiny", num_frames=8, image_size=64, patch_size=16).eval()
        )
    settings = ClassifySettings(probes=("attentive",), epochs=2, workers=1)

    def stage() -> list[float]:
        splits = labelled_splits(DataConfig(spec=f"motion:{CLIPS}", num_frames=8, image_size=64))
        scoring = share_clips(splits, settings) if clips == "shared" else settings
        return [
            classify(e, splits, MEAN, STD, scoring, device="cpu").score("attentive").mean
            for e in encoders
        ]

    scores = benchmark.pedantic(stage, rounds=2, iterations=1)
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    times = seconds_per_call(benchmark)
    if times:
        mean, _ = times
        summary(f"3 encoders on motion:{CLIPS} (8x64), clips {clips}: {mean:.1f} s")


@pytest.mark.parametrize("kind", ["motion", "motion-natural"])
def test_render_clip(benchmark, summary, seconds_per_call, pin_threads, kind):
    pin_threads(1)
    generator = GENERATED[kind].generator_class(
        length=14336, num_frames=8, image_size=64, frame_step=4, seed=0
    )
    indices = itertools.count()
    clip = benchmark(lambda: generator.clip(next(indices) % len(generator)))
    assert clip.shape == (8, 3, 64, 64) and clip.dtype == torch.uint8
    times = seconds_per_call(benchmark)
    if times:
        mean, best = times
        benchmark.extra_info["ms_per_clip"] = mean * 1e3
        summary(f"{kind} clip, 8x64, 1 thread: {mean * 1e3:.2f} ms (best {best * 1e3:.2f})")
