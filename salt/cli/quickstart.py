"""``salt quickstart``: the whole pipeline on built-in data - its presets and knobs."""

from __future__ import annotations

import argparse
import logging
import sys

from salt.cli.options import given, nonneg_int, positive_int
from salt.config import BUILT_IN, MOTION_BENCHMARKS, STUDENT_CHECKPOINTS, TARGET_NORMS


def register_commands(commands) -> None:
    q = commands.add_parser(
        "quickstart",
        help="the whole SALT story on built-in data on CPU: teacher, cache, student, eval, probes, classify, export",
    )
    q.add_argument(
        "--out", default="quickstart", help="folder for everything (default: quickstart)"
    )
    q.add_argument("--force", action="store_true", help="replace an earlier quickstart in --out")
    preset = q.add_mutually_exclusive_group()
    preset.add_argument(
        "--fast", action="store_true", help="tiny sizes: seconds, not minutes (for tests)"
    )
    preset.add_argument(
        "--demo",
        action="store_true",
        help="the pipeline at 8x112 on the synthetic world in ~8.5 minutes on 2 CPU cores: 300 "
        "teacher and 300 student steps, a raw-token probe on motion:224 - too short to show "
        "the ordering",
    )
    preset.add_argument(
        "--long",
        action="store_true",
        help="SALT's claim, student > teacher > random by >= 3 standard errors each "
        "(docs/results.md): the default recipe with 9000 student steps instead of 6000 (~42 "
        "minutes alone on 2 CPU cores, against the default's ~34)",
    )
    add_knobs(q)
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="check the settings, data and masks and print each stage's size; train nothing",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quickstart)


def add_knobs(q: argparse.ArgumentParser) -> None:
    """What a quickstart may change, each a field of QuickstartSettings (``_knobs``)."""
    q.add_argument(
        "--teacher-steps",
        type=positive_int,
        help="teacher training steps (default 4000; --demo: 300)",
    )
    q.add_argument(
        "--student-steps",
        type=positive_int,
        help="student training steps (default 6000; --long: 9000; --demo: 300)",
    )
    q.add_argument("--probe-videos", type=positive_int, help="videos per probe task (at least 4)")
    q.add_argument(
        "--classify-clips",
        type=positive_int,
        help="motion-benchmark training clips (motion:N, at least 14; N/2 more are tested; default "
        "14336; --demo: 224)",
    )
    q.add_argument(
        "--classify-max-train",
        type=nonneg_int,
        help="label only the first N motion-benchmark training clips (low-shot; 0: all; default "
        "448; --demo: 0)",
    )
    q.add_argument(
        "--mask",
        help="both runs' masker, as mask.name: future:0.5 (default), multiblock (--demo), "
        "tube:0.9 ...",
    )
    q.add_argument(
        "--target-norm",
        choices=TARGET_NORMS,
        help="the student's targets, as loss.target_norm: the teacher's latents as they are "
        "(none; --demo), standardized per token (layer) or per channel over a clip (instance, "
        "default)",
    )
    q.add_argument(
        "--teacher-warmup",
        type=nonneg_int,
        help="the teacher's warmup steps, as optim.warmup_steps (at most half of its steps; "
        "default 400; --demo: 10)",
    )
    q.add_argument(
        "--student-warmup",
        type=nonneg_int,
        help="the student's warmup steps, as optim.warmup_steps (at most half of its steps; "
        "default 1200; --demo: 10)",
    )
    q.add_argument(
        "--image-size", type=positive_int, help="clip height and width (default 64; --demo: 112)"
    )
    q.add_argument(
        "--data",
        choices=BUILT_IN,
        help="training data of both runs: the motion benchmark's training clips, unlabelled "
        "(default), them with photo textures, or the built-in synthetic world (--demo)",
    )
    q.add_argument(
        "--benchmark",
        choices=MOTION_BENCHMARKS,
        help="the classify stage's labelled clips: the motion benchmark (default) or it with "
        "photo textures (motion-natural)",
    )
    q.add_argument("--batch-size", type=positive_int, help="clips per training step (default 8)")
    q.add_argument(
        "--seed",
        type=nonneg_int,
        help="seed of both runs (init, data order, masks), the random encoder, the held-out "
        "loss's clips and the temporal probes' videos (default 0): another training of the "
        "same recipe; the motion benchmark and its probe seeds stay the same",
    )
    q.add_argument("--clips", type=positive_int, help="training clips (default 2048; --demo: 512)")
    q.add_argument("--workers", type=nonneg_int, help="DataLoader workers making clips (default 1)")
    q.add_argument(
        "--device",
        help="cpu (default), auto (a GPU when there is one), cuda ...: both runs, the cache, "
        "the distillation loss and the classify probes",
    )
    q.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        help="probe the motion benchmark on ZCA-whitened tokens (default; --no-whiten: raw "
        "tokens, V-JEPA's protocol, as --demo does)",
    )

    add_checkpoint_knobs(q)


