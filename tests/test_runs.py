"""``salt runs``: the table of runs under a folder, from summaries or, for runs that have
not ended, from their metrics."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from salt.cli import main
from salt.config import apply_overrides
from salt.folders import LOCK
from salt.runs import epochs_per_step, find_runs, metrics_files, read_curves, read_runs, table
from salt.train import train


def write_run(folder, losses, val=(), summary=None, config_steps=None):
    """A run folder by hand: metrics lines (``window_s`` 2 s each), optional summary."""
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": step, "loss": loss, "window_s": 2.0, "clips_per_s": 4.0}))
            f.write("\n")
        for step, value in val:
            f.write(json.dumps({"step": step, "val_loss": value}) + "\n")
    if config_steps is not None:
        (folder / "config.json").write_text(json.dumps({"train": {"steps": config_steps}}))
    if summary is not None:
        time.sleep(0.01)
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_finished_runs_come_from_their_summaries(tiny_config, tmp_path, capsys):
    cfg = apply_overrides(tiny_config, {"train.eval_every": 4, "train.eval_batches": 1})
    a = train(apply_overrides(cfg, {"run.name": "a"}))
    b = train(apply_overrides(cfg, {"run.name": "b", "optim.lr": 3e-3, "train.eval_every": 0}))
    rows = {r.run: r for r in read_runs([cfg.run.out])}
    assert set(rows) == {"a", "b"}
    for row, result in ((rows["a"], a), (rows["b"], b)):
        s = result.summary
        assert row.status == "done" and (row.step, row.total_steps) == (8, 8)
        assert row.epochs == pytest.approx(8 * 4 / 64)  # steps x batch / synthetic:64
        assert (row.min_loss, row.min_loss_step, row.last_loss) == (
            s["min_loss"],
            s["min_loss_step"],
            s["last_loss"],
        )
        assert row.train_seconds > 0 and row.clips_per_s > 0
    assert (rows["a"].best_val_loss, rows["a"].best_step) == (
        a.summary["best_val_loss"],
        a.summary["best_step"],
    )
    assert rows["b"].best_val_loss is None  # measured no held-out loss

    assert main(["runs", cfg.run.out, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in printed] == ["a", "b"]
    assert printed[0]["best_step"] == a.summary["best_step"]
    assert main(["runs", cfg.run.out, "--sort", "last_loss", "--reverse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "step"]
    order = sorted(rows.values(), key=lambda r: -r.last_loss)
    assert [line.split()[0] for line in lines[1:]] == [r.run for r in order]


def test_runs_that_have_not_ended_are_read_from_their_metrics(tmp_path):
    runs = tmp_path / "runs"
    # Killed: metrics, no summary, no live writer.
    write_run(runs / "killed", [1.0, 0.5, 0.7], val=[(2, 0.6), (3, 0.65)], config_steps=10)
    # Resumed after an earlier stop: its old summary is older than the metrics.
    resumed = write_run(runs / "resumed", [1.0, 0.4], summary={"step": 1, "min_loss": 9.0})
    os.utime(resumed / "summary.json", (1, 1))
    # Running: a writer's lock record with a fresh heartbeat.
    running = write_run(runs / "running", [2.0])
    record = {"kind": "run", "command": "salt train", "pid": 4711, "host": socket.gethostname()}
    record.update(started=time.time(), heartbeat=time.time())
    (running / LOCK).write_text(json.dumps(record))
    # Its holder gone a while ago: unfinished.
    stale = write_run(runs / "stale", [2.0])
    (stale / LOCK).write_text(json.dumps({**record, "heartbeat": time.time() - 3600}))
    (runs / "notes").mkdir()  # not a run: ignored

    rows = {r.run: r for r in read_runs([runs])}
    assert set(rows) == {"killed", "resumed", "running", "stale"}
    killed = rows["killed"]
    assert killed.status == "unfinished" and (killed.step, killed.total_steps) == (3, 10)
    assert (killed.min_loss, killed.min_loss_step, killed.last_loss) == (0.5, 2, 0.7)
    assert (killed.best_val_loss, killed.best_step) == (0.6, 2)
    assert killed.rebound == pytest.approx(0.65 / 0.6 - 1) and killed.late_rebound
    assert killed.train_seconds == 6.0 and killed.clips_per_s == 4.0 and killed.epochs is None
    assert rows["resumed"].min_loss == 0.4 and rows["resumed"].status == "unfinished"
    assert rows["running"].status.startswith("running (salt train, pid 4711 on host")
    assert rows["stale"].status == "unfinished"
    text = table(list(rows.values()))
    assert "0.5000 @2" in text and "0.6000 @2" in text and "3/10" in text and "+8.3% late" in text


def test_sorting_puts_runs_without_the_value_last(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "high", [1.0], val=[(1, 0.9)])
    write_run(runs / "low", [1.0], val=[(1, 0.3)])
    write_run(runs / "none", [1.0])
    assert [r.run for r in read_runs([runs], sort="best_val_loss")] == ["low", "high", "none"]
    assert [r.run for r in read_runs([runs], sort="best_val_loss", reverse=True)] == [
        "high",
        "low",
        "none",
    ]
    with pytest.raises(ValueError, match=r"--sort 'loss': choose one of run, status, step"):
        read_runs([runs], sort="loss")


def test_a_path_that_holds_no_runs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "is neither a run (no metrics.jsonl or summary.json) nor a folder of runs" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["runs", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_salt_plot_draws_the_runs_of_a_folder(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot is drawn with matplotlib")
    runs = tmp_path / "runs"
    write_run(runs / "x", [1.0, 0.5], val=[(2, 0.7)])
    write_run(runs / "y", [1.0, 0.8])
    shutil.copytree(runs / "x", tmp_path / "alone")
    assert find_runs([runs, runs / "x"]) == [runs / "x", runs / "y"]  # each once
    out = tmp_path / "c.png"
    assert main(["plot", str(runs), "--keys", "loss", "val_loss", "--out", str(out)]) == 0
    assert "plotted loss, val_loss of 2 run(s)" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epochs_line_runs_up_by_passes_over_their_clips(tmp_path):
    # Run a did 2 epochs in 4 steps (batch 8 of 16 clips), run b 1 epoch in 4 (batch 4).
    a = write_run(tmp_path / "a", [1.0, 0.8, 0.6, 0.5], summary={"step": 4, "epochs": 2.0})
    b = write_run(tmp_path / "b", [1.0, 0.9, 0.7, 0.6], summary={"step": 4, "epochs": 1.0})
    assert epochs_per_step(a) == 0.5
    files = metrics_files([tmp_path])
    assert files == [a / "metrics.jsonl", b / "metrics.jsonl"]
    by_step = read_curves(files, ["loss"])
    assert [s for s, _ in by_step["a"]["loss"]] == [1, 2, 3, 4]
    by_epoch = read_curves(files, ["loss"], x="epoch")
    assert by_epoch["a"]["loss"] == [(0.5, 1.0), (1.0, 0.8), (1.5, 0.6), (2.0, 0.5)]
    assert [e for e, _ in by_epoch["b"]["loss"]] == [0.25, 0.5, 0.75, 1.0]
    running = write_run(tmp_path / "running", [1.0])  # no summary.json yet
    with pytest.raises(ValueError, match="no summary.json with the epochs done.*--x step"):
        read_curves([running / "metrics.jsonl"], ["loss"], x="epoch")
    with pytest.raises(ValueError, match="choose step or epoch"):
        read_curves(files, ["loss"], x="time")


def test_salt_plot_smooths_logs_and_aligns_by_epoch(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot is drawn with matplotlib")
    write_run(tmp_path / "runs" / "a", [1.0, 0.5, 0.4, 0.6], summary={"step": 4, "epochs": 2.0})
    write_run(tmp_path / "runs" / "b", [2.0, 1.0, 0.8, 0.7], summary={"step": 4, "epochs": 1.0})
    out = tmp_path / "c.png"
    args = ["plot", str(tmp_path / "runs"), "--smooth", "0.9", "--log", "--x", "epoch"]
    assert main([*args, "--out", str(out)]) == 0
    assert "plotted loss, clips_per_s of 2 run(s)" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad, words in (("1.5", "smoothing 1.5 is not in [0, 1)"), ("-0.1", "not in [0, 1)")):
        assert main(["plot", str(tmp_path / "runs"), "--smooth", bad]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    write_run(tmp_path / "runs" / "going", [1.0])
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "going: no summary.json with the epochs done" in err
    assert len(err.strip().splitlines()) == 1
