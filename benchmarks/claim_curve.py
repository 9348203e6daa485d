"""SALT's claim against the training budget: the quick start at growing step counts.

    python benchmarks/claim_curve.py --device auto               # a GPU: the budgets below
    python benchmarks/claim_curve.py --long --device cpu         # 2 CPU cores: ~3 hours
    python benchmarks/claim_curve.py --smoke --device cpu        # any machine: seconds

For each budget (teacher steps = student steps) it runs the whole quick start (pixel
teacher, cache, student, probes, the motion benchmark's attentive probe for student,
teacher and random) into ``OUT/steps_N`` and prints one row: the three top-1 scores, the
gaps student - teacher and teacher - random in standard errors of the difference (probe
seeds and test clips counted, as in the quick start's table), whether the claim (>= 3 each)
is reached, and the wall time. Each row is also appended to ``OUT/curve.jsonl`` as soon as
its budget finishes, so a run cut short keeps what it measured, and ``OUT/curve.png``
plots top-1 against steps. Nothing is asserted; the rows go in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import attrs

from salt.distributed import resolve_device
from salt.plots import Line, Panel, colour_of, draw_panels, save_png
from salt.quickstart import FAST, LONG, MODELS, QuickstartSettings, run_quickstart

# A GPU box (16 cores drawing clips): every 8x112 clip kept in memory by each worker.
GPU = QuickstartSettings(
    data="motion",
    clips=2048,
    batch_size=64,
    workers=12,
    classify_clips=1792,
    classify_epochs=20,
)
GPU_BUDGETS = (1000, 3000, 6000)
SMOKE_BUDGETS = (2, 4)
# salt quickstart --long (future-prediction masks, 8x64, low-shot whitened probe) on a CPU.
LONG_BUDGETS = (1500, 3000, 6000)
SIZES = {
    "gpu": (GPU, GPU_BUDGETS),
    "long": (LONG, LONG_BUDGETS),
    "smoke": (FAST, SMOKE_BUDGETS),
}


def row(steps: int, result) -> dict:
    """The curve's point for one finished quick start."""
    scores = {name: result.classify[name].score("attentive") for name in MODELS}
    return {
        "steps": steps,
        **{name: {"mean": s.mean, "stderr": s.stderr} for name, s in scores.items()},
        **result.claim(),
        "seconds": round(sum(result.seconds.values()), 1),
        "out": str(result.out),
    }


def table(points: list[dict]) -> str:
    lines = [
        "| steps (teacher = student) | student | teacher | random | student - teacher | "
        "teacher - random | claim | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        cells = [f"{p[m]['mean']:.3f} +- {p[m]['stderr']:.3f}" for m in MODELS]
        lines.append(
            f"| {p['steps']} | {' | '.join(cells)} | {p['student_vs_teacher']:+.1f} s.e. | "
            f"{p['teacher_vs_random']:+.1f} s.e. | "
            f"{'reached' if p['reached'] else 'not reached'} | {p['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    lines = [
        Line(m, colour_of(i), [(p["steps"], p[m]["mean"]) for p in points])
        for i, m in enumerate(MODELS)
    ]
    legend = [(line.label, line.colour) for line in lines]
    panel = Panel("motion benchmark top-1 (attentive probe)", lines, markers=True)
    save_png(draw_panels([panel], legend=legend), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="claim-curve", help="folder for every budget's run")
    parser.add_argument("--budgets", help="comma-separated step counts (default: per size)")
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
    points = []
    for steps in budgets:
        settings = attrs.evolve(base, teacher_steps=steps, student_steps=steps, device=str(device))
        started = time.perf_counter()
        result = run_quickstart(out / f"steps_{steps}", settings, force=True, progress=False)
        points.append(row(steps, result))
        with (out / "curve.jsonl").open("a") as f:
            f.write(json.dumps(points[-1]) + "\n")
        print(f"steps {steps}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    plot(points, out / "curve.png")
    print(table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
