"""Plugins and registries: entry-point loading, throwaway plugins, unknown names, `salt plugins`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from salt.cli import main
from salt.hookspecs import hookimpl
from salt.plugins import pm
from salt.registry import REGISTRIES, UnknownNameError, maskers, parse_spec, students, teachers

BUILTIN = {
    "students": {"vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant"},
    "teachers": {"pixels", "random", "encoder", "cached", "videomae"},
    "predictors": {"transformer"},
    "maskers": {"multiblock", "tube", "random", "future"},
    "losses": {"mse", "l1", "cosine", "vicreg"},
}


def test_builtin_plugins_fill_every_registry():
    for kind, names in BUILTIN.items():
        assert names <= set(REGISTRIES[kind].names()), kind
    assert students.get("vit_l").name == "vit_large"
    assert students.get("vit_g").plugin == "vit"
    assert maskers.get("multiblock").plugin == maskers.get("future").plugin == "masks"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("vit_l", ("vit_l", None)),
        ("cached:v1huge", ("cached", "v1huge")),
        ("encoder:runs/x:y", ("encoder", "runs/x:y")),
        ("pixels:", ("pixels", "")),
    ],
)
def test_parse_spec_splits_at_the_first_colon(spec, expected):
    assert parse_spec(spec) == expected


def test_unknown_name_lists_registered_names_and_the_closest_match():
    with pytest.raises(UnknownNameError) as err:
        students.get("vit_larg")
    message = str(err.value)
    assert "Did you mean 'vit_large'?" in message
    for name in BUILTIN["students"]:
        assert name in message
    with pytest.raises(UnknownNameError, match="unknown teacher 'pixel'. Did you mean 'pixels'"):
        teachers.create("pixel:raw", geometry=None)


class ThrowawayPlugin:
    @hookimpl
    def register_maskers(self, register):
        register("checkerboard", lambda arg, grid: None, "test masker")

    @hookimpl
    def register_students(self, register):
        register("vit_nano", lambda arg, **kw: None, "test student", aliases=("nano",))


def test_a_third_party_plugin_appears_and_disappears(capsys):
    assert "checkerboard" not in maskers
    pm.register(ThrowawayPlugin(), name="throwaway")
    try:
        assert "checkerboard" in maskers
        assert students.get("nano").plugin == "throwaway"
        assert main(["plugins", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        names = {e["name"]: e for e in report["registries"]["maskers"]}
        assert names["checkerboard"]["plugin"] == "throwaway"
        plugin = {p["name"]: p for p in report["plugins"]}["throwaway"]
        assert plugin["hooks"] == ["register_maskers", "register_students"]
    finally:
        pm.unregister(name="throwaway")
    assert "checkerboard" not in maskers
    assert "vit_nano" not in students


def test_two_plugins_registering_one_name_is_an_error():
    class Clash:
        @hookimpl
        def register_losses(self, register):
            register("mse", lambda arg: None, "another mse")

    pm.register(Clash(), name="clash")
    try:
        with pytest.raises(
            ValueError, match="registered by both plugin 'losses' and plugin 'clash'"
        ):
            REGISTRIES["losses"].get("mse")
    finally:
        pm.unregister(name="clash")


def test_salt_plugins_text_lists_names_plugins_and_versions(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind in BUILTIN:
        assert f"{kind}:" in out
    assert "vit_large  [vit 0.1.0]" in out and "(alias vit_l)" in out
    assert re.search(r"vicreg +\[vicreg 0\.1\.0\]", out)


def _plugins_json(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SALT_LOAD_PLUGINS"}
    if env_value is not None:
        env["SALT_LOAD_PLUGINS"] = env_value
    out = subprocess.run(
        [sys.executable, "-m", "salt.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_salt_load_plugins_restricts_which_plugins_load():
    everything = _plugins_json(None)
    assert {p["name"] for p in everything["plugins"]} >= {
        "vit",
        "masks",
        "teachers",
        "losses",
        "vicreg",
    }
    only = _plugins_json("vit,losses")
    assert {p["name"] for p in only["plugins"]} == {"vit", "losses"}
    assert only["registries"]["maskers"] == []
    assert {e["name"] for e in only["registries"]["losses"]} == {"mse", "l1", "cosine"}
    assert all(p["version"] == "0.1.0" for p in only["plugins"])
