"""Run loggers (metrics.jsonl, TensorBoard, W&B offline) and `salt plot`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from salt.cli import main
from salt.config import apply_overrides
from salt.train import train


def test_tensorboard_gets_every_metric_the_loop_logs(tiny_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(tiny_config, {"train.steps": 4, "train.log_every": 2})
    config = tmp_path / "tiny.json"
    config.write_text(cfg.dumps())
    assert main(["train", "--config", str(config), "--set", "run.loggers=[tensorboard]"]) == 0
    run_dir = tmp_path / "runs" / cfg.run.name
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    logged = {k for r in jsonl for k in r if k not in ("step", "time")}
    assert {"loss", "loss/mse", "lr", "wd", "grad_norm", "clips_per_s", "mfu"} <= logged <= tags
    losses = [(e.step, e.value) for e in events.Scalars("loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in jsonl]
    assert [s for s, _ in losses] == [2, 4]


def test_tensorboard_shows_each_step_once_after_a_kill_and_resume(tiny_config, tmp_path):
    """Killed (SIGKILL, no checkpoint on the way out) after logging past its last
    checkpoint, then resumed: TensorBoard's curve has every step once, the resumed ones."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(
        tiny_config,
        {"train.steps": 12, "train.checkpoint_every": 4, "run.loggers": ["tensorboard"]},
    )
    config = tmp_path / "tb.json"
    config.write_text(cfg.dumps())
    run_dir = tmp_path / "runs" / cfg.run.name
    command = [sys.executable, "-m", "salt.cli", "train", "--config", str(config)]
    command += ["--resume", "auto", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # past step 4's checkpoint
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines and json.loads(lines[-1])["step"] >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.kill()
    proc.wait()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "resumed" in done.stderr, done.stderr[-2000:]

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("loss")]
    jsonl = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [s for s, _ in losses] == list(range(1, 13))
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in jsonl]


def test_wandb_takes_its_project_from_wandb_project(tiny_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    from salt_loggers import WandbLogger

    run_dir = Path(tiny_config.run.out) / "wb-env"
    run_dir.mkdir(parents=True)
    logger = WandbLogger(run_dir, {}, project=None)
    try:
        assert logger.run.project == "from-env"
    finally:
        logger.close()
    named = WandbLogger(run_dir, {}, project="named")
    try:
        assert named.run.project == "named"  # wandb:PROJECT wins
    finally:
        named.close()


def test_wandb_offline_run_is_written_beside_the_run(tiny_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = apply_overrides(
        tiny_config, {"train.steps": 2, "run.loggers": ["wandb:salt-tests"], "run.name": "wb"}
    )
    result = train(cfg)
    offline = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run_id = (result.run_dir / "wandb_id.txt").read_text().strip()
    assert offline[0].name.endswith(run_id)
    assert list(offline[0].glob("run-*.wandb"))


def test_an_unknown_logger_is_refused_before_training(tiny_config):
    from salt.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'tensorboard'"):
        train(apply_overrides(tiny_config, {"run.loggers": ["tensorbord"]}))


def test_salt_plot_draws_the_runs_curves_overlaid(tiny_config, tmp_path, capsys):
    from PIL import Image

    runs = []
    for name, lr in (("a", 1e-3), ("b", 3e-3)):
        cfg = apply_overrides(tiny_config, {"train.steps": 6, "run.name": name, "optim.lr": lr})
        runs.append(str(train(cfg).run_dir))
    out = tmp_path / "plot.png"
    assert main(["plot", *runs, "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] == 720 and image.shape[0] > 5 * 200  # loss, terms, lr, wd, grad ...
    # Both runs' colours are drawn (the palette's first two), not just the legend swatches.
    from salt.plots import colour_of

    for i in range(2):
        hits = np.all(image == np.array(colour_of(i), dtype=np.uint8), axis=-1).sum()
        assert hits > 300, (i, hits)
    assert main(["plot", runs[0], "--keys", "loss", "lr", "--out", str(tmp_path / "two.png")]) == 0
    two = np.asarray(Image.open(tmp_path / "two.png").convert("RGB"))
    assert two.shape[0] < image.shape[0]
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
