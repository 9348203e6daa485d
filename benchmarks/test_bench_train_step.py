"""One fp32 training step of vit_small at 16x224 on 2 CPU threads, and how it scales with
the number of visible tokens.

The step is the trainer's: SaltModel forward over every mask group, masked MSE against
fixed teacher targets, backward, gradient clipping, AdamW. Throughput is reported as
clips/s, GFLOP/s from the analytic ``SaltModel.train_flops`` (attention included) and MFU
against the fp32 matmul peak that ``salt.perf.measure_peak_tflops`` measures on the same
threads. A step takes seconds, so these run in pedantic mode with a few rounds.
"""

from __future__ import annotations

import math

import pytest
import torch

from salt.config import OptimConfig
from salt.losses import Objective, masked_loss
from salt.masking import MaskGroup, sample_keys
from salt.models import SaltModel
from salt.optim import apply_schedules, build_optimizer
from salt.registry import maskers, predictors, students

NUM_FRAMES, IMAGE_SIZE = 16, 224
GRID = (8, 14, 14)
NUM_TOKENS = math.prod(GRID)  # 1568
BATCH = 2
TEACHER_DIM = 768  # a ViT-B teacher
THREADS = 2
ROUNDS, WARMUP_ROUNDS = 3, 1
TARGET_FRACTION = 0.25  # the fixed target set of the visible-token benchmark


@pytest.fixture(autouse=True)
def _two_threads(pin_threads):
    pin_threads(THREADS)


class TrainStep:
    """The trainer's step on a fixed batch: a vit_small student and a 12 x 384 predictor."""

    def __init__(self, masks: list[MaskGroup]):
        torch.manual_seed(0)
        student = students.create("vit_small", num_frames=NUM_FRAMES, image_size=IMAGE_SIZE)
        predictor = predictors.create(
            "transformer",
            embed_dim=student.embed_dim,
            teacher_dim=TEACHER_DIM,
            grid=student.grid,
            width=384,
            depth=12,
            heads=6,
        )
        assert student.grid == GRID
        self.model = SaltModel(student, predictor).train()
        self.cfg = OptimConfig()
        self.optimizer = build_optimizer(self.model, self.cfg)
        apply_schedules(self.optimizer, self.cfg.lr, self.cfg.weight_decay)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.objective = Objective("mse")
        self.masks = masks
        self.video = torch.randn(BATCH, 3, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE)  # normalised
        self.targets = torch.randn(BATCH, NUM_TOKENS, TEACHER_DIM)  # [B, N, Dt] teacher latents
        self.initial = [p.detach().clone() for p in self.params]

    def __call__(self) -> tuple[torch.Tensor, list[torch.Size]]:
        """One optimizer step; returns the (detached) loss and each group's prediction shape."""
        preds = self.model(self.video, self.masks)
        loss, _ = masked_loss(preds, self.targets, self.masks, self.objective)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), [p.shape for p in preds]

    def flops(self) -> float:
        """Analytic forward + backward FLOPs of one step."""
        return self.model.train_flops(BATCH, self.masks)

    def check(self, loss: torch.Tensor, shapes: list[torch.Size]) -> None:
        """The step ran for real: finite loss, one prediction per group, every weight moved."""
        assert torch.isfinite(loss), f"non-finite loss {loss}"
        assert shapes == [torch.Size([BATCH, g.target.shape[1], TEACHER_DIM]) for g in self.masks]
        assert all(bool(torch.isfinite(p).all()) for p in self.params)
        moved = sum(not torch.equal(p, b) for p, b in zip(self.params, self.initial, strict=True))
        assert moved == len(self.params), f"only {moved}/{len(self.params)} parameters changed"


