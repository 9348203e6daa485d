"""The training loop: run directory, falling loss, exact resume, non-finite steps, signals, DDP."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salt.checkpoints import list_checkpoints, load_checkpoint
from salt.config import apply_overrides, build_config
from salt.hookspecs import hookimpl
from salt.plugins import pm
from salt.teachers import Teacher
from salt.train import TrainingDiverged, train

REPO = Path(__file__).resolve().parent.parent


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_is_complete_and_loss_falls(tiny_config):
    cfg = apply_overrides(
        tiny_config,
        {
            "train.steps": 16,
            "train.checkpoint_every": 8,
            "optim.max_warmup_fraction": 0.25,
            "teacher.spec": "random:vit_tiny",
        },
    )
    result = train(cfg)
    run = result.run_dir
    assert run == Path(cfg.run.out) / "tiny"

    saved = json.loads((run / "config.json").read_text())
    assert saved["student"]["name"] == "vit_tiny"
    assert saved["optim"]["grad_clip"] == 1.0
    logs = [p.name for p in run.glob("*.log")]
    assert len(logs) == 1 and re.fullmatch(r"tiny_\d{8}_\d{6}_pid\d+\.log", logs[0])
    assert "step 16/16" in (run / logs[0]).read_text()

    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 17))
    for key in ("loss", "loss/mse", "lr", "wd", "grad_norm", "clips_per_s", "tokens_per_s", "mfu"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[0]["lr"] < records[2]["lr"]  # warming up
    assert records[-1]["lr"] == pytest.approx(cfg.optim.min_lr, rel=0.2)
    assert records[0]["wd"] == pytest.approx(0.04, abs=0.01)
    assert [s for s, _ in list_checkpoints(run)] == [8, 16]

    summary = json.loads((run / "summary.json").read_text())
    assert summary == result.summary
    losses = [r["loss"] for r in records]
    assert summary["min_loss"] == min(losses)
    assert summary["min_loss_step"] == 1 + losses.index(min(losses))
    assert summary["last_loss"] == losses[-1]
    assert summary["grad_clip"] == 1.0
    assert isinstance(summary["late_rebound"], bool)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_resume_gives_identical_losses(tiny_config, tmp_path):
    cfg = apply_overrides(
        tiny_config, {"train.steps": 8, "train.checkpoint_every": 4, "student.drop_path": 0.1}
    )
    full = train(cfg).run_dir

    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    (resumed / "checkpoints" / "step_00000008.pt").unlink()
    (resumed / "summary.json").unlink()
    result = train(cfg, resume=resumed)

    assert result.step == 8
    assert [r["loss"] for r in read_metrics(resumed)] == [r["loss"] for r in read_metrics(full)]
    a = load_checkpoint(full / "checkpoints" / "step_00000008.pt")
    b = load_checkpoint(resumed / "checkpoints" / "step_00000008.pt")
    for key, value in a["student"].items():
        assert torch.equal(value, b["student"][key]), key
    assert len(list(resumed.glob("*.log"))) == 2  # one log file per process that ran


def test_resume_from_a_directory_without_checkpoints_is_a_clear_error(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoints"):
        train(tiny_config, resume=tmp_path / "empty")


def test_fresh_run_refuses_to_overwrite_a_run_with_checkpoints(tiny_config):
    cfg = apply_overrides(tiny_config, {"train.steps": 4})
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def test_gradient_accumulation_matches_a_full_batch(tiny_config, tmp_path):
    # Tube masks keep every sample's token counts equal, so the two runs see the same masks.
    common = {"train.steps": 1, "mask.name": "tube", "train.checkpoint_every": 1}
    full = train(
        apply_overrides(tiny_config, {**common, "run.name": "full", "train.batch_size": 4})
    )
    accum = train(
        apply_overrides(
            tiny_config,
            {**common, "run.name": "accum", "train.batch_size": 2, "train.accum_steps": 2},
        )
    )
    assert read_metrics(accum.run_dir)[0]["loss"] == pytest.approx(
        read_metrics(full.run_dir)[0]["loss"], rel=1e-5
    )
    for (name, p), q in zip(full.model.named_parameters(), accum.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


class FlakyTeacher(Teacher):
    """Pixel-like targets, NaN on chosen calls."""

    def __init__(self, grid, bad_calls):
        super().__init__()
        self.grid = grid
        self.teacher_dim = 8
        self.bad_calls = bad_calls
        self.calls = 0

    def forward(self, video):
        self.calls += 1
        b = video.shape[0]
        out = (
            video.mean(dim=1)
            .flatten(1)[:, :8]
            .unsqueeze(1)
            .expand(b, math.prod(self.grid), 8)
            .clone()
        )
        if self.calls in self.bad_calls:
            out[:] = float("nan")
        return out


class FlakyPlugin:
    @hookimpl
    def register_teachers(self, register):
        register(
            "flaky",
            lambda arg, geometry: FlakyTeacher(geometry.grid, {int(x) for x in arg.split(",")}),
            "test",
        )


@pytest.fixture
def flaky_plugin():
    pm.register(FlakyPlugin(), name="flaky-test")
    try:
        yield
    finally:
        pm.unregister(name="flaky-test")


def test_a_nonfinite_step_is_skipped_and_counted(tiny_config, flaky_plugin):
    cfg = apply_overrides(tiny_config, {"teacher.spec": "flaky:3", "train.steps": 5})
    result = train(cfg)
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records] == [1, 2, 4, 5]  # step 3 was skipped, not logged
    assert records[-1]["nonfinite_total"] == 1
    assert result.summary["nonfinite_steps"] == 1
    assert all(math.isfinite(r["loss"]) for r in records)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_consecutive_nonfinite_steps_stop_the_run_keeping_the_last_checkpoint(
    tiny_config, flaky_plugin
):
    cfg = apply_overrides(
        tiny_config,
        {
            "teacher.spec": "flaky:5,6,7",
            "train.steps": 10,
            "train.checkpoint_every": 2,
            "train.max_nonfinite": 3,
        },
    )
    with pytest.raises(TrainingDiverged, match="non-finite for 3 steps in a row") as err:
        train(cfg)
    assert "step_00000004.pt" in str(err.value)
    run = Path(cfg.run.out) / "tiny"
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]
    state = load_checkpoint(run)
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    args = [
        sys.executable,
        "-m",
        "salt.cli",
        "train",
        "--out",
        str(tmp_path),
        "--run-name",
        "sig",
        "--steps",
        "100000",
        "--no-progress",
    ]
    for key, value in {
        "data.spec": "synthetic:64",
        "data.num_frames": 4,
        "data.image_size": 64,
        "data.num_workers": 1,
        "predictor.depth": 1,
        "predictor.width": 32,
        "predictor.heads": 2,
        "train.batch_size": 2,
        "train.log_every": 1,
        "train.checkpoint_every": 100000,
        "train.peak_tflops": 1.0,
        "teacher.spec": "pixels",
    }.items():
        args += ["--set", f"{key}={value}"]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or not metrics.read_text().strip()):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    steps = [s for s, _ in list_checkpoints(tmp_path / "sig")]
    assert len(steps) == 1 and steps[0] >= 1
    summary = json.loads((tmp_path / "sig" / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == steps[0]


def train_on_two_ranks(config: Path, out: Path) -> None:
    """``tests/ddp_train.py`` under torchrun, 2 gloo processes: it trains the config file's
    run and saves each rank's parameters into ``out``."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    args += ["2", str(REPO / "tests" / "ddp_train.py"), str(config), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_processes_end_with_identical_parameters(tmp_path, tiny_overrides):
    config = tmp_path / "cfg.json"
    cfg = build_config(
        overrides={
            **tiny_overrides,
            "train.steps": 3,
            "train.batch_size": 2,
            "student.drop_path": 0.1,
        }
    )
    config.write_text(json.dumps(cfg.to_dict()))
    train_on_two_ranks(config, tmp_path)
    rank0, rank1 = (
        load_file(tmp_path / "rank0.safetensors"),
        load_file(tmp_path / "rank1.safetensors"),
    )
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    run = Path(cfg.run.out) / cfg.run.name
    assert len(list(run.glob("*.log"))) == 1  # rank 0 alone writes
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    # Two ranks each saw batch 2, so the logged throughput counts 4 clips per step.
    initial = load_file(tmp_path / "initial.safetensors")
    assert any(not torch.equal(initial[k], rank0[k]) for k in initial)


