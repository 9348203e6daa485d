"""The hooks a salt plugin may implement. Each receives a ``register`` callback."""

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
