"""The ``salt`` command line. Only this package knows about argv.

One module per command group, each declaring its options right beside its handler:

- :mod:`salt.cli.train`       ``salt train``
- :mod:`salt.cli.cache`       ``salt cache build|list|info|verify|import``
- :mod:`salt.cli.evaluate`    ``salt eval distill|probes|classify|curve``
- :mod:`salt.cli.export`      ``salt export``
- :mod:`salt.cli.runs`        ``salt runs``, ``salt plot``
- :mod:`salt.cli.quickstart`  ``salt quickstart``
- :mod:`salt.cli.info`        ``salt plugins``, ``salt doctor``, ``salt config``
- :mod:`salt.cli.app`         ``salt app``
- :mod:`salt.cli.options`     what they share: flag types, config flags, overrides
- :mod:`salt.cli.parser`      the parser, ``main`` and one line per error

A plugin adds a command with the ``register_commands`` hook (:mod:`salt.hookspecs`).
"""

from salt.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
