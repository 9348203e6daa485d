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

from salt.assemble import assemble
from salt.checkpoints import (
    best_path,
    list_checkpoints,
    read_best,
    restore_rng,
    restore_weights,
    resume_state,
    run_dir_of,
    save_best,
    save_checkpoint,
    training_state,
)
from salt.config import Config, flatten, from_dict
from salt.data import ReadableBatches, TooManyBadVideos, build_loader
from salt.distributed import agreed, resolve_device, setup_distributed
from salt.folders import RUN, WriterLock, claim
from salt.losses import Objective
from salt.models import SaltModel, fixed_lengths, masker_of
from salt.optim import apply_schedules, build_optimizer, lr_at, wd_at
from salt.perf import measure_peak_tflops
from salt.plan import default_run_name, dry_run, make_plan, total_steps
from salt.runlog import RunLog
from salt.step import StepParts, train_step
from salt.validate import Validation

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
    info = setup_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, info.local_rank)
    run_dir = run_folder(cfg, resume)
    lock = WriterLock(run_dir, RUN, "salt train", hint=BUSY)
    try:
        run_dir = agreed(info, lambda: open_run(run_dir, lock, resume))  # rank 0's name
        state = None
        if resume == "auto":
            state = auto_resume(cfg)
        elif resume is not None:
            state = resume_state(resume)[1]
        runlog = RunLog(run_dir, cfg, main=info.main, world=info.world, fresh=state is None)
        # From here a SIGTERM (a preemption while the teacher and data load) or SIGINT is
        # remembered, not fatal: the run takes its first step, checkpoints and stops cleanly.
        try:
            with StopFlag() as stop:
                return _train(cfg, info, device, runlog, state, stop)
        finally:
            runlog.close()
    finally:
        lock.release()


BUSY = "wait for it to end (or stop it), or choose another --run-name"


def run_folder(cfg: Config, resume: str | Path | None) -> Path:
    """The folder a run writes: the one being resumed, or ``run.out/run.name``."""
    if resume == "auto":
        return auto_run_folder(cfg)
    if resume is None:
        return Path(cfg.run.out) / (cfg.run.name or default_run_name(cfg))
    resume = Path(resume)
    return resume if resume.is_dir() else run_dir_of(resume)


def open_run(run_dir: Path, lock: WriterLock, resume: str | Path | None) -> Path:
    """Take ``run_dir`` for this process alone (rank 0's job) and return it: a new or empty
    folder, or one of salt's runs (never a folder of other files), locked against a second
    writer; a new run must not have checkpoints to overwrite."""
    if resume not in (None, "auto") and not run_dir.is_dir():
        raise FileNotFoundError(f"no checkpoint or run directory at {str(resume)!r}")
    claim(run_dir, RUN, "the run folder", hint="choose another --run-name or --out")
    lock.acquire()
    if resume is None and list_checkpoints(run_dir):
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already has checkpoints; continue it with "
            f"--resume {run_dir}, or choose another --run-name"
        )
    return run_dir


def step_parts(cfg: Config, model, teacher, objective, optimizer, info, device, bf16) -> StepParts:
    """What one optimizer step needs, from the config and the built pieces."""
    return StepParts(
        model=model,
        net=wrapped(model, cfg, info, device),
        teacher=teacher,
        objective=objective,
        optimizer=optimizer,
        device=device,
        info=info,
        mean=cfg.data.mean,
        std=cfg.data.std,
        params=tuple(p for p in model.parameters() if p.requires_grad),
        accum_steps=cfg.train.accum_steps,
        grad_clip=cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf,
        bf16=bf16,
    )


def wrapped(model: SaltModel, cfg: Config, info, device) -> torch.nn.Module:
    """What the step runs: the model, compiled when asked, in DDP under torchrun."""
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
    return net


