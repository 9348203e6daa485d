"""What the commands share: flag types, the config flags, flags turned into config
overrides, the profile a command runs under, and the help texts several commands use."""

from __future__ import annotations

import argparse
from typing import Any

from salt.config import build_config, parse_value


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


def given(knobs: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave (argparse leaves the others None)."""
    return {k: v for k, v in knobs.items() if v is not None}


def pick_profile(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The profile asked for; ``auto``: the recipe on a GPU, the demo on a CPU."""
    if args.profile != "auto":
        return args.profile
    import torch

    device = overrides.get("train.device", getattr(args, "device", None) or "auto")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return "demo" if on_cpu else "recipe"


def config_of(args: argparse.Namespace, fields: dict[str, str], extra: dict | None = None):
    """Recipe -> profile -> --config file -> flags and --set."""
    overrides = overrides_from(args, fields, extra)
    return build_config(
        profile=pick_profile(args, overrides), file=args.config, overrides=overrides
    )


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """--config, --set and --profile: the config a command runs under."""
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
WHITEN = (
    "ZCA-whiten the tokens with the training clips' statistics before the probes, so a few "
    "dominant directions do not hide the rest (off: V-JEPA's protocol)"
)
