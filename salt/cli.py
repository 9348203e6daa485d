"""The ``salt`` command line. Only this module knows about argv."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from salt import __version__
from salt.config import TARGET_NORMS, Config, apply_overrides, build_config, parse_value

log = logging.getLogger("salt")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: bool, progress: bool = True) -> None:
    handler = _TqdmHandler()
    if progress and not verbose:
        # The progress bar already shows the loss; step lines still reach the run's log file.
        handler.addFilter(lambda record: record.name != "salt.metrics")
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("salt")
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _TqdmHandler)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-4), got {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def _typed(convert, ok, what: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _typed(int, lambda v: v > 0, "a positive integer")
nonneg_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
# An empty --run-name would quietly mean "generate one"; run.name checks the rest.
run_name = _typed(str, lambda v: v != "", "a run folder name")


# Flags that stand for config fields, by argparse destination.
FLAG_FIELDS = {
    "student": "student.name",
    "teacher": "teacher.spec",
    "data": "data.spec",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "run_name": "run.name",
    "out": "run.out",
    "device": "train.device",
}


def overrides_from(
    args: argparse.Namespace, fields: dict[str, str] = FLAG_FIELDS, extra: dict | None = None
) -> dict[str, Any]:
    """Config overrides from the command line: the fields the user's flags set (only those
    given; ``fields`` maps a flag's argparse destination to its field), then ``extra``,
    then ``--set`` (later wins)."""
    overrides = {
        field: getattr(args, dest)
        for dest, field in fields.items()
        if getattr(args, dest, None) is not None
    }
    overrides.update(extra or {})
    overrides.update(_parse_sets(getattr(args, "set", None) or []))
    return overrides


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    extra = {}
    if args.steps is not None and args.epochs is None:
        extra["train.epochs"] = 0  # an explicit --steps beats epochs from a file
    if args.no_progress:
        extra["train.progress"] = False
    if args.allow_incomplete:
        extra["data.allow_incomplete_cache"] = True
    return overrides_from(args, FLAG_FIELDS, extra)


def _pick_profile(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    if args.profile != "auto":
        return args.profile
    import torch

    device = overrides.get("train.device", getattr(args, "device", None) or "auto")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return "demo" if on_cpu else "recipe"


def resolve_train_config(args: argparse.Namespace) -> Config:
    """Recipe -> profile -> --config file -> flags and --set; a resume starts from its run."""
    overrides = _train_overrides(args)
    if args.resume and args.resume != "auto":
        from salt.train import config_from_checkpoint

        cfg = config_from_checkpoint(args.resume)
        return apply_overrides(cfg, overrides) if overrides else cfg
    profile = _pick_profile(args, overrides)
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


def cmd_plugins(args: argparse.Namespace) -> int:
    from salt.plugins import plugin_hooks, plugin_versions
    from salt.registry import REGISTRIES

    versions = plugin_versions()
    hooks = plugin_hooks()
    report = {
        "plugins": [
            {"name": name, "version": versions.get(name), "hooks": hooks.get(name, [])}
            for name in sorted(versions)
        ],
        "registries": {
            kind: [
                {
                    "name": e.name,
                    "aliases": list(e.aliases),
                    "description": e.description,
                    "plugin": e.plugin,
                    "version": versions.get(e.plugin),
                }
                for e in sorted(reg.entries().values(), key=lambda e: e.name)
            ]
            for kind, reg in REGISTRIES.items()
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for kind, entries in report["registries"].items():
        print(f"{kind}:")
        if not entries:
            print("  (none registered)")
        width = max((len(e["name"]) for e in entries), default=0)
        for e in entries:
            alias = f" (alias {', '.join(e['aliases'])})" if e["aliases"] else ""
            who = f"[{e['plugin']} {e['version'] or ''}]".replace(" ]", "]")
            print(f"  {e['name']:<{width}}  {who}  {e['description']}{alias}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from salt.doctor import run_checks

    results = run_checks()
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            print(f"[{r.status:>4}] {r.name}: {r.detail}")
            if r.fix:
                print(f"       fix: {r.fix}")
    return 1 if any(r.status == "FAIL" for r in results) else 0


def _cache_path(args: argparse.Namespace) -> Path:
    from salt.cache import cache_home

    if getattr(args, "out", None):
        return Path(args.out)
    if not getattr(args, "name", None):
        raise ValueError(
            "give the cache a --name (stored under $SALT_CACHE_DIR/latents) or an --out DIR"
        )
    return cache_home() / args.name


def _cache_config(args: argparse.Namespace) -> Config:
    overrides = overrides_from(args, {"teacher": "teacher.spec", "data": "data.spec"})
    profile = _pick_profile(args, overrides)
    return build_config(profile=profile, file=args.config, overrides=overrides)


def cmd_cache(args: argparse.Namespace) -> int:
    from salt import cache

    if args.cache_command == "build":
        from salt.cache.build import build_cache
        from salt.distributed import leave_process_group
        from salt.models import teacher_of

        cfg = _cache_config(args)
        out = _cache_path(args)
        built = build_cache(
            teacher_of(cfg),
            cfg,
            out,
            split=args.split,
            views=args.views,
            dtype=args.dtype,
            batch_size=args.batch_size,
            workers=args.workers,
            store_clips=args.store_clips,
            shard_size=args.shard_size,
            device=args.device,
            progress=not args.no_progress,
        )
        if leave_process_group() > 0:
            return 0  # rank 0 reports for the job
        skipped = len(built.skipped)
        note = f", {skipped} unreadable videos skipped" if skipped else ""
        splits = ", ".join(f"{name} {len(built.split(name))}" for name in built.splits)
        print(
            f"cache {out}: {len(built)} clips ({splits}), latents {tuple(built.latent_shape)} "
            f"{built.meta['dtype']}{note}"
        )
        print(f"train with: salt train --teacher cached:{args.name or out}")
        return 0
    if args.cache_command == "list":
        found = cache.list_caches()
        if not found:
            print(f"no caches under {cache.cache_home()}")
        for c in found:
            shape = "x".join(map(str, c["latent_shape"])) if c["latent_shape"] else "?"
            count = c["samples"] if c["samples"] is not None else "?"
            splits = ", ".join(f"{k} {v}" for k, v in c["splits"].items())
            print(f"{c['name']:<20} {count:>8} clips  {shape:<10} {c['teacher']}  {splits}")
        return 0
    if args.cache_command == "import":
        if not args.data:
            raise ValueError(
                "salt cache import needs --data DIR: the videos the old cache was computed from"
            )
        cfg = _cache_config(args)
        out = _cache_path(args)
        built = cache.import_legacy(args.cache, out, cfg, args.data)
        print(
            f"imported {len(built)} clips into {out}; train with: salt train --teacher cached:{args.name or out}"
        )
        return 0
    path = cache.resolve_cache(args.cache)
    if args.cache_command == "info":
        from salt.cache.store import quantization_error

        opened = cache.open_cache(path)
        info = {"path": str(path), **opened.meta}
        if isinstance(opened, cache.LatentCache):
            info["samples"] = len(opened)
            info["splits"] = {
                name: {**split, "samples": len(opened.split(name))}
                for name, split in opened.splits.items()
            }
            info["shards"] = len(opened.shards)
            info["skipped"] = len(opened.skipped)
            error = quantization_error(opened)
            if error is not None:
                info["int8_relative_mse"] = error  # against the fp16 latents it replaces
        else:
            info["splits"] = {name: {"samples": len(opened.split(name))} for name in opened.splits}
            info["samples"] = sum(s["samples"] for s in info["splits"].values())
        print(json.dumps(info, indent=2))
        return 0
    problems = cache.verify_cache(path)
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        print(f"cache {path}: {len(problems)} problem(s); rebuild it with salt cache build")
        return 1
    print(f"cache {path}: OK ({len(cache.LatentCache(path))} clips, checksums and shapes match)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from salt.config import describe_fields

    rows = [
        r
        for r in describe_fields(build_config(profile=args.profile))
        if args.pattern.lower() in r["field"].lower()
    ]
    if not rows:
        raise ValueError(f"no config field matches {args.pattern!r}; `salt config` lists them all")
    if args.json:
        print(json.dumps(rows, indent=2, default=list))
        return 0
    width = max(len(r["field"]) for r in rows)
    kind = max(len(r["type"]) for r in rows)
    for r in rows:
        default = json.dumps(r["default"], default=list)
        print(f"{r['field']:<{width}}  {r['type']:<{kind}}  {default:<14} {r['help']}")
    print(
        f"\nset any of them with --set FIELD=VALUE or in a --config file ({args.profile} defaults)"
    )
    return 0


def cmd_eval_distill(args: argparse.Namespace) -> int:
    from salt.distill import distill_loss

    fields = {"teacher": "teacher.spec", "data": "data.spec", "batch_size": "train.batch_size"}
    overrides = overrides_from(args, fields)
    report = distill_loss(
        args.run, overrides, batches=args.batches, seed=args.seed, device=args.device
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0


def cmd_eval_probes(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from salt.export import load_encoder
    from salt.probes import NUM_VIDEOS, clip_settings, compare, random_like, run_probes

    encoder, config = load_encoder(args.encoder)
    models = {"encoder": encoder}
    if args.baseline == "random":
        models["random"] = random_like(encoder, architecture=config["architecture"], seed=args.seed)
    reports = {}
    for name, model in models.items():
        bar = tqdm(desc=f"probes ({name})", unit="clip", disable=args.no_progress or args.json)

        def progress(task, done, total, bar=bar):
            bar.total = total
            bar.n = done
            bar.set_postfix(task=task)
            bar.refresh()

        reports[name] = run_probes(
            model,
            args.data,
            num_videos=args.videos or NUM_VIDEOS,
            seed=args.seed,
            probe=args.probe,
            **clip_settings(config),
            progress=progress,
        )
        bar.close()
    if args.json:
        print(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))
    elif len(reports) == 1:
        print(reports["encoder"].table())
    else:
        print(compare(reports))
    return 0


def _clip_bar(desc: str, disable: bool):
    """A progress bar over clips and the ``progress(stage, done, total)`` callback that
    drives it (``salt.classify``'s)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="clip", disable=disable)

    def progress(stage: str, done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.set_postfix_str(stage)
        bar.refresh()

    return bar, progress


def cmd_eval_classify(args: argparse.Namespace) -> int:
    import attrs

    from salt.classify import ClassifySettings, classify, compare, encoder_splits, plan_lines
    from salt.distributed import resolve_device
    from salt.probes import random_like

    if args.data and (args.train or args.test):
        raise ValueError(
            f"give either --data ({args.data}) or --train/--test, not both: with --train and "
            f"--test, --data would be ignored"
        )
    encoder, config = _classify_encoder(args.encoder, meta=args.dry_run)
    knobs = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "views": args.views,
        "spatial_views": args.spatial_views,
        "workers": args.workers,
        "feature_memory_gb": args.feature_memory,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "whiten": args.whiten or None,
    }
    settings = ClassifySettings(**given(knobs))
    probes = PROBE_CHOICES[args.probe]
    settings = attrs.evolve(settings, probes=probes)
    splits = encoder_splits(config, args.data or "motion", args.train, args.test, settings)
    if args.dry_run:
        print("\n".join(plan_lines(encoder, config, splits, settings)))
        print("dry run: encoder, data and settings check out; nothing was trained")
        return 0
    device = resolve_device(args.device)
    models = {"encoder": encoder}
    if args.baseline == "random":
        models["random"] = random_like(encoder, architecture=config["architecture"], seed=0)
    reports = {}
    for name, model in models.items():
        bar, progress = _clip_bar(f"classify ({name})", args.no_progress or args.json)

        reports[name] = classify(
            model,
            splits,
            config["mean"],
            config["std"],
            settings,
            name=name,
            device=device,
            progress=progress,
        )
        bar.close()
    if args.json:
        print(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))
    else:
        print(compare(reports))
    return 0


