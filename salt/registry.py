"""Registries mapping names to factories, filled by plugins and resolved from spec strings."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import attrs

from salt.plugins import load_plugins, pm


@attrs.frozen
class Entry:
    """One registered name: its factory, a one-line description and who registered it."""

    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str
    aliases: tuple[str, ...] = ()


class UnknownNameError(KeyError):
    """A spec named something no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """Two plugins registered the same name in one registry."""


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``name:arg`` at the first colon; ``arg`` is None when there is none."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"expected a spec string such as 'vit_l' or 'cached:NAME', got {spec!r}")
    name, sep, arg = spec.strip().partition(":")
    return name, (arg if sep else None)


class Registry:
    """Names of one kind (students, teachers, ...) gathered from every loaded plugin."""

    def __init__(self, kind: str, hook: str, noun: str):
        self.kind = kind  # plural: "losses"
        self.noun = noun  # one of them: "loss"
        self.hook = hook

    def entries(self) -> dict[str, Entry]:
        """Every registered entry by name; rebuilt each call so plugins may come and go."""
        load_plugins()
        entries: dict[str, Entry] = {}
        caller = getattr(pm.hook, self.hook)
        for impl in caller.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(name, factory, description="", aliases=(), _plugin=plugin_name):
                if name in entries:
                    raise DuplicateNameError(
                        f"{self.noun} {name!r} is registered by both plugin "
                        f"{entries[name].plugin!r} and plugin {_plugin!r}; "
                        f"uninstall one or restrict plugins with SALT_LOAD_PLUGINS"
                    )
                entries[name] = Entry(name, factory, description, _plugin, tuple(aliases))

            impl.function(register=register)
        return entries

    def names(self) -> list[str]:
        """Registered names (without aliases), sorted."""
        return sorted(self.entries())

    def _aliases(self, entries: dict[str, Entry]) -> dict[str, str]:
        return {alias: e.name for e in entries.values() for alias in e.aliases}

    def get(self, name: str) -> Entry:
        """The entry registered as ``name`` (or an alias of it)."""
        entries = self.entries()
        if name in entries:
            return entries[name]
        aliases = self._aliases(entries)
        if name in aliases:
            return entries[aliases[name]]
        known = sorted(entries) + sorted(aliases)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(sorted(entries)) or "(none: are the salt plugins installed?)"
        raise UnknownNameError(
            f"unknown {self.noun} {name!r}.{hint} Registered {self.kind}: {listing}. "
            f"`salt plugins` lists them with the plugins that provide them."
        )

    def __contains__(self, name: str) -> bool:
        entries = self.entries()
        return name in entries or name in self._aliases(entries)

    def create(self, spec: str, **kwargs: Any) -> Any:
        """Resolve ``spec`` and call its factory with the spec's argument plus ``kwargs``."""
        name, arg = parse_spec(spec)
        return self.get(name).factory(arg, **kwargs)


students = Registry("students", "register_students", "student")
teachers = Registry("teachers", "register_teachers", "teacher")
predictors = Registry("predictors", "register_predictors", "predictor")
maskers = Registry("maskers", "register_maskers", "masker")
losses = Registry("losses", "register_losses", "loss")
loggers = Registry("loggers", "register_loggers", "logger")

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (students, teachers, predictors, maskers, losses, loggers)
}


def check_names(cfg) -> None:
    """Every plugin name a config uses is registered (a misspelling names the closest);
    nothing is built or opened."""
    for registry, spec in (
        (students, cfg.student.name),
        (teachers, cfg.teacher.spec),
        (predictors, cfg.predictor.name),
        (maskers, cfg.mask.name),
    ):
        registry.get(parse_spec(spec)[0])
    for term in cfg.loss.name.split("+"):
        losses.get(term.strip())
    for spec in cfg.run.loggers:
        loggers.get(parse_spec(spec)[0])
