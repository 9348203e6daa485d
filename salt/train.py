"""The training loop: build, loop, step, log, save.

The step itself is :func:`salt.step.train_step`, the bookkeeping :class:`salt.runlog.RunLog`,
checkpoints :mod:`salt.checkpoints`, the process group :mod:`salt.distributed` and the
plan :mod:`salt.plan`; this file only puts them in order.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path

import attrs
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from salt.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
    restore_weights,
    run_dir_of,
    save_checkpoint,
    training_state,
)
from salt.config import Config, flatten, from_dict
from salt.data import ReadableBatches, TooManyBadVideos, build_loader, build_source
from salt.distributed import resolve_device, setup_distributed
from salt.io import check_folder
from salt.losses import Objective
from salt.models import (
    SaltModel,
    fixed_lengths,
    masker_of,
    predictor_of,
    student_of,
    teacher_of,
)
from salt.optim import apply_schedules, build_optimizer, lr_at, wd_at
from salt.perf import measure_peak_tflops
from salt.plan import default_run_name, dry_run, make_plan, total_steps
from salt.runlog import RunLog
from salt.step import StepParts, train_step

__all__ = ["train", "dry_run", "TrainResult", "TrainingDiverged", "TooManyBadVideos"]

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite for too many steps in a row."""


@attrs.frozen
class TrainResult:
    """What a finished (or cleanly stopped) run left behind."""

    run_dir: Path
    summary: dict
    step: int
    stopped_by: str | None = None
    model: SaltModel | None = attrs.field(default=None, repr=False)  # the trained pair


class StopFlag:
    """Remembers the first SIGINT/SIGTERM so the loop can checkpoint and leave cleanly."""

    def __init__(self):
        self.signal: str | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, resume: str | Path | None = None) -> TrainResult:
    """Train a student against ``cfg.teacher`` and return where the run was written.

    ``resume``: a run directory or checkpoint to continue (its own config is used: pass
    ``config_from_checkpoint``'s), or ``"auto"``: continue ``cfg``'s run from its newest
    checkpoint if it has one, else start it - the same call starts a run and, after a
    preemption, continues it."""
    if resume == "auto":
        resume = auto_resume(cfg)
    info = setup_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, info.local_rank)
    state = None
    if resume is not None:
        ckpt_path = resolve_checkpoint(resume)
        state = load_checkpoint(ckpt_path)
        run_dir = run_dir_of(ckpt_path)
    else:
        run_dir = check_folder(
            Path(cfg.run.out) / (cfg.run.name or default_run_name(cfg)), "the run folder"
        )
        if info.main and list_checkpoints(run_dir):
            raise FileExistsError(
                f"run directory {str(run_dir)!r} already has checkpoints; continue it with "
                f"--resume {run_dir}, or choose another --run-name"
            )
    runlog = RunLog(run_dir, cfg, main=info.main, world=info.world, fresh=state is None)
    try:
        return _train(cfg, info, device, runlog, state)
    finally:
        runlog.close()


