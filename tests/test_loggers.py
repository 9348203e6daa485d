"""Run loggers (metrics.jsonl, TensorBoard, W&B offline) and `salt plot`."""

from __future__ import annotations

import json

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
