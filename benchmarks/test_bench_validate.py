"""What the held-out loss costs a run at its default cadence (``train.eval_every``).

Target from the issue: <= 3% of training time. Two measurements, on two threads:

- the demo profile as ``salt train`` runs it on a CPU (vit_tiny, 8x112 clips, batch 8, 100
  steps, measured every 50 steps on 2 batches): the run is trained twice, with and without
  validation, and the time spent measuring (``val_seconds`` in ``metrics.jsonl``, reading
  the held-out clips included) is reported against the run's wall time;
- the recipe's cadence (every 1000 steps, 4 batches) at the recipe's 16x224 geometry,
  with vit_small standing in for vit_l on a CPU: one held-out batch (student on the
  visible tokens and predictor, no backward) and one training step are timed, and the
  share is ``eval_batches x batch / (eval_every x step)``.
"""

from __future__ import annotations

import time

import pytest
import torch

from salt.batch import Batch
from salt.config import build_config
from salt.losses import Objective, masked_loss
from salt.masking import sample_keys
from salt.metrics import read_records
from salt.models import SaltModel
from salt.optim import build_optimizer
from salt.registry import maskers, predictors, students
from salt.train import train
from salt.validate import loss_sums

THREADS = 2


@pytest.fixture(autouse=True)
def _two_threads(pin_threads):
    pin_threads(THREADS)


def demo_run(out, name: str, eval_every: int) -> tuple[float, list[dict]]:
    cfg = build_config(
        profile="demo",
        overrides={
            "data.spec": "synthetic:256",
            "data.num_workers": 0,
            "train.device": "cpu",
            "train.progress": False,
            "train.peak_tflops": 1.0,
            "train.eval_every": eval_every,
            "run.out": str(out),
            "run.name": name,
        },
    )
    start = time.perf_counter()
    result = train(cfg)
    return time.perf_counter() - start, read_records(result.run_dir / "metrics.jsonl")


@pytest.mark.benchmark(group="validate")
def test_held_out_loss_in_a_demo_run(benchmark, summary, tmp_path):
    default = build_config(profile="demo").train
    timed = {}

    def both():
        timed["with"] = demo_run(tmp_path / str(len(timed)), "with", default.eval_every)
        timed["without"] = demo_run(tmp_path / str(len(timed)), "without", 0)

    benchmark.pedantic(both, rounds=1, iterations=1)
    (wall, records), (plain, _) = timed["with"], timed["without"]
    measured = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in measured] == [50, 100]
    assert all(r["val_clips"] == default.eval_batches * default.batch_size for r in measured)
    spent = sum(r["val_seconds"] for r in measured)
    share = spent / wall
    benchmark.extra_info.update(
        {"val_seconds": spent, "run_seconds": wall, "run_seconds_without": plain, "share": share}
    )
    summary(
        f"demo run: {spent:.2f} s of held-out loss in {wall:.1f} s = {100 * share:.2f}% "
        f"(the same run without: {plain:.1f} s)"
    )


@pytest.mark.benchmark(group="validate")
def test_held_out_loss_at_the_recipe_cadence(benchmark, summary):
    recipe = build_config().train
    torch.manual_seed(0)
    student = students.create("vit_small", num_frames=16, image_size=224)
    predictor = predictors.create(
        "transformer",
        embed_dim=student.embed_dim,
        teacher_dim=768,
        grid=student.grid,
        width=384,
        depth=12,
        heads=6,
    )
    model = SaltModel(student, predictor).train()
    optimizer = build_optimizer(model, build_config().optim)
    objective = Objective("mse")
    batch_size = 2
    masker = maskers.create("multiblock", grid=student.grid)
    masks = masker(sample_keys(0, 0, list(range(batch_size))))
    video = torch.randint(0, 256, (batch_size, 16, 3, 224, 224), dtype=torch.uint8)
    targets = torch.randn(batch_size, 1568, 768)
    batch = Batch(
        video=video,
        epochs=torch.zeros(batch_size, dtype=torch.long),
        indices=torch.arange(batch_size),
        labels=torch.full((batch_size,), -1),
        views=[None] * batch_size,
        targets=targets,
        masks=masks,
    )
    x = torch.randn(batch_size, 3, 16, 224, 224)

    def step() -> float:
        start = time.perf_counter()
        loss, _ = masked_loss(model(x, masks), targets, masks, objective)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()  # warm-up: allocates the optimizer state
    step_s = min(step() for _ in range(2))

    def held_out() -> dict:
        model.eval()
        try:
            return loss_sums(
                model, None, [batch], objective, torch.device("cpu"), (0.5,) * 3, (0.25,) * 3
            )
        finally:
            model.train()

    sums = benchmark.pedantic(held_out, rounds=3, iterations=1, warmup_rounds=1)
    assert sums["clips"] == batch_size and torch.isfinite(torch.tensor(sums["loss"]))
    eval_s = benchmark.stats.stats.min if benchmark.stats else step_s / 3
    share = recipe.eval_batches * eval_s / (recipe.eval_every * step_s)
    benchmark.extra_info.update({"step_s": step_s, "held_out_batch_s": eval_s, "share": share})
    summary(
        f"recipe cadence (every {recipe.eval_every} steps, {recipe.eval_batches} batches): "
        f"batch {eval_s:.2f} s vs step {step_s:.2f} s -> {100 * share:.3f}% of training"
    )