def cmd_eval_curve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from salt.classify import ClassifySettings
    from salt.curve import checkpoint_curve, draw_curve
    from salt.distributed import resolve_device

    knobs = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "lr": args.lr,
        "workers": args.workers,
        "whiten": args.whiten or None,
    }
    settings = ClassifySettings(**given(knobs))
    fields = {"teacher": "teacher.spec", "distill_data": "data.spec"}
    bar, progress = _clip_bar("curve", args.no_progress or args.json)

    report = checkpoint_curve(
        args.run,
        data=args.data,
        probe=args.probe,
        settings=settings,
        distill_overrides=overrides_from(args, fields),
        distill_batches=args.batches,
        seed=args.seed,
        device=resolve_device(args.device),
        progress=progress,
    )
    bar.close()
    png = draw_curve(report, Path(args.png or Path(report.run) / "distill_vs_probe.png"))
    if args.json:
        print(json.dumps({**report.to_dict(), "png": str(png)}, indent=2))
    else:
        print(report.table())
        print(f"plot: {png}")
    return 0


def given(knobs: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave (argparse leaves the others None)."""
    return {k: v for k, v in knobs.items() if v is not None}


WHITEN = (
    "ZCA-whiten the tokens with the training clips' statistics before the probes, so a few "
    "dominant directions do not hide the rest (off: V-JEPA's protocol)"
)
PROBE_CHOICES = {
    "attentive": ("attentive",),
    "linear": ("linear",),
    "both": ("attentive", "linear"),
}


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


def cmd_export(args: argparse.Namespace) -> int:
    from salt.export import export_encoder

    out = export_encoder(args.run, args.out, checkpoint=args.checkpoint, force=args.force)
    print(
        f"exported the student encoder to {out}; load it with VideoEncoder.from_pretrained({str(out)!r})"
    )
    if args.push_to_hub:
        from salt.hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(
            f"pushed to {args.push_to_hub} ({url}); load it with "
            f"VideoEncoder.from_pretrained({args.push_to_hub!r})"
        )
    return 0


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


PLOT_KEYS = ("loss", "loss/*", "val_loss", "lr", "wd", "grad_norm", "clips_per_s", "mfu")


def cmd_runs(args: argparse.Namespace) -> int:
    from salt.runs import read_runs, table

    rows = read_runs(args.paths or ["runs"], sort=args.sort, reverse=args.reverse)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


def _expand(patterns: list[str], series: dict) -> list[str]:
    """The logged keys matching ``patterns``, in the patterns' order."""
    from fnmatch import fnmatchcase

    found = list(dict.fromkeys(k for curves in series.values() for k in curves))
    return list(dict.fromkeys(k for p in patterns for k in found if fnmatchcase(k, p)))


def cmd_app(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401

        from salt_app.app import launch
    except ModuleNotFoundError as err:
        raise RuntimeError(
            f"salt app needs the viewer and gradio ({err}); install them from your salt-vla "
            f"clone with: pip install -e '.[app]'"
        ) from None

    page, url = launch(
        host=args.host,
        port=args.port,
        runs=args.runs,
        allow=tuple(args.allow),
        allow_hub=args.allow_hub,
    )
    print(f"salt viewer on {url} (Ctrl+C stops it)")
    try:
        page.block_thread()
    finally:
        page.close()
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    import attrs

    from salt.quickstart import FAST, LONG, STAGES, QuickstartSettings, run_quickstart

    settings = FAST if args.fast else LONG if args.long else QuickstartSettings()
    knobs = {
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
        "device": args.device,
        "batch_size": args.batch_size,
        "clips": args.clips,
        "workers": args.workers,
        "seed": args.seed,
    }
    settings = attrs.evolve(settings, **given(knobs))
    if args.dry_run:
        from salt.quickstart import plan_quickstart

        print("\n".join(plan_quickstart(args.out, settings, force=args.force)))
        print("dry run: config, data, masks and the benchmark check out; nothing was trained")
        return 0
    # The stage headers and bars tell the story; the stages' own start-up lines would bury it.
    quiet = (
        []
        if args.verbose
        else ["salt.train", "salt.cache", "salt.distill", "salt.probes", "salt.classify"]
    )
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
    return 0


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a .toml, .yaml or .json config file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)",
    )
    p.add_argument(
        "--profile",
        choices=["auto", "recipe", "demo"],
        default="auto",
        help="recipe: the full ViT-L recipe; demo: CPU-sized (8x112 clips, vit_tiny); auto: demo without a GPU",
    )