def test_a_step_waits_for_the_device_once_outside_logging_steps(tiny_config, monkeypatch):
    """Every read of a tensor's value into Python (item, tolist, bool, float, int) that the
    loop makes between two metrics lines: one per optimizer step, the finite/stop decision.
    Host-side data work (collate, masks) and torch's own CPU optimizer bookkeeping are not
    device reads and are not counted."""
    import traceback

    import salt.runlog
    import salt.train

    host_side = {"data.py", "batch.py", "masking.py"}
    reads: list[tuple[int, str]] = []
    step = {"n": 0}

    def counted(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            path = Path(caller.filename)
            ours = path.parent.name in ("salt", "salt_vit", "salt_losses", "salt_teachers")
            if ours and path.name not in host_side:
                reads.append((step["n"], f"{path.name}:{caller.lineno}"))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        counted(name)
    real_step = salt.train.train_step

    def numbered(*args, **kwargs):
        step["n"] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(salt.train, "train_step", numbered)
    cfg = apply_overrides(tiny_config, {"train.steps": 6, "train.log_every": 3})
    train(cfg)
    per_step = [[where for n, where in reads if n == s] for s in range(1, 7)]
    for s in (1, 2, 4, 5):  # not logging steps
        assert len(per_step[s - 1]) == 1 and per_step[s - 1][0].startswith("distributed.py"), (
            per_step
        )
    for s in (3, 6):  # the metrics line reads the window's sums once
        assert any(w.startswith("runlog.py") for w in per_step[s - 1]), per_step


def test_resume_auto_killed_three_times_ends_like_an_uninterrupted_run(tmp_path):
    """A preemptible job: the same command line, SIGKILLed (no checkpoint on the way out)
    after steps 5, 11 and 17 of 24, restarted each time; its metrics equal an uninterrupted
    run's, step for step."""
    settings = {
        "data.spec": "synthetic:32",
        "data.num_frames": 4,
        "data.image_size": 32,
        "data.frame_step": 2,
        "data.num_workers": 0,
        "student.name": "vit_tiny",
        "predictor.depth": 1,
        "predictor.width": 32,
        "predictor.heads": 2,
        "train.batch_size": 2,
        "train.log_every": 1,
        "train.checkpoint_every": 4,
        "train.peak_tflops": 1.0,
        "train.device": "cpu",
        "teacher.spec": "pixels",
    }

    def command(name: str) -> list[str]:
        args = [sys.executable, "-m", "salt.cli", "train", "--out", str(tmp_path)]
        args += ["--run-name", name, "--steps", "24", "--no-progress", "--resume", "auto"]
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        return args

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(command("whole"), capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    metrics = tmp_path / "preempted" / "metrics.jsonl"
    for kill_after in (5, 11, 17):
        proc = subprocess.Popen(
            command("preempted"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            if lines and json.loads(lines[-1])["step"] >= kill_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.kill()
        proc.wait()
    checkpoints = [s for s, _ in list_checkpoints(tmp_path / "preempted")]
    assert checkpoints and checkpoints[-1] < 24  # it was cut short
    done = subprocess.run(command("preempted"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed" in done.stderr
    ours, theirs = read_metrics(tmp_path / "preempted"), read_metrics(tmp_path / "whole")
    assert [r["step"] for r in ours if "loss" in r] == list(range(1, 25))
    assert [r["loss"] for r in ours if "loss" in r] == [r["loss"] for r in theirs if "loss" in r]
    # The demo profile's held-out loss (train.eval_every), measured at the last step.
    held_out = [(r["step"], r["val_loss"]) for r in theirs if "val_loss" in r]
    assert held_out and held_out == [(r["step"], r["val_loss"]) for r in ours if "val_loss" in r]


def test_resume_auto_needs_a_run_name_and_the_same_settings(tiny_config, monkeypatch):
    import salt.train
    from salt.train import auto_resume

    with pytest.raises(ValueError, match="needs a fixed run name"):
        train(apply_overrides(tiny_config, {"run.name": ""}), resume="auto")
    assert not (tiny_config.run.out and Path(tiny_config.run.out).exists())  # nothing made
    train(apply_overrides(tiny_config, {"train.steps": 4}), resume="auto")
    assert auto_resume(apply_overrides(tiny_config, {"train.steps": 4}))["step"] == 4
    with pytest.raises(ValueError, match=r"other settings: optim.lr \(0.001 -> 0.002\)"):
        auto_resume(apply_overrides(tiny_config, {"train.steps": 4, "optim.lr": 2e-3}))
    # A run started before a field existed ran with its default: it continues.
    saved = salt.train.resume_state

    def older(path):
        where, state = saved(path)
        del state["config"]["run"]["wandb_group"]
        return where, state

    monkeypatch.setattr(salt.train, "resume_state", older)
    assert auto_resume(apply_overrides(tiny_config, {"train.steps": 4}))["step"] == 4
    with pytest.raises(ValueError, match=r"other settings: run.wandb_group \('' -> 'g'\)"):
        auto_resume(apply_overrides(tiny_config, {"train.steps": 4, "run.wandb_group": "g"}))


def test_resume_auto_under_torchrun_starts_then_continues(tmp_path):
    """Two gloo processes: a first start with --resume auto trains; the same command again
    (a requeued job) continues from the run's checkpoint instead of refusing it."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    args += ["2", "-m", "salt.cli", "train", "--out", str(tmp_path), "--run-name", "requeued"]
    args += ["--steps", "3", "--no-progress", "--resume", "auto", "--device", "cpu"]
    for key, value in {
        "data.spec": "synthetic:16",
        "data.num_frames": 4,
        "data.image_size": 32,
        "data.num_workers": 0,
        "predictor.depth": 1,
        "predictor.width": 32,
        "predictor.heads": 2,
        "train.batch_size": 2,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.peak_tflops": 1.0,
        "teacher.spec": "pixels",
    }.items():
        args += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stderr and "already has checkpoints" not in again.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "requeued") if "loss" in r] == [1, 2, 3]


def test_a_sigterm_while_the_run_loads_stops_it_cleanly_after_one_step(
    tiny_config, tmp_path, monkeypatch
):
    """A preemption that lands while the teacher and data load (the writer lock already
    taken) is remembered: the run takes one step, checkpoints it and stops, never dying
    by the signal half-set-up."""
    import salt.train as train_module

    real = train_module.assemble

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, before the loop
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "assemble", preempted)
    cfg = apply_overrides(tiny_config, {"train.steps": 6, "run.out": str(tmp_path)})
    result = train(cfg)
    assert result.stopped_by == "SIGTERM" and result.step == 1
    assert [step for step, _ in list_checkpoints(result.run_dir)] == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
