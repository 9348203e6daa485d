"""Clips per second of the quick start's teacher stage: eager or compiled, at any batch.

    python benchmarks/stage_speed.py                     # --long's teacher stage, batch 8
    python benchmarks/stage_speed.py --compile           # the same steps under torch.compile
    python benchmarks/stage_speed.py --batch-size 32     # 4x the clips a step
    python benchmarks/stage_speed.py --smoke             # any machine: seconds

It trains the pixel teacher of ``salt quickstart --long`` (vit_tiny at 8x64, future:0.5
masks; ``--smoke``: the ``--fast`` sizes) on the first ``--clips`` of the motion
benchmark's training clips for ``--clips-seen`` clips, in a temporary folder, and prints one
row: the median, lowest and highest clips/s over the logged windows after the first epoch
(the first draws every clip, so it measures the generator too) and the wall time, which
includes compiling. Threads are torch's: set ``OMP_NUM_THREADS``, and measure on an idle
machine. Nothing is asserted; the rows go in docs/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs
import torch

from salt.config import apply_overrides
from salt.metrics import read_series
from salt.quickstart import FAST, LONG, stage_config
from salt.train import train

# --clips, --clips-seen and --log-clips when not given: the --long teacher's steady state in
# ~1 minute on 2 cores, or seconds at --smoke.
SIZES = {"clips": 256, "clips_seen": 2400, "log_clips": 160}
SMOKE = {"clips": 8, "clips_seen": 32, "log_clips": 4}


def measure(args: argparse.Namespace, out: Path) -> dict:
    """Train the stage into ``out``; its clips/s after the first epoch and its wall time."""
    base = FAST if args.smoke else LONG
    settings = attrs.evolve(base, clips=args.clips, batch_size=args.batch_size, eval_points=0)
    steps = max(1, args.clips_seen // args.batch_size)
    cfg = stage_config(settings, out, "teacher", "pixels", steps, progress=False)
    every = max(1, args.log_clips // args.batch_size)
    cfg = apply_overrides(cfg, {"train.compile": args.compile, "train.log_every": every})
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    first_epoch = args.clips // args.batch_size
    speeds = [
        value
        for step, value in read_series(result.run_dir / "metrics.jsonl", ["clips_per_s"]).get(
            "clips_per_s", []
        )
        if step > first_epoch + every
    ]
    if not speeds:
        raise SystemExit("no logged window after the first epoch: raise --clips-seen")
    return {"speeds": speeds, "steps": steps, "wall": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, help="training clips, one epoch (default 256)")
    parser.add_argument("--clips-seen", type=int, help="clips the run trains on (default 2400)")
    parser.add_argument("--log-clips", type=int, help="clips per logged window (default 160)")
    parser.add_argument("--smoke", action="store_true", help="the --fast sizes: seconds")
    args = parser.parse_args(argv)
    for name, value in (SMOKE if args.smoke else SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    with tempfile.TemporaryDirectory() as tmp:
        row = measure(args, Path(tmp))
    speeds = row["speeds"]
    mode = "compiled" if args.compile else "eager"
    print(
        f"| {mode} | batch {args.batch_size} | {torch.get_num_threads()} thread(s) | "
        f"{statistics.median(speeds):.1f} clips/s (windows {min(speeds):.1f}-{max(speeds):.1f})"
        f" | {row['steps']} steps in {row['wall']:.1f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