def report(benchmark, step: TrainStep, seconds: tuple[float, float] | None, peak: float) -> str:
    """Store clips/s, GFLOP/s and MFU in ``extra_info``; return the summary line."""
    gflop = step.flops() / 1e9
    info = benchmark.extra_info
    info.update(
        {
            "batch": BATCH,
            "threads": THREADS,
            "context_tokens": [int(g.context.shape[1]) for g in step.masks],
            "target_tokens": [int(g.target.shape[1]) for g in step.masks],
            "train_gflop_per_step": gflop,
            "peak_gflops": peak,
        }
    )
    if seconds is None:
        return f"{gflop:.0f} GFLOP per step (timing disabled)"
    mean, best = seconds
    info.update(
        {
            "step_s": mean,
            "clips_per_s": BATCH / mean,
            "gflops": gflop / mean,
            "mfu": gflop / mean / peak,
            "clips_per_s_best": BATCH / best,
            "mfu_best": gflop / best / peak,
        }
    )
    return (
        f"step {mean:.2f} s, {BATCH / mean:.3f} clips/s, {gflop:.0f} GFLOP/step, "
        f"{gflop / mean:.1f} GFLOP/s, MFU {100 * gflop / mean / peak:.1f}% "
        f"(best round {100 * gflop / best / peak:.1f}%) of a {peak:.1f} GFLOP/s peak"
    )


@pytest.mark.benchmark(group="train_step")
def test_train_step_multiblock(benchmark, summary, seconds_per_call, cpu_peak_gflops):
    """vit_small 16x224, batch 2, both multiblock groups, fp32 on 2 threads."""
    masker = maskers.create("multiblock", grid=GRID)
    step = TrainStep(masker(sample_keys(0, 0, range(BATCH))))

    loss, shapes = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)

    step.check(loss, shapes)
    summary(report(benchmark, step, seconds_per_call(benchmark), cpu_peak_gflops))


def fraction_masks(fraction: float, seed: int = 0) -> list[MaskGroup]:
    """One group: a fixed random 25% target and a random ``fraction`` of tokens as context.

    The target set has the same size at every fraction, so only the visible-token count
    changes. Below 0.75 the context is drawn from the tokens outside the target (a real
    mask); at 1.0 the context is the whole clip and so also covers the target.
    """
    gen = torch.Generator().manual_seed(seed)
    num_target = round(TARGET_FRACTION * NUM_TOKENS)
    num_context = round(fraction * NUM_TOKENS)
    contexts, targets = [], []
    for _ in range(BATCH):
        order = torch.randperm(NUM_TOKENS, generator=gen)
        targets.append(order[:num_target].sort().values)
        if num_context == NUM_TOKENS:
            contexts.append(torch.arange(NUM_TOKENS))
        elif num_context <= NUM_TOKENS - num_target:
            contexts.append(order[num_target : num_target + num_context].sort().values)
        else:
            raise ValueError(f"context fraction {fraction} must be <= 0.75 or exactly 1.0")
    return [MaskGroup(torch.stack(contexts), torch.stack(targets))]


@pytest.fixture(scope="module")
def step_times() -> dict[float, tuple[float, float]]:
    """Mean step seconds and GFLOP per step by context fraction, shared across parameters."""
    return {}


@pytest.mark.benchmark(group="visible_tokens")
@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_train_step_visible_tokens(
    benchmark, summary, seconds_per_call, cpu_peak_gflops, step_times, fraction
):
    """The same step with one hand-made group whose context is ``fraction`` of the tokens."""
    masks = fraction_masks(fraction)
    assert masks[0].context.shape == (BATCH, round(fraction * NUM_TOKENS))
    assert masks[0].target.shape == (BATCH, round(TARGET_FRACTION * NUM_TOKENS))
    step = TrainStep(masks)

    loss, shapes = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)

    step.check(loss, shapes)
    benchmark.extra_info["context_fraction"] = fraction
    seconds = seconds_per_call(benchmark)
    summary(report(benchmark, step, seconds, cpu_peak_gflops))
    if seconds is None:
        return
    step_times[fraction] = (seconds[0], step.flops() / 1e9)
    if {0.25, 1.0} <= step_times.keys():
        (t_lo, f_lo), (t_hi, f_hi) = step_times[0.25], step_times[1.0]
        summary(f"1.0 vs 0.25 visible: step time x{t_hi / t_lo:.2f}, FLOPs x{f_hi / f_lo:.2f}")