def _train(cfg: Config, info, device, runlog: RunLog, state: dict | None) -> TrainResult:
    # Build: teacher, clips, the trainable pair, masks, loss, optimizer.
    torch.manual_seed(cfg.train.seed)
    teacher = teacher_of(cfg).to(device)
    clips = build_source(cfg.data, "train", cfg.train.seed, cache=teacher.cache)
    student = student_of(cfg)
    predictor = predictor_of(cfg, student.embed_dim, teacher.teacher_dim)
    model = SaltModel(student, predictor).to(device)
    masker = masker_of(cfg)
    objective = Objective(cfg.loss.name, cfg.loss.options, cfg.loss.target_norm)
    steps = total_steps(cfg, len(clips), info.world)
    optimizer = build_optimizer(model, cfg.optim, fused=device.type == "cuda")

    # Resume: weights, optimizer and counters now; the RNG once the loader has started.
    start_step, nonfinite_total = 0, 0
    if state is not None:
        start_step = restore_weights(state, model, optimizer)
        nonfinite_total = int(state.get("nonfinite_total", 0))
        runlog.resumed(start_step)

    # Fixed mask lengths give every step the same shapes: one graph, no dynamic shapes.
    net = (
        torch.compile(model, dynamic=False if fixed_lengths(cfg) else None)
        if cfg.train.compile
        else model
    )
    if info.enabled:
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    accum = cfg.train.accum_steps
    loader = build_loader(
        clips, masker, cfg, start_step * accum, info.rank, info.world, device.type == "cuda"
    )
    bf16 = device.type == "cuda" and cfg.train.precision == "bf16"
    peak = cfg.train.peak_tflops or measure_peak_tflops(
        device, torch.bfloat16 if bf16 else torch.float32
    )
    parts = StepParts(
        model=model,
        net=net,
        teacher=teacher,
        objective=objective,
        optimizer=optimizer,
        device=device,
        info=info,
        mean=cfg.data.mean,
        std=cfg.data.std,
        params=tuple(p for p in model.parameters() if p.requires_grad),
        accum_steps=accum,
        grad_clip=cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf,
        bf16=bf16,
    )
    plan = None
    if info.main:
        dims = {"teacher_dim": teacher.teacher_dim, "clips": len(clips), "info": info}
        plan = make_plan(cfg, model, masker, **dims, device=device)
    batches = ReadableBatches(loader, cfg.data.max_bad_fraction)
    if state is not None:
        restore_rng(state, device)
    runlog.start(plan.lines() if plan else [], peak, steps, start_step)  # the clock starts

    # Loop: schedule, step, count failures, log, checkpoint, stop on a signal.
    step, consecutive_bad, stopped_by = start_step, 0, None
    model.train()
    with StopFlag() as stop:
        while step < steps:
            lr, wd = lr_at(step, cfg.optim, steps), wd_at(step, cfg.optim, steps)
            apply_schedules(optimizer, lr, wd)
            result = train_step(parts, batches, stop=stop.signal is not None)
            step += 1
            if result.finite:
                consecutive_bad = 0
            else:
                nonfinite_total += 1
                consecutive_bad += 1
                log.warning("step %d: non-finite loss or gradient; step skipped", step)
                check_divergence(consecutive_bad, step, cfg, runlog.run_dir)
            runlog.step(step, result, lr, wd, nonfinite_total, batches.bad)

            stop_now = result.stop
            # During a streak of skipped steps the newest checkpoint stays the last good one.
            periodic = step % cfg.train.checkpoint_every == 0 and consecutive_bad == 0
            if (periodic or step == steps or stop_now) and info.main:
                saved = training_state(
                    model, optimizer, step, cfg.to_dict(), nonfinite_total, device
                )
                save_checkpoint(runlog.run_dir, step, saved, cfg.train.keep_checkpoints)
            if stop_now:
                stopped_by = stop.signal or "signal on another rank"
                log.warning(
                    "stopped by %s at step %d; resume with: salt train --resume %s",
                    stopped_by,
                    step,
                    runlog.run_dir,
                )
                break

    summary = runlog.finish(step, stopped_by)
    if info.enabled:
        dist.barrier()
    return TrainResult(runlog.run_dir, summary, step, stopped_by, model)


# Settings a restarted command may change without changing the run.
RESTART_FREE = ("train.progress", "data.num_workers")


def auto_resume(cfg: Config) -> Path | None:
    """``cfg``'s run directory if it has a checkpoint to continue from (after checking the
    run was started with these settings), else None: start it."""
    if not cfg.run.name:
        raise ValueError(
            "--resume auto needs a fixed run name (--run-name or run.name): a generated name "
            "differs on every start, so a restart could not find the run"
        )
    run_dir = Path(cfg.run.out) / cfg.run.name
    found = list_checkpoints(run_dir) if run_dir.is_dir() else []
    if not found:
        return None
    saved = flatten(load_checkpoint(found[-1][1])["config"])
    mine = flatten(cfg.to_dict())
    differ = sorted(
        k for k in set(saved) | set(mine) if k not in RESTART_FREE and saved.get(k) != mine.get(k)
    )
    if differ:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {mine.get(k)!r})" for k in differ[:4])
        raise ValueError(
            f"run {str(run_dir)!r} was started with other settings: {shown}; restart the same "
            f"command, continue with the changes through --resume {run_dir} --set ..., or "
            f"choose another --run-name"
        )
    return run_dir


def check_divergence(consecutive_bad: int, step: int, cfg: Config, run_dir: Path) -> None:
    """Stop a run whose loss stayed non-finite for ``train.max_nonfinite`` steps in a row."""
    if consecutive_bad < cfg.train.max_nonfinite:
        return
    last = list_checkpoints(run_dir)
    where = (
        f"the last good checkpoint is {last[-1][1]}" if last else "no checkpoint was written yet"
    )
    raise TrainingDiverged(
        f"the loss was non-finite for {consecutive_bad} steps in a row (up to step {step}); "
        f"{where}. Lower optim.lr, check the teacher's targets, or raise train.max_nonfinite"
    )


def config_from_checkpoint(path: str | Path) -> Config:
    """The resolved config a checkpoint was trained with."""
    return from_dict(load_checkpoint(path)["config"])