DEVICE = "auto (a GPU when there is one), cpu, cuda, cuda:1 ..."
NO_PROGRESS = "no progress bar"
PROBE = "attentive: cross-attention pooling then linear (V-JEPA); linear: on mean-pooled tokens"
DESCRIPTION = """\
salt-vla trains video encoders for robot VLA policies with SALT: a student learns to
predict a frozen teacher's latents (cached once, or computed live) from masked video.

first steps:
  salt quickstart                 the whole pipeline on built-in data, on a CPU
  salt train --teacher pixels     stage 1; then salt cache build, salt train --teacher cached:NAME
  salt export RUN --out DIR       the encoder for VLA code: from salt import VideoEncoder
"""


class SaltParser(argparse.ArgumentParser):
    """argparse, with a suggestion for a misspelled option or command."""

    def error(self, message: str):
        match = re.match(r"unrecognized arguments: (.*)", message)
        if match:
            message = _unrecognized(self, match.group(1).split())
        else:
            choice = re.match(
                r"argument \S+: invalid choice: '([^']*)' \(choose from (.*)\)", message
            )
            if choice:
                options = re.findall(r"'?([\w.:-]+)'?", choice.group(2))
                close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean {close[0]!r}?"
        super().error(message)


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments`` with the closest option of ``parser`` for each."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    parts = []
    for extra in extras:
        close = difflib.get_close_matches(extra.split("=")[0], options, n=1, cutoff=0.6)
        parts.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    return "unrecognized arguments: " + " ".join(parts)


