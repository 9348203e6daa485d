"""``salt export``: a run's student encoder as safetensors, config and model card, and
optionally on the Hugging Face Hub."""

from __future__ import annotations

import argparse

HUB_ONLY = ("private", "commit_message", "revision", "create_pr")
COMMIT = "Upload salt-vla encoder"


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
        "--license",
        help="the model card's license, as a Hub license id (default apache-2.0, salt-vla's)",
    )
    hub = e.add_argument_group("the Hugging Face Hub")
    hub.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        help="also upload the export to this Hugging Face Hub repo (needs a write token: "
        "hf auth login or HF_TOKEN)",
    )
    hub.add_argument("--private", action="store_true", help="create the repo private")
    hub.add_argument("--commit-message", default=COMMIT, help="the commit's message")
    hub.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if needed)")
    hub.add_argument(
        "--create-pr", action="store_true", help="open a pull request instead of committing"
    )
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from salt.export import export_encoder

    given = [f"--{n.replace('_', '-')}" for n in HUB_ONLY if getattr(args, n) not in (None, False)]
    given = [g for g in given if g != "--commit-message" or args.commit_message != COMMIT]
    if given and not args.push_to_hub:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{', '.join(given)} only {verb} with --push-to-hub ORG/NAME; add it")
    out = export_encoder(
        args.run, args.out, checkpoint=args.checkpoint, force=args.force, license=args.license
    )
    print(
        f"exported the student encoder to {out}; load it with VideoEncoder.from_pretrained({str(out)!r})"
    )
    if args.push_to_hub:
        from salt.hub import push_to_hub

        url = push_to_hub(
            out,
            args.push_to_hub,
            private=args.private,
            commit_message=args.commit_message,
            revision=args.revision,
            create_pr=args.create_pr,
        )
        where = f" ({'a pull request' if args.create_pr else args.revision or 'main'})"
        print(
            f"pushed to {args.push_to_hub}{where}: {url}; load it with "
            f"VideoEncoder.from_pretrained({args.push_to_hub!r}"
            + (f", revision={args.revision!r})" if args.revision else ")")
        )
    return 0
