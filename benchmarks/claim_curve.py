"""SALT's claim against the training budget: the quick start at growing step counts.

    python benchmarks/claim_curve.py --device auto               # a GPU: the budgets below
    python benchmarks/claim_curve.py --long --device cpu         # 2 CPU cores: ~1.5 hours
    python benchmarks/claim_curve.py --long --budgets 3000,6000 --seeds 0,1,2 --device cpu
    python benchmarks/claim_curve.py --long --budgets 6000 --teacher-steps 4000 --device cpu
    python benchmarks/claim_curve.py --smoke --device cpu        # any machine: seconds

A budget is the student's step count; the teacher's steps and warmup scale with it from the
preset (``--long``: the recipe's 4000 + 9000 steps, so budget 4500 is a 2000-step teacher
with a 200-step warmup), or ``--teacher-steps N`` holds the teacher at N for every budget.
The student keeps the preset's warmup in steps (the quick start caps it at half a run): the
instance-target student needs ~1000 steps under the peak rate to leave its plateau, and a
warmup scaled down with the budget keeps it there (docs/results.md). For each budget and seed it runs
the whole quick start (pixel teacher, cache, student, probes, the motion benchmark's
attentive probe for student, teacher and random) into ``OUT/steps_N[_seed_S]`` and prints
one row: the three top-1 scores, the gaps student - teacher and teacher - random in
standard errors of the difference (probe seeds and test clips counted, as in the quick
start's table), whether the claim (>= 3 each) is reached, and the wall time. Each row is
also appended to ``OUT/curve.jsonl`` as soon as it finishes, so a run cut short keeps what
it measured, and ``OUT/curve.png`` plots each gap against the budget. Nothing is asserted;
the rows go in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import attrs

from salt.cli.options import positive_int
from salt.distributed import resolve_device
from salt.plots import Line, Panel, colour_of, draw_panels, save_png
from salt.quickstart import DEMO, FAST, LONG, MODELS, QuickstartSettings, run_quickstart

# A GPU box (16 cores drawing clips): every 8x112 clip kept in memory by each worker.
GPU = attrs.evolve(
    DEMO,
    data="motion",
    teacher_steps=1000,
    student_steps=1000,
    clips=2048,
    batch_size=64,
    workers=12,
    classify_clips=1792,
    classify_epochs=20,
)
GPU_BUDGETS = (1000, 3000, 6000)
SMOKE_BUDGETS = (2, 4)
# salt quickstart --long (the recipe: 8x64, low-shot whitened probe) on a CPU, at a third,
# two thirds and all of its steps.
LONG_BUDGETS = (3000, 6000, 9000)
SIZES = {
    "gpu": (GPU, GPU_BUDGETS),
    "long": (LONG, LONG_BUDGETS),
    "smoke": (FAST, SMOKE_BUDGETS),
}


def scaled(
    base: QuickstartSettings, steps: int, seed: int, teacher_steps: int | None = None
) -> QuickstartSettings:
    """``base`` at a budget of ``steps`` student steps: the teacher's steps and warmup keep
    their share of the preset's, or the teacher trains ``teacher_steps`` with the preset's
    warmup; the student keeps the preset's warmup steps."""
    if teacher_steps is None:
        factor = steps / base.student_steps
        teacher_steps = max(1, round(base.teacher_steps * factor))
        teacher_warmup = round(base.teacher_warmup * factor)
    else:
        teacher_warmup = base.teacher_warmup
    return attrs.evolve(
        base,
        student_steps=steps,
        teacher_steps=teacher_steps,
        teacher_warmup=teacher_warmup,
        seed=seed,
    )


def row(settings: QuickstartSettings, result) -> dict:
    """The curve's point for one finished quick start."""
    scores = {name: result.classify[name].score("attentive") for name in MODELS}
    return {
        "steps": settings.student_steps,
        "teacher_steps": settings.teacher_steps,
        "seed": settings.seed,
        **{name: {"mean": s.mean, "stderr": s.stderr} for name, s in scores.items()},
        **result.claim(),
        "seconds": round(sum(result.seconds.values()), 1),
        "out": str(result.out),
    }


def table(points: list[dict]) -> str:
    lines = [
        "| steps (student) | teacher steps | seed | student | teacher | random | "
        "student - teacher | teacher - random | claim | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        cells = [f"{p[m]['mean']:.3f} +- {p[m]['stderr']:.3f}" for m in MODELS]
        lines.append(
            f"| {p['steps']} | {p['teacher_steps']} | {p['seed']} | {' | '.join(cells)} | "
            f"{p['student_vs_teacher']:+.1f} s.e. | "
            f"{p['teacher_vs_random']:+.1f} s.e. | "
            f"{'reached' if p['reached'] else 'not reached'} | {p['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    """Each gap (in standard errors) against the budget, a point per seed, and the claim's
    threshold."""
    lines = []
    for i, (key, label) in enumerate(
        (("student_vs_teacher", "student - teacher"), ("teacher_vs_random", "teacher - random"))
    ):
        steps = sorted({p["steps"] for p in points})
        mean = [(n, statistics.mean(p[key] for p in points if p["steps"] == n)) for n in steps]
        lines.append(Line(label + " (mean over seeds)", colour_of(i), mean))
    lines.append(Line("claim (3 s.e.)", colour_of(2), [(steps[0], 3.0), (steps[-1], 3.0)]))
    legend = [(line.label, line.colour) for line in lines]
    panel = Panel("gap on the motion benchmark (s.e.) against student steps", lines, markers=True)
    save_png(draw_panels([panel], legend=legend), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="claim-curve", help="folder for every budget's run")
    parser.add_argument("--budgets", help="comma-separated student step counts (default: per size)")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated training seeds run at each budget"
    )
    parser.add_argument(
        "--teacher-steps",
        type=positive_int,
        help="the teacher's steps at every budget (default: scaled with the student's)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="the quick start's --fast size")
    size.add_argument("--long", action="store_true", help="salt quickstart --long, for a CPU")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if not (args.smoke or args.long) and device.type != "cuda":
        print(
            "claim_curve: the default budgets are sized for a GPU; pass --long (hours on a "
            "CPU), --smoke (seconds, any machine) or --budgets with --device cpu",
            file=sys.stderr,
        )
        if not args.budgets:
            return 2
    size = "smoke" if args.smoke else "long" if args.long else "gpu"
    base, budgets = SIZES[size]
    if args.budgets:
        budgets = tuple(int(b) for b in args.budgets.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    points = []
    for steps in budgets:
        for seed in seeds:
            settings = attrs.evolve(
                scaled(base, steps, seed, args.teacher_steps), device=str(device)
            )
            name = f"steps_{steps}" + (f"_seed_{seed}" if len(seeds) > 1 else "")
            started = time.perf_counter()
            result = run_quickstart(out / name, settings, force=True, progress=False)
            points.append(row(settings, result))
            with (out / "curve.jsonl").open("a") as f:
                f.write(json.dumps(points[-1]) + "\n")
            took = time.perf_counter() - started
            print(f"steps {steps}, seed {seed}: done in {took:.0f} s", file=sys.stderr)
    plot(points, out / "curve.png")
    print(table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
