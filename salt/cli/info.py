"""``salt plugins``, ``salt doctor`` and ``salt config``: what is installed, whether this
machine can run it, and every config field."""

from __future__ import annotations

import argparse
import json

from salt.config import build_config


def register_commands(commands) -> None:
    p = commands.add_parser(
        "plugins", help="list registered students, teachers, predictors, maskers, losses"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)
    d = commands.add_parser(
        "doctor", help="check torch, CUDA/NVML, video decoders and DataLoader worker support"
    )
    d.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=cmd_doctor)
    cf = commands.add_parser(
        "config", help="every config field with its type, default and what it does"
    )
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
