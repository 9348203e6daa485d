"""The ``salt`` parser and ``main``: each command group adds its own options and handler
(``register_commands``), a plugin may add more, and an error becomes one line."""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys

from salt import __version__
from salt.cli import app, cache, evaluate, export, info, quickstart, runs, train
from salt.errors import error_line

log = logging.getLogger("salt")

# The built-in command groups, in the order `salt --help` lists them.
GROUPS = (train, cache, evaluate, export, runs, quickstart, info, app)


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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the ``argv`` it will parse, plugins are loaded only when its
    command is not a built-in one (so ``salt runs`` never imports a model)."""
    parser = SaltParser(
        prog="salt",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"salt-vla {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register_commands(commands)
    words = [w for w in (argv or []) if not w.startswith("-")]
    if argv is None or not words or words[0] not in commands.choices:
        add_plugin_commands(commands)
    for leaf in _leaves(parser):
        # -v works after the command too; SUPPRESS keeps the top-level value when absent.
        leaf.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        leaf.set_defaults(_parser=leaf)
    return parser


def add_plugin_commands(commands) -> None:
    """Commands from plugins' ``register_commands`` hooks; a name taken twice is an error
    naming both."""
    from salt.plugins import load_plugins, pm

    load_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
        try:
            impl.function(commands=commands)
        except argparse.ArgumentError as err:
            raise RuntimeError(
                f"plugin {plugin!r} adds a command salt already has ({err}); uninstall it or "
                f"restrict plugins with SALT_LOAD_PLUGINS"
            ) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
    except RuntimeError as err:  # a plugin's command clashes with another
        print(f"salt: error: {error_line(err)}", file=sys.stderr)
        return 2
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
    handler = getattr(args, "func", None)
    if handler is None:  # a plugin's command without parser.set_defaults(func=...)
        parser.error(f"the command {args.command!r} has no handler; its plugin must set one")
    try:
        return handler(args)
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
