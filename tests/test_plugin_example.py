"""The example plugin package under examples/ registers, masks, scores and trains."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from salt.config import apply_overrides
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
    assert maskers.get("future").plugin == "example"
    assert losses.get("smooth_l1").plugin == "example"


def test_future_masker_splits_time_slices_into_past_context_and_future_targets(example_plugin):
    grid = (4, 3, 3)
    masker = maskers.create("future:0.25", grid=grid)
    (group,) = masker(sample_keys(0, 0, np.arange(5)))
    assert group.context.shape == (5, 9) and group.target.shape == (5, 27)
    assert torch.equal(group.context[0], torch.arange(9))  # the whole first time slice
    assert torch.equal(group.target[3], torch.arange(9, 36))
    with pytest.raises(ValueError, match="at least one slice on each side"):
        maskers.create("future:1.0", grid=grid)


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
        {"mask.name": "future:0.5", "loss.name": "smooth_l1", "train.steps": 3},
    )
    result = train(cfg)
    assert result.step == 3
    assert "loss/smooth_l1" in (result.run_dir / "metrics.jsonl").read_text()
