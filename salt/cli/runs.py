"""``salt runs`` and ``salt plot``: compare runs as a table, or draw their curves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PLOT_KEYS = ("loss", "loss/*", "val_loss", "lr", "wd", "grad_norm", "clips_per_s", "mfu")


def register_commands(commands) -> None:
    rs = commands.add_parser(
        "runs",
        help="compare runs: steps, epochs, min/last loss, rebound, best held-out loss, time",
    )
    rs.add_argument("paths", nargs="*", help="run folders or folders of runs (default: runs)")
    rs.add_argument(
        "--sort",
        default="run",
        help="order by a column: run, step, epochs, min_loss, last_loss, best_val_loss, "
        "train_seconds, clips_per_s, ... (default run)",
    )
    rs.add_argument("--reverse", action="store_true", help="sort in descending order")
    rs.add_argument("--json", action="store_true", help="print JSON")
    rs.set_defaults(func=cmd_runs)
    add_plot(commands)


def cmd_runs(args: argparse.Namespace) -> int:
    from salt.runs import read_runs, table

    rows = read_runs(args.paths or ["runs"], sort=args.sort, reverse=args.reverse)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


def add_plot(commands) -> None:
    pl = commands.add_parser(
        "plot", help="draw runs' loss (and terms), lr/wd, grad norm, clips/s and MFU to a PNG"
    )
    pl.add_argument(
        "runs",
        nargs="+",
        help="run directories, folders of runs (or metrics.jsonl files), overlaid",
    )
    pl.add_argument(
        "--keys",
        nargs="+",
        default=list(PLOT_KEYS),
        help="metrics to draw, one panel each; shell patterns (default: "
        + " ".join(PLOT_KEYS)
        + ")",
    )
    pl.add_argument(
        "--out", help="the PNG (default: RUN/curves.png for one run, curves.png for several)"
    )
    pl.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="exponential moving average of the curves, the weight on the past in [0, 1): "
        "0.9 is smooth, 0 (default) draws them raw; the raw curve stays faint behind "
        "(lr, wd and val_loss are always raw)",
    )
    pl.add_argument(
        "--log", action="store_true", help="log-scale y on the loss panels (loss, terms, val_loss)"
    )
    pl.add_argument(
        "--x",
        choices=("step", "epoch"),
        default="step",
        help="align the runs by step (default) or by epoch: passes over each run's training "
        "clips, from its summary.json (written when a run ends or is stopped)",
    )
    pl.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from salt.plots import check_smoothing, draw_runs_overlaid, save_png
    from salt.runs import metrics_files, read_curves

    check_smoothing(args.smooth)  # before reading anything
    files = metrics_files(args.runs)
    series = read_curves(files, args.keys, x=args.x)
    if not any(series.values()):
        raise ValueError(f"none of {', '.join(args.keys)} is logged by {', '.join(args.runs)}")
    out = Path(args.out or (files[0].parent / "curves.png" if len(files) == 1 else "curves.png"))
    keys = [k for k in _expand(args.keys, series)]
    figure = draw_runs_overlaid(series, keys, smooth=args.smooth, log_loss=args.log, x=args.x)
    save_png(figure, out)
    print(f"plotted {', '.join(keys)} of {len(series)} run(s) to {out}")
    return 0


def _expand(patterns: list[str], series: dict) -> list[str]:
    """The logged keys matching ``patterns``, in the patterns' order."""
    from fnmatch import fnmatchcase

    found = list(dict.fromkeys(k for curves in series.values() for k in curves))
    return list(dict.fromkeys(k for p in patterns for k in found if fnmatchcase(k, p)))
