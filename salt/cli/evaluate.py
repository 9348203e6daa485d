"""``salt eval distill|probes|classify|curve``: frozen evaluation of runs and encoders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from salt.cli.options import (
    DEVICE,
    NO_PROGRESS,
    PROBE,
    WHITEN,
    given,
    nonneg_int,
    overrides_from,
    positive_float,
    positive_int,
)
from salt.config import build_config
from salt.progress import progress_bar

PROBE_CHOICES = {
    "attentive": ("attentive",),
    "linear": ("linear",),
    "both": ("attentive", "linear"),
}


def register_commands(commands) -> None:
    ev = commands.add_parser(
        "eval", help="evaluate runs: held-out distillation loss, temporal probes"
    )
    esub = ev.add_subparsers(dest="eval_command", required=True)
    add_distill(esub)
    add_probes(esub)
    add_classify(esub)
    add_curve(esub)


def with_baseline(encoder, config: dict, baseline: str, seed: int) -> dict:
    """The encoder, and with ``--baseline random`` an untrained one of its architecture."""
    from salt.eval.baseline import random_like

    models = {"encoder": encoder}
    if baseline == "random":
        models["random"] = random_like(encoder, architecture=config["architecture"], seed=seed)
    return models


def add_distill(esub) -> None:
    dl = esub.add_parser("distill", help="held-out masked-latent loss with seeded masks")
    dl.add_argument("run", help="run directory, RUN:best, RUN:STEP or a checkpoint file")
    dl.add_argument("--teacher", help="teacher spec (default: the run's teacher)")
    dl.add_argument("--data", help="held-out data spec (default: the run's data, held-out split)")
    dl.add_argument(
        "--batches", type=positive_int, default=8, help="held-out batches to score (default 8)"
    )
    dl.add_argument("--batch-size", type=positive_int, help="clips per batch (default: the run's)")
    dl.add_argument("--seed", type=int, default=0, help="fixes the clips' masks")
    dl.add_argument("--device", default="auto", help=DEVICE)
    dl.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the run's config for the evaluation (repeatable)",
    )
    dl.add_argument("--json", action="store_true", help="print JSON")
    dl.add_argument(
        "--record",
        metavar="EXPORT",
        help="also record the loss into this export of the run (its config.json and model "
        "card) or into the run",
    )
    dl.set_defaults(func=cmd_eval_distill)


def cmd_eval_distill(args: argparse.Namespace) -> int:
    from salt.eval.distill import distill_loss

    fields = {"teacher": "teacher.spec", "data": "data.spec", "batch_size": "train.batch_size"}
    overrides = overrides_from(args, fields)
    if args.record:
        record_target(args.record)  # refused before the loss is computed
    report = distill_loss(
        args.run, overrides, batches=args.batches, seed=args.seed, device=args.device
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if args.record:
        record(args.record, [report.evaluation()], step=report.step, quiet=args.json)
    return 0


def record_target(spec: str) -> tuple[str, Path]:
    """Where --record writes: an export folder (its config.json and model card), or the
    run a checkpoint belongs to (``RUN/evaluations.json``, shown by ``salt runs``);
    anything else is refused before any work."""
    from salt.checkpoints import resolve_checkpoint, run_dir_of
    from salt.export import CONFIG, WEIGHTS

    folder = Path(spec)
    if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
        return "export", folder
    try:
        return "run", run_dir_of(resolve_checkpoint(spec))
    except (FileNotFoundError, ValueError):
        raise ValueError(
            f"--record {spec}: neither an export folder ({CONFIG} + {WEIGHTS}) nor a run; "
            f"record into an export (`salt export RUN --out DIR`) or the run itself"
        ) from None


def record(spec: str, entries: list[dict], step: int | None = None, quiet: bool = False):
    """Record ``entries`` (of the checkpoint at ``step``) into an export or a run; into an
    export of another step they are refused (they would describe other weights)."""
    from datetime import datetime

    from salt.export import CONFIG, record_evaluation
    from salt.io import read_json
    from salt.runs import record_run_evaluation

    kind, target = record_target(spec)
    stamp = datetime.now().isoformat(timespec="seconds")
    entries = [{**e, "step": step, "recorded_at": stamp} for e in entries]
    if kind == "run":
        where = record_run_evaluation(target, entries)
    else:
        exported = (read_json(target / CONFIG).get("summary") or {}).get("checkpoint_step")
        if step is not None and exported is not None and int(exported) != step:
            raise ValueError(
                f"--record {spec}: that export holds step {exported}'s encoder, but the "
                f"result is step {step}'s; record into an export of the same checkpoint "
                f"(salt export RUN:{step} --out DIR)"
            )
        where = record_evaluation(target, entries)
    if not quiet:
        print(f"recorded {len(entries)} result(s) into {where}")


def add_probes(esub) -> None:
    pr = esub.add_parser("probes", help="temporal probe suite on frozen, mean-pooled tokens")
    pr.add_argument(
        "encoder", help="exported encoder directory, run directory, RUN:best or checkpoint"
    )
    pr.add_argument(
        "--data",
        default="synthetic",
        help="the videos the tasks are built from: synthetic[:N] (built-in moving shapes, "
        "default), motion[:N] (the motion benchmark's held-out clips), a folder, CSV manifest, "
        "SSv2 list or lerobot:PATH",
    )
    pr.add_argument(
        "--baseline",
        choices=["none", "random"],
        default="none",
        help="random: run the same suite on a randomly initialized encoder too",
    )
    pr.add_argument("--probe", choices=["linear", "attentive"], default="linear", help=PROBE)
    pr.add_argument(
        "--videos", type=positive_int, help="videos per task (default: 256, 5-fold cross-validated)"
    )
    pr.add_argument("--seed", type=int, default=0, help="fixes videos, folds and probes")
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    pr.set_defaults(func=cmd_eval_probes)


def cmd_eval_probes(args: argparse.Namespace) -> int:
    from salt.eval.temporal import NUM_VIDEOS, clip_settings, compare, run_probes
    from salt.export import load_encoder

    encoder, config = load_encoder(args.encoder)
    models = with_baseline(encoder, config, args.baseline, seed=args.seed)
    reports = {}
    for name, model in models.items():
        show = not (args.no_progress or args.json)
        with progress_bar(f"probes ({name})", "task", show, unit="clip") as advance:
            reports[name] = run_probes(
                model,
                args.data,
                num_videos=args.videos or NUM_VIDEOS,
                seed=args.seed,
                probe=args.probe,
                **clip_settings(config),
                progress=advance,
            )
    if args.json:
        print(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))
    elif len(reports) == 1:
        print(reports["encoder"].table())
    else:
        print(compare(reports))
    return 0


def add_classify(esub) -> None:
    cl = esub.add_parser(
        "classify",
        help="frozen evaluation on labelled clips: attentive and linear probes (V-JEPA protocol)",
    )
    cl.add_argument(
        "encoder",
        help="exported encoder directory, run directory, RUN:best or checkpoint; random:ARCH is an "
        "untrained student at the recipe's 16x224 geometry (e.g. to size a run with --dry-run)",
    )
    cl.add_argument(
        "--data",
        help="labelled data: 'motion[:N]' (the built-in motion benchmark, default), "
        "'motion-natural[:N]' (it with photo textures), a folder with train/ and test/ class "
        "folders, or an SSv2 train.json next to validation.json",
    )
    cl.add_argument("--train", help="training clips: folder of class folders, CSV or SSv2 list")
    cl.add_argument("--test", help="held-out clips, same kinds as --train")
    cl.add_argument(
        "--probe", choices=sorted(PROBE_CHOICES), default="both", help=PROBE + "; both (default)"
    )
    cl.add_argument(
        "--baseline",
        choices=["none", "random"],
        default="none",
        help="random: the same protocol on a randomly initialized encoder too",
    )
    cl.add_argument("--seeds", type=positive_int, help="probe seeds (default 3)")
    cl.add_argument("--epochs", type=positive_int, help="probe training epochs (default 20)")
    cl.add_argument("--lr", type=positive_float, help="probe peak learning rate (default 1e-3)")
    cl.add_argument(
        "--batch-size", type=positive_int, help="clips per encoder forward (default 16)"
    )
    cl.add_argument("--views", type=positive_int, help="temporal views per test video (default 1)")
    cl.add_argument(
        "--spatial-views",
        type=positive_int,
        help="crops along the long side per temporal view (default 1; V-JEPA uses 3)",
    )
    cl.add_argument(
        "--workers", type=nonneg_int, default=2, help="DataLoader workers decoding clips"
    )
    cl.add_argument(
        "--feature-memory",
        type=positive_float,
        help="GB of tokens kept in memory; above it the encoder runs every epoch (default 4)",
    )
    cl.add_argument("--whiten", action="store_true", help=WHITEN)
    cl.add_argument("--max-train", type=positive_int, help="use at most this many training clips")
    cl.add_argument("--max-test", type=positive_int, help="use at most this many test clips")
    cl.add_argument("--device", default="auto", help=DEVICE)
    cl.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sizes, memory and compute of the evaluation and exit",
    )
    cl.add_argument("--json", action="store_true", help="print JSON")
    cl.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    cl.add_argument(
        "--record",
        action="store_true",
        help="record the top-1 scores into the evaluated export (its config.json and model "
        "card, as model-index entries on the Hub) or run (RUN/evaluations.json, shown by "
        "salt runs)",
    )
    cl.set_defaults(func=cmd_eval_classify)


def cmd_eval_classify(args: argparse.Namespace) -> int:
    from salt.distributed import resolve_device
    from salt.eval.classify import classify, compare, encoder_splits, plan_lines

    if args.data and (args.train or args.test):
        raise ValueError(
            f"give either --data ({args.data}) or --train/--test, not both: with --train and "
            f"--test, --data would be ignored"
        )
    if args.record:
        record_target(args.encoder)
    encoder, config = _classify_encoder(args.encoder, meta=args.dry_run)
    settings = probe_settings(args, probes=PROBE_CHOICES[args.probe])
    splits = encoder_splits(config, args.data or "motion", args.train, args.test, settings)
    if args.dry_run:
        print("\n".join(plan_lines(encoder, config, splits, settings)))
        print("dry run: encoder, data and settings check out; nothing was trained")
        return 0
    device = resolve_device(args.device)
    models = with_baseline(encoder, config, args.baseline, seed=0)
    reports = {}
    for name, model in models.items():
        show = not (args.no_progress or args.json)
        with progress_bar(f"classify ({name})", "stage", show, unit="clip") as advance:
            reports[name] = classify(
                model,
                splits,
                config["mean"],
                config["std"],
                settings,
                name=name,
                device=device,
                progress=advance,
            )
    if args.json:
        print(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))
    else:
        print(compare(reports))
    if args.record:  # the encoder's own scores, never the random baseline's
        step = (config.get("summary") or {}).get("checkpoint_step")
        record(args.encoder, reports["encoder"].evaluations(), step, quiet=args.json)
    return 0


# ClassifySettings fields by the flag that sets them (classify and curve share them).
SETTINGS_FLAGS = {
    "seeds": "seeds",
    "epochs": "epochs",
    "lr": "lr",
    "batch_size": "batch_size",
    "views": "views",
    "spatial_views": "spatial_views",
    "workers": "workers",
    "feature_memory": "feature_memory_gb",
    "max_train": "max_train",
    "max_test": "max_test",
    "whiten": "whiten",
}


def probe_settings(args: argparse.Namespace, **fixed):
    """The probes' settings from the flags this command has and the user gave (a flag
    left off keeps ClassifySettings' default; ``--whiten`` is only ever switched on)."""
    from salt.eval.classify import ClassifySettings

    knobs = {field: getattr(args, flag, None) for flag, field in SETTINGS_FLAGS.items()}
    knobs["whiten"] = knobs["whiten"] or None
    return ClassifySettings(**given(knobs), **fixed)


