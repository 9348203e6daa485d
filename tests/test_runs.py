"""Run bookkeeping: the summary, atomic writes and checkpoint discovery."""

from __future__ import annotations

import pytest
import torch

from salt.runs import (
    MetricsLog,
    atomic_write_bytes,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    summarize,
)


def records(losses):
    return [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]


def test_summary_of_a_falling_loss_has_no_rebound():
    s = summarize(records([4.0, 3.0, 2.0, 1.5, 1.2, 1.0]), smoothing=0.5)
    assert s["min_loss"] == 1.0 and s["min_loss_step"] == 6
    assert s["first_loss"] == 4.0 and s["last_loss"] == 1.0
    assert s["rebound"] == 0.0 and s["late_rebound"] is False
    assert s["smoothed_loss"] == pytest.approx(
        0.5 * (0.5 * (0.5 * (0.5 * (0.5 * 4 + 1.5) + 1.0) + 0.75) + 0.6) + 0.5
    )


def test_summary_flags_a_late_rebound():
    s = summarize(
        records([4.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0]), smoothing=0.5, rebound_threshold=0.05
    )
    assert s["min_loss"] == 1.0 and s["min_loss_step"] == 3
    assert s["smoothed_min_step"] < 7
    assert s["rebound"] > 0.05 and s["late_rebound"] is True
    assert s["rebound"] == pytest.approx(
        (s["smoothed_loss"] - s["smoothed_min_loss"]) / s["smoothed_min_loss"]
    )


def test_summary_of_nothing_logged():
    assert summarize([]) == {"steps_logged": 0}


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
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.ones(2) * step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]
    assert resolve_checkpoint(tmp_path).name == "step_00000030.pt"
    state = load_checkpoint(tmp_path)
    assert state["step"] == 30 and torch.equal(state["w"], torch.full((2,), 30.0))


class Evil:
    """Stands for any pickled object a malicious checkpoint could carry."""


def test_checkpoints_refuse_pickled_objects(tmp_path):
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.parent.mkdir()
    torch.save({"obj": Evil()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_checkpoint(path)


def test_missing_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint or run directory at"):
        resolve_checkpoint(tmp_path / "nope")


def test_metrics_truncate_after_a_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for r in records([3.0, 2.0, 1.0]):
        log.append(r)
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]
