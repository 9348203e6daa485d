"""Run loggers (metrics.jsonl, TensorBoard, W&B offline) and `salt plot`."""

from __future__ import annotations

import json
import os
import shutil
import struct
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


def kill_past_a_checkpoint_then_resume(cfg, tmp_path, before_kill=None) -> Path:
    """Start ``cfg``'s run (12 steps, a checkpoint every 4) as a command, kill it (SIGKILL,
    no checkpoint on the way out) once it has logged step 6, past its step-4 checkpoint, and
    run the command again to resume and finish it; return the run folder. ``before_kill``
    (run folder -> None) looks at the folder just before the kill."""
    config = tmp_path / "killed.json"
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
    if before_kill is not None:
        before_kill(run_dir)
    proc.kill()
    proc.wait()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "resumed" in done.stderr, done.stderr[-2000:]
    return run_dir


def test_tensorboard_shows_each_step_once_after_a_kill_and_resume(tiny_config, tmp_path):
    """Killed after logging past its last checkpoint, then resumed: TensorBoard's curve has
    every step once, the resumed ones."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(
        tiny_config,
        {"train.steps": 12, "train.checkpoint_every": 4, "run.loggers": ["tensorboard"]},
    )
    run_dir = kill_past_a_checkpoint_then_resume(cfg, tmp_path)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("loss")]
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in losses] == list(range(1, 13))
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in jsonl]


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B offline and silent, its config, cache and data folders under ``tmp_path``, no
    W&B variable of the machine's in the way; W&B's per-process settings reset after."""
    pytest.importorskip("wandb")
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    yield
    import wandb

    wandb.teardown()  # the next test's W&B reads its own environment afresh


def wandb_offline_run(run_dir: Path) -> tuple[str, list]:
    """The one offline W&B run folder in ``RUN/wandb``: its W&B run's id and its records, read
    from its transaction log ``run-ID.wandb`` - what ``wandb sync`` uploads: protobuf
    ``Record`` messages in leveldb-log framing (32 KiB blocks, 7-byte chunk headers)."""
    import wandb
    from wandb.proto.wandb_internal_pb2 import Record

    # A finished run's file is written in the background until W&B's service process ends
    # (at the end of a command; here, in the test's process, now).
    wandb.teardown()
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    data, block, pos, chunks, records = log.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", data[:7]  # the file header: W&B's mark, magic, version
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in a block for a header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            records.append(Record.FromString(chunks))
            chunks = b""
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert folder.name.split("-")[3] == run.run_id  # offline-run-TIME-ID[-N]
    return run.run_id, records


def wandb_history(records: list) -> list[dict]:
    """The rows of the W&B run's history, in the order they were logged."""
    rows = (r.history.item for r in records if r.WhichOneof("record_type") == "history")
    return [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r} for r in rows]


def test_wandb_settings_come_from_fields_then_environment_then_defaults(monkeypatch):
    from salt_loggers import wandb_init_args

    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_init_args({}) == {
        "project": "salt-vla",  # W&B's own default would be the script's name
        **dict.fromkeys(("entity", "group", "tags", "mode")),
    }
    env = {"PROJECT": "p-env", "ENTITY": "e-env", "RUN_GROUP": "g-env", "TAGS": "a, b,"}
    for name, value in {**env, "MODE": "offline"}.items():
        monkeypatch.setenv(f"WANDB_{name}", value)
    from_env = {"project": "p-env", "entity": "e-env", "group": "g-env", "tags": ["a", "b"]}
    empty = {"wandb_project": "", "wandb_entity": "", "wandb_tags": (), "wandb_mode": ""}
    assert wandb_init_args(empty) == {**from_env, "mode": "offline"}
    fields = {"wandb_project": "p", "wandb_entity": "e", "wandb_group": "g"}
    fields.update(wandb_tags=("x",), wandb_mode="disabled")
    expected = {"project": "p", "entity": "e", "group": "g", "tags": ["x"], "mode": "disabled"}
    assert wandb_init_args(fields) == expected
    assert wandb_init_args({}, project="spec")["project"] == "spec"  # wandb:spec
    assert wandb_init_args({"wandb_project": "spec"}, project="spec")["project"] == "spec"
    with pytest.raises(ValueError, match="keep one of them"):
        wandb_init_args({"wandb_project": "field"}, project="spec")


