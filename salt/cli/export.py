"""``salt export``: a run's student encoder as safetensors, config and model card."""

from __future__ import annotations

import argparse


def register_commands(commands) -> None:
    e = commands.add_parser(
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
