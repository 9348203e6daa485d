"""The plugin manager: built-in and third-party plugins, loaded once from the ``salt`` group."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading

import pluggy

from salt import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "salt"
LOAD_PLUGINS_ENV = "SALT_LOAD_PLUGINS"

pm = pluggy.PluginManager("salt")
pm.add_hookspecs(hookspecs)

_loaded = False
_load_lock = threading.Lock()


def _allowed_names() -> set[str] | None:
    """Plugin names from ``SALT_LOAD_PLUGINS`` (comma separated), or None for all."""
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Load the entry-point plugins the first time it is called; later calls are free."""
    global _loaded
    if _loaded:
        return pm
    with _load_lock:
        if _loaded:
            return pm
        allowed = _allowed_names()
        if allowed is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            found = set()
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in allowed and pm.get_plugin(ep.name) is None:
                    pm.register(ep.load(), name=ep.name)
                    found.add(ep.name)
            missing = allowed - found
            if missing:
                log.warning(
                    "%s names plugins that are not installed: %s",
                    LOAD_PLUGINS_ENV,
                    ", ".join(sorted(missing)),
                )
        _loaded = True
    return pm


def plugin_versions() -> dict[str, str | None]:
    """Map each registered plugin's name to its distribution version (None if unknown)."""
    load_plugins()
    versions: dict[str, str | None] = {}
    dists = _entry_point_dists()
    for name, plugin in pm.list_name_plugin():
        dist = dists.get(name)
        versions[name] = dist.version if dist is not None else getattr(plugin, "__version__", None)
    return versions


def _entry_point_dists() -> dict[str, importlib.metadata.Distribution]:
    return {
        ep.name: ep.dist
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None
    }


def plugin_hooks() -> dict[str, list[str]]:
    """Map each registered plugin's name to the hooks it implements."""
    load_plugins()
    hooks: dict[str, list[str]] = {}
    for name, plugin in pm.list_name_plugin():
        hooks[name] = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
    return hooks
