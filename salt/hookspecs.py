"""The hooks a salt plugin may implement. Each receives a ``register`` callback, except
``register_commands``, which adds ``salt`` subcommands."""

import pluggy

hookspec = pluggy.HookspecMarker("salt")
hookimpl = pluggy.HookimplMarker("salt")


@hookspec
def register_students(register):
    """Register student encoders: ``register(name, factory, description, aliases=())``."""


@hookspec
def register_teachers(register):
    """Register teachers that turn a batch into target latents ``[B, N, D]``."""


@hookspec
def register_predictors(register):
    """Register predictors that map context tokens to predictions at target positions."""


@hookspec
def register_maskers(register):
    """Register maskers that split the token grid into context and target sets."""


@hookspec
def register_losses(register):
    """Register loss terms comparing predictions with teacher latents."""


@hookspec
def register_loggers(register):
    """Register metric loggers: ``factory(arg, run_dir, config) -> logger`` with
    ``log(step, metrics)`` and ``close()``."""


@hookspec
def register_commands(commands):
    """Add ``salt`` subcommands: ``parser = commands.add_parser(NAME, help=...)`` (an
    argparse subparsers action), its options with ``parser.add_argument``, and its handler
    with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns the exit code and
    raises ValueError (or another error with a message for the user) on bad input."""