def _leaves(parser: argparse.ArgumentParser):
    """Every (sub)command parser that takes arguments itself."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
    parser = SaltParser(
        prog="salt",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"salt-vla {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a student to predict a frozen teacher's latents")
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
    _add_config_flags(t)
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

    c = sub.add_parser(
        "cache", help="build, list, inspect, verify and import teacher-latent caches"
    )
    csub = c.add_subparsers(dest="cache_command", required=True)
    b = csub.add_parser("build", help="compute a teacher's latents once and store them")
    b.add_argument(
        "--teacher", required=True, help="live teacher spec, e.g. videomae:/models/v1-huge"
    )
    b.add_argument("--data", help="data spec: a folder, CSV manifest, SSv2 JSON or synthetic[:N]")
    b.add_argument("--name", help="cache name under $SALT_CACHE_DIR/latents")
    b.add_argument("--out", help="cache directory (instead of --name)")
    b.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default="train",
        help="which split these clips are: build 'val' from held-out data into the same cache "
        "for `salt eval distill` (default: train)",
    )
    b.add_argument("--views", type=positive_int, default=1, help="clips per video (evenly spaced)")
    b.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32", "int8"],
        default="float16",
        help="how latents are stored (int8: half of float16's bytes; `salt cache info` reports "
        "its relative error)",
    )
    b.add_argument(
        "--batch-size", type=positive_int, default=8, help="clips per teacher forward (default 8)"
    )
    b.add_argument(
        "--workers", type=nonneg_int, default=2, help="DataLoader workers decoding videos"
    )
    b.add_argument("--shard-size", type=positive_int, default=256, help="clips per shard file")
    b.add_argument("--store-clips", action="store_true", help="also store each view's uint8 clip")
    b.add_argument(
        "--device",
        default="auto",
        help="where the teacher runs: auto (a GPU when there is one), cpu, cuda; under "
        "torchrun each process builds every N-th shard on its own GPU",
    )
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    _add_config_flags(b)
    csub.add_parser("list", help="named caches under $SALT_CACHE_DIR/latents")
    for verb, text in (("info", "a cache's metadata"), ("verify", "check checksums and shapes")):
        v = csub.add_parser(verb, help=text)
        v.add_argument("cache", help="cache name or directory")
    imp = csub.add_parser(
        "import", help="convert an older-layout cache (<split>/<id>.pt + metadata.json)"
    )
    imp.add_argument("cache", help="the older cache's directory")
    imp.add_argument(
        "--data", help="the videos it was computed from (files named <video_id>.<ext>)"
    )
    imp.add_argument("--name", help="new cache name under $SALT_CACHE_DIR/latents")
    imp.add_argument("--out", help="new cache directory (instead of --name)")
    imp.add_argument("--teacher", help=argparse.SUPPRESS)
    _add_config_flags(imp)
    c.set_defaults(func=cmd_cache)

    ev = sub.add_parser("eval", help="evaluate runs: held-out distillation loss, temporal probes")
    esub = ev.add_subparsers(dest="eval_command", required=True)
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
    dl.set_defaults(func=cmd_eval_distill)

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
        help="labelled data: 'motion[:N]' (the built-in motion benchmark, default), a folder "
        "with train/ and test/ class folders, or an SSv2 train.json next to validation.json",
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
    cl.set_defaults(func=cmd_eval_classify)

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
    cu.add_argument(
        "--workers", type=nonneg_int, default=2, help="DataLoader workers decoding clips"
    )
    cu.add_argument("--seed", type=int, default=0, help="fixes the distillation masks")
    cu.add_argument("--png", help="where to draw the curve (default: RUN/distill_vs_probe.png)")
    cu.add_argument("--device", default="auto", help=DEVICE)
    cu.add_argument("--json", action="store_true", help="print JSON")
    cu.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    cu.set_defaults(func=cmd_eval_curve)

    cf = sub.add_parser("config", help="every config field with its type, default and what it does")
    cf.add_argument(
        "pattern", nargs="?", default="", help="only fields whose name contains this, e.g. optim"
    )
    cf.add_argument(
        "--profile",
        choices=["recipe", "demo"],
        default="recipe",
        help="whose defaults to show (default recipe)",
    )
    cf.add_argument("--json", action="store_true", help="print JSON")
    cf.set_defaults(func=cmd_config)

    e = sub.add_parser(
        "export", help="write a run's student encoder (safetensors + config.json + model card)"
    )
    e.add_argument("run", help="run directory, RUN:best, RUN:STEP or a checkpoint file")
    e.add_argument(
        "--checkpoint",
        help="best (lowest held-out loss), latest, a step number or a checkpoint file "
        "(default: the run's newest)",
    )
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    e.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        help="also upload the export to this Hugging Face Hub repo (needs a write token: "
        "hf auth login or HF_TOKEN)",
    )
    e.add_argument("--private", action="store_true", help="with --push-to-hub: a private repo")
    e.set_defaults(func=cmd_export)

    pl = sub.add_parser(
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

    rs = sub.add_parser(
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

    q = sub.add_parser(
        "quickstart",
        help="the whole SALT story on synthetic data on CPU: teacher, cache, student, eval, probes, classify, export",
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
        "--long",
        action="store_true",
        help="the recipe that first reached student > teacher > random in docs/evaluation.md "
        "(~1 hour on 2 CPU cores; not every training reaches it): future:0.5 masks, 6000 "
        "steps per run at 8x64 on the motion benchmark's clips, a low-shot whitened probe "
        "(448 labelled clips) on 7168 test clips",
    )
    q.add_argument("--teacher-steps", type=positive_int, help="teacher training steps")
    q.add_argument("--student-steps", type=positive_int, help="student training steps")
    q.add_argument("--probe-videos", type=positive_int, help="videos per probe task (at least 4)")
    q.add_argument(
        "--classify-clips",
        type=positive_int,
        help="motion-benchmark training clips (motion:N, at least 14; N/2 more are tested)",
    )
    q.add_argument(
        "--classify-max-train",
        type=nonneg_int,
        help="label only the first N motion-benchmark training clips (low-shot; 0: all)",
    )
    q.add_argument(
        "--mask",
        help="both runs' masker, as mask.name: multiblock (default; --long: future:0.5), "
        "tube:0.9 ...",
    )
    q.add_argument(
        "--target-norm",
        choices=TARGET_NORMS,
        help="the student's targets, as loss.target_norm: the teacher's latents as they are "
        "(none, default), standardized per token (layer) or per channel over a clip (instance)",
    )
    q.add_argument(
        "--teacher-warmup",
        type=nonneg_int,
        help="the teacher's warmup steps, as optim.warmup_steps (at most 10%% of its steps; "
        "default 10, the demo profile's)",
    )
    q.add_argument(
        "--student-warmup",
        type=nonneg_int,
        help="the student's warmup steps, as optim.warmup_steps (at most 10%% of its steps; "
        "default 10, the demo profile's)",
    )
    q.add_argument(
        "--image-size", type=positive_int, help="clip height and width (default 112; --long: 64)"
    )
    q.add_argument(
        "--data",
        choices=["synthetic", "motion"],
        help="training data of both runs: the built-in synthetic world (default) or the motion "
        "benchmark's training clips, unlabelled (--long's)",
    )
    q.add_argument("--batch-size", type=positive_int, help="clips per training step (default 8)")
    q.add_argument(
        "--seed",
        type=nonneg_int,
        help="seed of both runs (init, data order, masks), the random encoder, the held-out "
        "loss's clips and the temporal probes' videos (default 0): another training of the "
        "same recipe; the motion benchmark and its probe seeds stay the same",
    )
    q.add_argument("--clips", type=positive_int, help="training clips (default 512; --long: 2048)")
    q.add_argument("--workers", type=nonneg_int, help="DataLoader workers making clips (default 1)")
    q.add_argument(
        "--device",
        help="cpu (default), auto (a GPU when there is one), cuda ...: both runs, the cache, "
        "the distillation loss and the classify probes",
    )
    q.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        help="probe the motion benchmark on ZCA-whitened tokens (default: raw tokens, V-JEPA's "
        "protocol; --long whitens)",
    )
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="check the settings, data and masks and print each stage's size; train nothing",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_quickstart)

    p = sub.add_parser(
        "plugins", help="list registered students, teachers, predictors, maskers, losses"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    d = sub.add_parser(
        "doctor", help="check torch, CUDA/NVML, video decoders and DataLoader worker support"
    )
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=cmd_doctor)

    a = sub.add_parser("app", help="browse masks, teacher latents vs. predictions and loss curves")
    a.add_argument(
        "--host", default="127.0.0.1", help="interface to serve on (default: local only)"
    )
    a.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    a.add_argument("--runs", default="runs", help="folder holding run directories")
    a.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder the viewer may read (e.g. where teachers or videos live); repeatable",
    )
    a.add_argument(
        "--allow-hub",
        action="store_true",
        help="let a teacher field name a Hugging Face Hub repo (encoder:org/name); without it "
        "the viewer never reaches the network",
    )
    a.set_defaults(func=cmd_app)
    for leaf in _leaves(parser):
        # -v works after the command too; SUPPRESS keeps the top-level value when absent.
        leaf.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        leaf.set_defaults(_parser=leaf)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # named by the command that was given, with the closest of its options
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extras)}")
    printing = getattr(args, "print_config", False)  # the config as asked, not as displayed
    if (
        hasattr(args, "no_progress")
        and not args.no_progress
        and not printing
        and not _terminal(sys.stderr)
    ):
        # Bars redrawn in a file (a cluster job's log, a pipe) are noise: without a terminal
        # the run prints its metrics line every train.log_every steps instead.
        args.no_progress = True
    _setup_logging(args.verbose, progress=not getattr(args, "no_progress", False))
    try:
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        if args.verbose:
            raise
        print(f"salt: error: {error_line(err)}", file=sys.stderr)
        return 2


def _terminal(stream) -> bool:
    """Whether ``stream`` is a terminal a progress bar can redraw in place."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


# Errors whose message is written for the user: printed as they are.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError, TypeError)


def error_line(err: BaseException) -> str:
    """One line for an error: its message when it is one of ours, else its kind and first
    line with where to see more."""
    if isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    elif isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        message = f"{err.filename}: {err.strerror or err}"
    else:
        message = str(err)
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line
        message = message.strip().splitlines()[-1]
        kind, sep, rest = message.partition(": ")
        message = rest if sep and kind.replace(".", "").replace("_", "").isalnum() else message
        if isinstance(err, USER_ERRORS):
            return message
    lines = [line for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if isinstance(err, USER_ERRORS + (OSError,)) and len(lines) <= 1:
        return first
    return f"{type(err).__name__}: {first} (run with -v for the full traceback)"


if __name__ == "__main__":
    sys.exit(main())