def add_checkpoint_knobs(q: argparse.ArgumentParser) -> None:
    """The student's held-out loss, the checkpoints it keeps and the one that is scored."""
    q.add_argument(
        "--eval-points",
        type=nonneg_int,
        help="times the student measures its held-out loss, keeping the lowest as best.pt "
        "(default 18; --demo: 12; 0: never)",
    )
    q.add_argument(
        "--student-checkpoints",
        type=positive_int,
        help="checkpoints the student keeps, evenly spaced (default 6; --demo: 1)",
    )
    q.add_argument(
        "--student-checkpoint",
        choices=STUDENT_CHECKPOINTS,
        help="the student checkpoint the evaluations score and the export writes: the run's "
        "best by held-out loss, picked without labels (default; the last when --eval-points "
        "is 0), or its last",
    )


def cmd_quickstart(args: argparse.Namespace) -> int:
    import attrs

    from salt.quickstart import DEMO, FAST, LONG, STAGES, QuickstartSettings, run_quickstart

    presets = {"fast": FAST, "demo": DEMO, "long": LONG}
    settings = next((v for k, v in presets.items() if getattr(args, k)), QuickstartSettings())
    settings = attrs.evolve(settings, **given(_knobs(args)))
    if args.dry_run:
        from salt.quickstart import plan_quickstart

        print("\n".join(plan_quickstart(args.out, settings, force=args.force)))
        print("dry run: config, data, masks and the benchmark check out; nothing was trained")
        return 0
    # The stage headers and bars tell the story; the stages' own start-up lines would bury it.
    quiet = [] if args.verbose else ["salt.train", "salt.cache", "salt.eval"]
    levels = {name: logging.getLogger(name).level for name in quiet}

    def on_stage(number: int, description: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"[{number}/{len(STAGES)}] {description}", file=sys.stderr)

    try:
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
        result = run_quickstart(
            args.out, settings, force=args.force, progress=not args.no_progress, on_stage=on_stage
        )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    _report(result)
    return 0


def _knobs(args: argparse.Namespace) -> dict:
    return {
        "teacher_steps": args.teacher_steps,
        "student_steps": args.student_steps,
        "probe_videos": args.probe_videos,
        "classify_clips": args.classify_clips,
        "classify_whiten": args.whiten,
        "classify_max_train": args.classify_max_train,
        "mask": args.mask,
        "target_norm": args.target_norm,
        "teacher_warmup": args.teacher_warmup,
        "student_warmup": args.student_warmup,
        "image_size": args.image_size,
        "data": args.data,
        "benchmark": args.benchmark,
        "device": args.device,
        "batch_size": args.batch_size,
        "clips": args.clips,
        "eval_points": args.eval_points,
        "student_checkpoints": args.student_checkpoints,
        "student_checkpoint": args.student_checkpoint,
        "workers": args.workers,
        "seed": args.seed,
    }


def _report(result) -> None:
    print(result.table())
    print(f"\neverything is under {result.out}/:")
    for label, path in (
        ("teacher run", result.teacher_run),
        ("teacher encoder", result.teacher_export),
        ("latent cache", result.cache),
        ("student run", result.student_run),
        ("student encoder", result.student_export),
        ("loss curves", result.plot),
        ("numbers (JSON)", result.report),
    ):
        print(f"  {label:<16} {path}")
    print(
        f"the student export reloads with VideoEncoder.from_pretrained({str(result.student_export)!r}) "
        f"and gives the checkpoint's tokens (max difference {result.reload_max_diff:.1e})"
    )
