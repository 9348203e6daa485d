"""``salt app``: the viewer of masks, latents and loss curves (it lives in apps/)."""

from __future__ import annotations

import argparse


def register_commands(commands) -> None:
    a = commands.add_parser(
        "app", help="browse masks, teacher latents vs. predictions and loss curves"
    )
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