def _train(
    cfg: Config, info, device, runlog: RunLog, state: dict | None, stop: StopFlag
) -> TrainResult:
    # Build: teacher, clips, the trainable pair, masks, loss, optimizer.
    torch.manual_seed(cfg.train.seed)
    run = assemble(cfg, "train", cfg.train.seed)
    teacher, clips, model = run.teacher.to(device), run.clips, run.model.to(device)
    masker = masker_of(cfg)
    objective = Objective(cfg.loss.name, cfg.loss.options, cfg.loss.target_norm)
    steps = total_steps(cfg, len(clips), info.world)
    optimizer = build_optimizer(model, cfg.optim)

    # Resume: weights, optimizer and counters now; the RNG once the loader has started.
    start_step, nonfinite_total = 0, 0
    if state is not None:
        start_step = restore_weights(state, model, optimizer)
        nonfinite_total = int(state.get("nonfinite_total", 0))
        runlog.resumed(start_step)

    accum = cfg.train.accum_steps
    loader = build_loader(
        clips, masker, cfg, start_step * accum, info.rank, info.world, device.type == "cuda"
    )
    bf16 = device.type == "cuda" and cfg.train.precision == "bf16"
    peak = cfg.train.peak_tflops or measure_peak_tflops(
        device, torch.bfloat16 if bf16 else torch.float32
    )
    parts = step_parts(cfg, model, teacher, objective, optimizer, info, device, bf16)
    validation = Validation.for_run(cfg, run.data, masker, info, device, bf16)
    plan = None
    if info.main:
        dims = {"teacher_dim": teacher.teacher_dim, "clips": len(clips), "info": info}
        plan = make_plan(cfg, model, masker, **dims, device=device)
        plan = attrs.evolve(plan, held_out=validation.describe())
    batches = ReadableBatches(loader, cfg.data.max_bad_fraction)
    best = best_so_far(runlog.run_dir, start_step) if info.main else None
    if state is not None:
        restore_rng(state, device)
    runlog.start(plan.lines() if plan else [], peak, steps, start_step)  # the clock starts

    def state_now(step: int) -> dict:
        return training_state(model, optimizer, step, cfg.to_dict(), nonfinite_total, device)

    # Loop: schedule, step, count failures, log, checkpoint, stop on a signal.
    step, consecutive_bad, stopped_by = start_step, 0, None
    model.train()
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
        saved = None
        if validation.due(step, steps) and not stop_now:
            held_out = validation.measure(model, teacher, objective)
            runlog.validated(step, held_out)
            if info.main and (best is None or held_out.loss < best[1]):
                saved = state_now(step)
                save_best(runlog.run_dir, saved, held_out.loss)
                best = (step, held_out.loss)
        # During a streak of skipped steps the newest checkpoint stays the last good one.
        periodic = step % cfg.train.checkpoint_every == 0 and consecutive_bad == 0
        if (periodic or step == steps or stop_now) and info.main:
            saved = saved or state_now(step)
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

    summary = runlog.finish(step, stopped_by, best, dataset_clips=len(clips))
    if info.enabled:
        dist.barrier()
    return TrainResult(runlog.run_dir, summary, step, stopped_by, model)


# Settings a restarted command may change without changing the run.
RESTART_FREE = ("train.progress", "data.num_workers")


def auto_run_folder(cfg: Config) -> Path:
    """The run ``--resume auto`` starts or continues: ``run.out/run.name``, a fixed name."""
    if not cfg.run.name:
        raise ValueError(
            "--resume auto needs a fixed run name (--run-name or run.name): a generated name "
            "differs on every start, so a restart could not find the run"
        )
    return Path(cfg.run.out) / cfg.run.name


def auto_resume(cfg: Config) -> dict | None:
    """The state of ``cfg``'s run to continue from - its newest intact checkpoint's, after
    checking the run was started with these settings - or None: start it."""
    run_dir = auto_run_folder(cfg)
    if not list_checkpoints(run_dir):
        return None
    state = resume_state(run_dir)[1]
    # A field added since the run started is missing from its config: it ran with the default.
    saved = {**flatten(Config().to_dict()), **flatten(state["config"])}
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
    return state


def best_so_far(run_dir: Path, start_step: int) -> tuple[int, float] | None:
    """``(step, held-out loss)`` of the run's best checkpoint when a run (re)starts at
    ``start_step``. One saved after that step belongs to steps the run is about to take
    again (a resume from an earlier checkpoint): it is removed, and the best is found anew."""
    best = read_best(run_dir)
    if best is not None and best[0] > start_step:
        best_path(run_dir).unlink()
        log.info(
            "removed checkpoints/best.pt of step %d, past step %d resumed", best[0], start_step
        )
        return None
    if best is None and best_path(run_dir).exists():
        best_path(run_dir).unlink()  # unreadable: replaced at the next measurement
    return best


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
    """The resolved config of the checkpoint a resume from ``path`` continues."""
    return from_dict(resume_state(path)[1]["config"])
