"""``salt cache build|list|info|verify|import``: teacher-latent caches, a handler per verb."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from salt.cli.options import NO_PROGRESS, add_config_flags, config_of, nonneg_int, positive_int
from salt.config import Config

CACHE_FLAGS = {"teacher": "teacher.spec", "data": "data.spec"}


def register_commands(commands) -> None:
    c = commands.add_parser(
        "cache", help="build, list, inspect, verify and import teacher-latent caches"
    )
    csub = c.add_subparsers(dest="cache_command", required=True)
    add_build(csub)
    csub.add_parser("list", help="named caches under $SALT_CACHE_DIR/latents").set_defaults(
        func=cmd_list
    )
    for verb, text, handler in (
        ("info", "a cache's metadata", cmd_info),
        ("verify", "check checksums and shapes", cmd_verify),
    ):
        v = csub.add_parser(verb, help=text)
        v.add_argument("cache", help="cache name or directory")
        v.set_defaults(func=handler)
    add_import(csub)


def add_build(csub) -> None:
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
    add_config_flags(b)
    b.set_defaults(func=cmd_build)


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
    return config_of(args, CACHE_FLAGS)


def cmd_build(args: argparse.Namespace) -> int:
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


def cmd_list(args: argparse.Namespace) -> int:
    from salt import cache

    found = cache.list_caches()
    if not found:
        print(f"no caches under {cache.cache_home()}")
    for c in found:
        shape = "x".join(map(str, c["latent_shape"])) if c["latent_shape"] else "?"
        count = c["samples"] if c["samples"] is not None else "?"
        splits = ", ".join(f"{k} {v}" for k, v in c["splits"].items())
        print(f"{c['name']:<20} {count:>8} clips  {shape:<10} {c['teacher']}  {splits}")
    return 0


def add_import(csub) -> None:
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
    add_config_flags(imp)
    imp.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from salt import cache

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


def cmd_info(args: argparse.Namespace) -> int:
    from salt import cache

    path = cache.resolve_cache(args.cache)
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
        error = cache.quantization_error(opened)
        if error is not None:
            info["int8_relative_mse"] = error  # against the fp16 latents it replaces
    else:
        info["splits"] = {name: {"samples": len(opened.split(name))} for name in opened.splits}
        info["samples"] = sum(s["samples"] for s in info["splits"].values())
    print(json.dumps(info, indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from salt import cache

    path = cache.resolve_cache(args.cache)
    problems = cache.verify_cache(path)
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        print(f"cache {path}: {len(problems)} problem(s); rebuild it with salt cache build")
        return 1
    print(f"cache {path}: OK ({len(cache.LatentCache(path))} clips, checksums and shapes match)")
    return 0
