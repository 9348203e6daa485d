"""``salt train``: the main job - its options, and the config they resolve to."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from salt.cli.options import (
    FLAG_FIELDS,
    add_config_flags,
    overrides_from,
    pick_profile,
    positive_int,
    run_name,
)
from salt.config import Config, apply_overrides, build_config

log = logging.getLogger("salt")


def register_commands(commands) -> None:
    t = commands.add_parser("train", help="train a student to predict a frozen teacher's latents")
    t.add_argument("--student", help="student spec, e.g. vit_l (see `salt plugins`)")
    t.add_argument("--teacher", help="teacher spec, e.g. cached:v1huge, pixels, random:vit_tiny")
    t.add_argument("--data", help="data spec; 'synthetic' or 'synthetic:N' is the built-in data")
    t.add_argument("--steps", type=positive_int, help="optimizer steps")
    t.add_argument("--epochs", type=positive_int, help="passes over the data (overrides --steps)")
    t.add_argument("--batch-size", type=positive_int, help="clips per process per micro-step")
    t.add_argument(
        "--run-name", type=run_name, help="run directory name (default: student-teacher-time)"
    )
    t.add_argument("--out", help="folder holding run directories (default: runs)")
    add_config_flags(t)
    t.add_argument(
        "--resume",
        metavar="RUN_OR_CHECKPOINT",
        help="continue a run from its newest (or the given) checkpoint; 'auto': continue this "
        "command's run (--run-name) if it has a checkpoint, else start it (preemptible jobs)",
    )
    t.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="train from a cached teacher whose build did not finish, on the clips it has",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, data, teacher and (under torchrun) the process group, print "
        "the run's plan and exit without training",
    )
    t.add_argument(
        "--gpu-memory",
        metavar="SIZE",
        help="with --dry-run: the GPU's memory (e.g. 80GB); prints whether the batch fits and "
        "the largest batch per GPU that does",
    )
    t.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (a valid --config file) and exit",
    )
    t.add_argument(
        "--format",
        choices=["json", "yaml"],
        default="json",
        help="--print-config's format (default json)",
    )
    t.set_defaults(func=cmd_train)


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    extra = {}
    if args.steps is not None and args.epochs is None:
        extra["train.epochs"] = 0  # an explicit --steps beats epochs from a file
    if args.no_progress:
        extra["train.progress"] = False
    if args.allow_incomplete:
        extra["data.allow_incomplete_cache"] = True
    return overrides_from(args, FLAG_FIELDS, extra)


def resolve_train_config(args: argparse.Namespace) -> Config:
    """Recipe -> profile -> --config file -> flags and --set; a resume starts from its run."""
    overrides = _train_overrides(args)
    if args.resume and args.resume != "auto":
        from salt.train import config_from_checkpoint

        cfg = config_from_checkpoint(args.resume)
        return apply_overrides(cfg, overrides) if overrides else cfg
    profile = pick_profile(args, overrides)
    return build_config(profile=profile, file=args.config, overrides=overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from salt.train import dry_run, train

    cfg = resolve_train_config(args)
    if args.print_config:
        from salt.registry import check_names

        check_names(cfg)
        print(cfg.dumps(args.format))
        return 0
    if args.gpu_memory and not args.dry_run:
        raise ValueError("--gpu-memory sizes a run for --dry-run; add --dry-run")
    if args.dry_run:
        from salt.memory import parse_size

        memory = parse_size(args.gpu_memory) if args.gpu_memory else None
        plan = dry_run(cfg)
        if plan.rank == 0:
            print("\n".join(plan.lines() + plan.memory.lines(memory)))
            print("dry run: config, data, teacher and masks check out; nothing was trained")
        return 0
    if cfg.profile == "demo" and not args.resume:
        log.info(
            "profile demo: %s on %dx%dpx clips of %s (use --profile recipe for the full recipe)",
            cfg.student.name,
            cfg.data.num_frames,
            cfg.data.image_size,
            cfg.data.spec,
        )
    result = train(cfg, resume=args.resume)
    s = result.summary
    if s.get("steps_logged"):
        print(
            f"run {result.run_dir}: step {result.step}, loss {s['first_loss']:.4f} -> "
            f"{s['last_loss']:.4f} (min {s['min_loss']:.4f} at step {s['min_loss_step']}"
            f"{', late rebound' if s['late_rebound'] else ''})"
        )
    if "best_step" in s:
        print(
            f"best held-out loss {s['best_val_loss']:.4f} at step {s['best_step']}: "
            f"{result.run_dir / 'checkpoints' / 'best.pt'} (salt export {result.run_dir} "
            f"--checkpoint best)"
        )
    if result.stopped_by:
        print(f"stopped by {result.stopped_by}; resume with: salt train --resume {result.run_dir}")
    return 0
