"""The example plugin package under examples/ registers, masks, scores and trains."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from salt.cli import main
from salt.config import apply_overrides
from salt.hookspecs import hookimpl
from salt.masking import sample_keys
from salt.plugins import load_plugins, pm
from salt.registry import losses, maskers
from salt.train import train

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "salt-plugin-example"


@pytest.fixture
def example_plugin(monkeypatch):
    """The example plugin, registered as salt would load it from its entry point (and
    unregistered afterwards unless it was installed already)."""
    load_plugins()
    installed = pm.get_plugin("example")
    if installed is not None:
        yield installed
        return
    monkeypatch.syspath_prepend(str(PACKAGE))
    module = importlib.import_module("salt_example")
    pm.register(module, name="example")
    try:
        yield module
    finally:
        pm.unregister(name="example")
        sys.modules.pop("salt_example", None)


def test_the_package_declares_its_module_in_the_salt_entry_point_group():
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["salt"] == {"example": "salt_example"}
    assert (PACKAGE / "salt_example" / "__init__.py").is_file()


def test_registers_a_masker_and_a_loss_under_the_plugins_name(example_plugin):
    assert maskers.get("interleave").plugin == "example"
    assert losses.get("smooth_l1").plugin == "example"


def test_interleave_masker_sees_every_stride_th_time_slice_and_predicts_the_rest(example_plugin):
    grid = (5, 2, 3)  # 6 tokens per time slice
    masker = maskers.create("interleave:2", grid=grid)
    (group,) = masker(sample_keys(0, 0, np.arange(4)))
    seen = torch.cat([torch.arange(0, 6), torch.arange(12, 18), torch.arange(24, 30)])
    unseen = torch.cat([torch.arange(6, 12), torch.arange(18, 24)])
    assert group.context.shape == (4, 18) and group.target.shape == (4, 12)
    assert torch.equal(group.context[3], seen) and torch.equal(group.target[0], unseen)
    (wide,) = maskers.create("interleave", grid=grid, stride=3)(sample_keys(0, 0, np.arange(1)))
    assert torch.equal(wide.context[0], torch.cat([torch.arange(0, 6), torch.arange(18, 24)]))
    with pytest.raises(ValueError, match="stride from 2 to the clip's 5 time slices"):
        maskers.create("interleave:1", grid=grid)
    with pytest.raises(ValueError, match="whole-number stride, e.g. interleave:2"):
        maskers.create("interleave:1.5", grid=grid)


def test_smooth_l1_is_quadratic_below_beta_and_linear_above(example_plugin):
    term = losses.create("smooth_l1", beta=1.0)
    zero = torch.zeros(1, 1, 2)
    small = term(torch.tensor([[[0.5, 0.5]]]), zero)["smooth_l1"]
    large = term(torch.tensor([[[3.0, 3.0]]]), zero)["smooth_l1"]
    assert small.item() == pytest.approx(0.125)  # 0.5 * 0.5**2 / beta
    assert large.item() == pytest.approx(2.5)  # 3 - 0.5 * beta
    with pytest.raises(ValueError, match="beta > 0"):
        losses.create("smooth_l1", beta=0.0)


def test_a_run_trains_with_the_plugins_masker_and_loss(example_plugin, tiny_config):
    cfg = apply_overrides(
        tiny_config,
        {"mask.name": "interleave:2", "loss.name": "smooth_l1", "train.steps": 3},
    )
    result = train(cfg)
    assert result.step == 3
    assert "loss/smooth_l1" in (result.run_dir / "metrics.jsonl").read_text()


def test_the_plugin_adds_a_command_beside_the_built_in_ones(example_plugin, capsys):
    assert main(["interleave", "--slices", "6", "--stride", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["context slices:   0 3", "predicted slices: 1 2 4 5"]
    assert main(["interleave", "--stride", "1"]) == 2  # the masker's own error, as one line
    assert "stride from 2 to the clip's 8 time slices" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "interleave" in capsys.readouterr().out


def test_a_plugin_command_that_clashes_with_a_built_in_one_is_named(capsys):
    class Clash:
        @hookimpl
        def register_commands(self, commands):
            commands.add_parser("train", help="another train")

    pm.register(Clash(), name="clash")
    try:
        # A built-in command never loads plugins; any other word does, and meets the clash.
        assert main(["frobnicate"]) == 2
    finally:
        pm.unregister(name="clash")
    err = capsys.readouterr().err
    assert "plugin 'clash' adds a command salt already has" in err and "train" in err