def _classify_encoder(spec: str, meta: bool = False):
    """An export, run or checkpoint; or ``random:ARCH``, an untrained student at the
    recipe's clip geometry (for sizing a run with ``--dry-run``: built on the meta device)."""
    import torch

    from salt.export import build_encoder, encoder_config, load_encoder

    if not spec.startswith("random:"):
        return load_encoder(spec)
    arch = spec[len("random:") :]
    config = encoder_config(build_config(overrides={"student.name": arch}).to_dict())
    with torch.random.fork_rng(devices=[]), torch.device("meta" if meta else "cpu"):
        torch.manual_seed(0)
        return build_encoder(config).eval(), config


def add_curve(esub) -> None:
    cu = esub.add_parser(
        "curve",
        help="held-out distillation loss and probe top-1 for every checkpoint of a run, "
        "their Spearman correlation and a PNG",
    )
    cu.add_argument("run", help="run directory (keep its checkpoints: train.keep_checkpoints=0)")
    cu.add_argument("--data", default="motion:448", help="labelled data for the probe")
    cu.add_argument("--probe", choices=["attentive", "linear"], default="attentive", help=PROBE)
    cu.add_argument("--teacher", help="teacher for the distillation loss (default: the run's)")
    cu.add_argument("--distill-data", help="held-out data for the distillation loss")
    cu.add_argument(
        "--batches", type=positive_int, default=8, help="distillation batches per checkpoint"
    )
    cu.add_argument("--seeds", type=positive_int, help="probe seeds (default 3)")
    cu.add_argument("--epochs", type=positive_int, help="probe epochs (default 20)")
    cu.add_argument("--lr", type=positive_float, help="probe peak learning rate (default 1e-3)")
    cu.add_argument("--whiten", action="store_true", help=WHITEN)
    cu.add_argument("--max-train", type=positive_int, help="label at most this many training clips")
    cu.add_argument(
        "--workers", type=nonneg_int, default=2, help="DataLoader workers decoding clips"
    )
    cu.add_argument("--seed", type=int, default=0, help="fixes the distillation masks")
    cu.add_argument("--png", help="where to draw the curve (default: RUN/distill_vs_probe.png)")
    cu.add_argument("--device", default="auto", help=DEVICE)
    cu.add_argument("--json", action="store_true", help="print JSON")
    cu.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    cu.set_defaults(func=cmd_eval_curve)


def cmd_eval_curve(args: argparse.Namespace) -> int:
    from salt.distributed import resolve_device
    from salt.eval.curve import checkpoint_curve, draw_curve

    settings = probe_settings(args)
    fields = {"teacher": "teacher.spec", "distill_data": "data.spec"}
    show = not (args.no_progress or args.json)
    with progress_bar("curve", "stage", show, unit="clip") as advance:
        report = checkpoint_curve(
            args.run,
            data=args.data,
            probe=args.probe,
            settings=settings,
            distill_overrides=overrides_from(args, fields),
            distill_batches=args.batches,
            seed=args.seed,
            device=resolve_device(args.device),
            progress=advance,
        )
    png = draw_curve(report, Path(args.png or Path(report.run) / "distill_vs_probe.png"))
    if args.json:
        print(json.dumps({**report.to_dict(), "png": str(png)}, indent=2))
    else:
        print(report.table())
        print(f"plot: {png}")
    return 0
