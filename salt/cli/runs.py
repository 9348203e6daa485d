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
    pl.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from salt.metrics import read_series
    from salt.plots import draw_runs_overlaid, save_png
    from salt.runs import find_runs, is_run

    # A folder of runs stands for its runs: `salt plot runs/` draws what `salt runs` lists.
    named = [
        str(r)
        for run in args.runs
        for r in (find_runs([run]) if Path(run).is_dir() and not is_run(Path(run)) else [run])
    ]
    series = {}
    for run in named:
        path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(
                f"{run}: no metrics.jsonl (give run directories, or their metrics.jsonl files)"
            )
        name = path.parent.name if path.parent.name not in series else str(path.parent)
        series[name] = read_series(path, keys=args.keys)
    if not any(series.values()):
        raise ValueError(f"none of {', '.join(args.keys)} is logged by {', '.join(args.runs)}")
    out = Path(args.out or (Path(named[0]) / "curves.png" if len(named) == 1 else "curves.png"))
    keys = [k for k in _expand(args.keys, series)]
    save_png(draw_runs_overlaid(series, keys=keys), out)
    print(f"plotted {', '.join(keys)} of {len(series)} run(s) to {out}")
    return 0


def _expand(patterns: list[str], series: dict) -> list[str]:
    """The logged keys matching ``patterns``, in the patterns' order."""
    from fnmatch import fnmatchcase

    found = list(dict.fromkeys(k for curves in series.values() for k in curves))
    return list(dict.fromkeys(k for p in patterns for k in found if fnmatchcase(k, p)))