def test_wandb_offline_run_is_written_beside_the_run_with_its_settings(
    tiny_config, monkeypatch, wandb_offline
):
    """Fields win over W&B's variables, which win over the defaults - as the run records."""
    monkeypatch.setenv("WANDB_PROJECT", "p-env")
    monkeypatch.setenv("WANDB_ENTITY", "e-env")
    monkeypatch.setenv("WANDB_RUN_GROUP", "g-env")
    monkeypatch.setenv("WANDB_TAGS", "t-env")
    overrides = {"train.steps": 2, "run.loggers": ["wandb"], "run.name": "wb"}
    overrides.update({"run.wandb_group": "sweep", "run.wandb_tags": ["a", "b"]})
    result = train(apply_overrides(tiny_config, overrides))
    run_id, records = wandb_offline_run(result.run_dir)
    assert run_id == (result.run_dir / "wandb_id.txt").read_text().strip()
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "wb"
    assert (run.project, run.entity, run.run_group) == ("p-env", "e-env", "sweep")
    assert list(run.tags) == ["a", "b"]
    jsonl = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    rows = wandb_history(records)
    assert [(r["_step"], r["loss"]) for r in rows] == [(j["step"], j["loss"]) for j in jsonl]


def test_wandb_keeps_one_offline_run_with_each_step_once_after_a_kill_and_resume(
    tiny_config, tmp_path, wandb_offline
):
    """Killed after logging past its step-4 checkpoint, then resumed: the same W&B run (its
    id) goes on in one offline folder, whose history has every step once with the values
    metrics.jsonl keeps (the held-out loss too) and the times they were taken."""
    overrides = {"train.steps": 12, "train.checkpoint_every": 4, "train.eval_every": 4}
    overrides.update({"train.eval_batches": 1, "run.loggers": ["wandb"]})
    cfg = apply_overrides(tiny_config, overrides)
    before: dict[str, object] = {}

    def look(run_dir: Path) -> None:
        before["id"] = (run_dir / "wandb_id.txt").read_text()
        before["folders"] = len(list((run_dir / "wandb").glob("offline-run-*")))

    run_dir = kill_past_a_checkpoint_then_resume(cfg, tmp_path, before_kill=look)
    run_id, records = wandb_offline_run(run_dir)  # one folder: the resumed start's
    assert before == {"id": run_id, "folders": 1}
    assert (run_dir / "wandb_id.txt").read_text() == run_id
    rows = wandb_history(records)
    assert [r["_step"] for r in rows] == list(range(1, 13))
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: {} for r in jsonl}
    for r in jsonl:  # a step's metrics line and held-out line make one W&B row
        logged[r["step"]].update(r)
    for row in rows:
        want = logged[row["_step"]]
        assert row["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert row.get("val_loss", "none") == pytest.approx(want.get("val_loss", "none"))
        assert row["_timestamp"] == pytest.approx(want["time"])
    assert [r["_step"] for r in rows if "val_loss" in r] == [4, 8, 12]


def test_wandb_begins_a_new_run_when_a_run_starts_afresh(tiny_config, wandb_offline):
    """A start that saved no checkpoint left its W&B id and folder; starting the run anew
    (its metrics.jsonl starts anew too) begins a new W&B run and removes that folder."""
    from salt_loggers import WandbLogger

    run_dir = Path(tiny_config.run.out) / "afresh"
    (run_dir / "wandb" / "offline-run-20250101_000000-0ld1d").mkdir(parents=True)
    (run_dir / "wandb" / "offline-run-20250101_000000-other").mkdir()  # not this run's
    (run_dir / "wandb_id.txt").write_text("0ld1d")
    logger = WandbLogger(run_dir, {"run": {"wandb_project": "p"}})
    try:
        assert logger.run is None  # not yet: resumed() would continue the old W&B run
        logger.log(1, {"loss": 0.5, "time": 100.0})
    finally:
        logger.close()
    assert not (run_dir / "wandb" / "offline-run-20250101_000000-0ld1d").exists()
    shutil.rmtree(run_dir / "wandb" / "offline-run-20250101_000000-other")  # kept: not ours
    run_id, records = wandb_offline_run(run_dir)
    assert run_id == (run_dir / "wandb_id.txt").read_text() != "0ld1d"
    assert [(r["_step"], r["loss"]) for r in wandb_history(records)] == [(1, 0.5)]


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
    assert image.shape[1] == 760 and image.shape[0] > 5 * 240  # loss, terms, lr, wd, grad ...
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
