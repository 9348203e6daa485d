"""Checkpoints (save, prune, resolve, refuse pickles) and atomic writes (salt/io.py)."""

from __future__ import annotations

import pytest
import torch

from salt.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from salt.io import atomic_write_bytes


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_checkpoints_are_pruned_and_the_newest_is_resolved(tmp_path):
    for step in (10, 20, 30):
        state = {"step": step, "student": {"w": torch.ones(2) * step}, "config": {}}
        save_checkpoint(tmp_path, step, state, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]
    assert resolve_checkpoint(tmp_path).name == "step_00000030.pt"
    state = load_checkpoint(tmp_path)
    assert state["step"] == 30 and torch.equal(state["student"]["w"], torch.full((2,), 30.0))
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")  # weights, not a checkpoint
    with pytest.raises(ValueError, match="weights.pt is not a salt training checkpoint"):
        load_checkpoint(tmp_path / "weights.pt")


class Evil:
    """Stands for any pickled object a malicious checkpoint could carry."""


def test_checkpoints_refuse_pickled_objects(tmp_path):
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir()
    torch.save({"obj": Evil()}, path)
    with pytest.raises(Exception, match="not loaded.*unsafe global test_checkpoints.Evil"):
        load_checkpoint(path)


def test_missing_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint or run directory at"):
        resolve_checkpoint(tmp_path / "nope")
