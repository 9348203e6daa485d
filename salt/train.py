"""The training loop: build, loop, step, log, save. One screen per concern, no framework."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from salt import __version__
from salt.config import Config, from_dict
from salt.data import build_loader, normalize_clips, steps_per_epoch
from salt.losses import Objective
from salt.masking import sample_keys
from salt.model import (
    SaltModel,
    build_clips,
    build_masker,
    build_predictor,
    build_student,
    build_teacher,
    masked_loss,
)
from salt.optim import apply_schedules, build_optimizer, lr_at, warmup_steps, wd_at
from salt.perf import measure_peak_tflops
from salt.runs import (
    MetricsLog,
    attach_log_file,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    run_dir_of,
    save_checkpoint,
    summarize,
    write_json,
)

log = logging.getLogger(__name__)
# Per-step lines go to the run's log file; the CLI hides them on the console behind the bar.
step_log = logging.getLogger("salt.metrics")


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


@attrs.frozen
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = device_spec != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.device asks for CUDA but torch sees no GPU; run `salt doctor` to see why, "
                "or pass --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def default_run_name(cfg: Config) -> str:
    """``<student>-<teacher>-<timestamp>`` with path-unsafe characters replaced."""
    raw = f"{cfg.student.name}-{cfg.teacher.spec}-{time.strftime('%Y%m%d_%H%M%S')}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def total_steps(cfg: Config, dataset_size: int, world: int) -> int:
    """``train.epochs`` passes over the data when set, else ``train.steps``."""
    if cfg.train.epochs > 0:
        return cfg.train.epochs * steps_per_epoch(dataset_size, cfg, world)
    if cfg.train.steps <= 0:
        raise ValueError("set train.steps (or train.epochs) to a positive number")
    return cfg.train.steps


@attrs.define
class _Window:
    """Sums over the steps since the last metrics line."""

    loss: float = 0.0
    terms: dict = attrs.Factory(dict)
    steps: int = 0
    clips: int = 0
    flops: float = 0.0
    t0: float = attrs.Factory(time.perf_counter)


class TooManyBadVideos(RuntimeError):
    """More than ``data.max_bad_fraction`` of the videos seen could not be read."""


class _Batches:
    """Batches from the loader, skipping unreadable videos with a warning naming each."""

    MIN_SEEN = 20  # judge the share of bad videos only once a few were tried

    def __init__(self, loader, max_bad_fraction: float):
        self.iterator = iter(loader)
        self.max_bad_fraction = max_bad_fraction
        self.seen = 0
        self.bad = 0

    def __next__(self) -> dict:
        while True:
            batch = next(self.iterator)
            self.seen += batch["size"] + len(batch["errors"])
            for message in batch["errors"]:
                self.bad += 1
                log.warning("skipped an unreadable video: %s", message)
            if self.seen >= self.MIN_SEEN and self.bad > self.max_bad_fraction * self.seen:
                raise TooManyBadVideos(
                    f"{self.bad} of {self.seen} videos could not be read, more than "
                    f"data.max_bad_fraction={self.max_bad_fraction}; check the data (the log "
                    f"names each file) or raise data.max_bad_fraction"
                )
            if batch["size"]:
                return batch


class _StopFlag:
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


def _agree(flag: bool, info: DistInfo, device: torch.device, any_rank: bool) -> bool:
    """Make every rank take the same decision (any rank's True, or all ranks' True)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if any_rank else dist.ReduceOp.MIN)
    return bool(t.item())


def train(cfg: Config, resume: str | Path | None = None) -> TrainResult:
    """Train a student against ``cfg.teacher`` and return where the run was written."""
    info = setup_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, info.local_rank)

    state = None
    if resume is not None:
        ckpt_path = resolve_checkpoint(resume)
        state = load_checkpoint(ckpt_path)
        run_dir = run_dir_of(ckpt_path)
    else:
        run_dir = Path(cfg.run.out) / (cfg.run.name or default_run_name(cfg))
        if info.main and list_checkpoints(run_dir):
            raise FileExistsError(
                f"run directory {str(run_dir)!r} already has checkpoints; continue it with "
                f"--resume {run_dir}, or choose another --run-name"
            )
    run_name = run_dir.name
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    handler = None
    if info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = attach_log_file(run_dir, run_name)
        write_json(run_dir / "config.json", cfg.to_dict())

    try:
        return _train(cfg, info, device, run_dir, metrics, state)
    finally:
        if handler is not None:
            logging.getLogger("salt").removeHandler(handler)
            handler.close()


def _train(cfg, info, device, run_dir, metrics, state) -> TrainResult:
    torch.manual_seed(cfg.train.seed)
    teacher = build_teacher(cfg).to(device)
    dataset = build_clips(cfg, teacher, "train", cfg.train.seed)
    student = build_student(cfg)
    predictor = build_predictor(cfg, student.embed_dim, teacher.teacher_dim)
    model = SaltModel(student, predictor).to(device)
    masker = build_masker(cfg)
    objective = Objective(cfg.loss.name, cfg.loss.options)
    steps = total_steps(cfg, len(dataset), info.world)
    optimizer = build_optimizer(model, cfg.optim, fused=device.type == "cuda")

    start_step, nonfinite_total = 0, 0
    if state is not None:
        model.student.load_state_dict(state["student"])
        model.predictor.load_state_dict(state["predictor"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
        nonfinite_total = int(state.get("nonfinite_total", 0))
        if info.main:
            metrics.truncate_after(start_step)
        log.info("resumed %s at step %d", run_dir, start_step)

    use_amp = device.type == "cuda" and cfg.train.precision == "bf16"
    net = model
    if cfg.train.compile:
        net = torch.compile(net)
    if info.enabled:
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )

    accum = cfg.train.accum_steps
    loader = build_loader(
        dataset, masker, cfg, start_step * accum, info.rank, info.world, device.type == "cuda"
    )
    peak = cfg.train.peak_tflops or measure_peak_tflops(
        device, torch.bfloat16 if use_amp else torch.float32
    )
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    params = [p for p in model.parameters() if p.requires_grad]
    if info.main:
        plan = make_plan(cfg, student, predictor, teacher, masker, len(dataset), info, device)
        for line in plan.lines():
            log.info("%s", line)
        log.info(
            "MFU is measured against a peak of %.1f TFLOP/s (set train.peak_tflops to change)",
            peak,
        )

    bar = None
    if info.main and cfg.train.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    batches = _Batches(loader, cfg.data.max_bad_fraction)
    if state is not None:
        # Restored only now: starting the loader's iterator draws from the global RNG.
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    consecutive_bad = 0
    window = _Window()
    step = start_step
    stopped_by = None
    model.train()
    with _StopFlag() as stop:
        while step < steps:
            lr, wd = lr_at(step, cfg.optim, steps), wd_at(step, cfg.optim, steps)
            apply_schedules(optimizer, lr, wd)
            step_loss = torch.zeros((), device=device)
            step_terms: dict[str, torch.Tensor] = {}
            for micro in range(accum):
                batch = next(batches)
                video = normalize_clips(
                    batch["video"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std
                )
                masks = [
                    type(g)(*(t.to(device, non_blocking=True) for t in g)) for g in batch["masks"]
                ]
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                    targets = teacher.targets(batch, video)
                sync = contextlib.nullcontext()
                if info.enabled and micro < accum - 1:
                    sync = net.no_sync()
                with sync:
                    with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
                        preds = net(video, masks)
                        loss, terms = masked_loss(preds, targets, masks, objective)
                    (loss / accum).backward()
                step_loss += loss.detach() / accum
                for name, value in terms.items():
                    step_terms[name] = step_terms.get(name, 0.0) + value / accum
                window.clips += video.shape[0]
                window.flops += model.train_flops(video.shape[0], masks)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            finite = bool(torch.isfinite(step_loss)) and bool(torch.isfinite(grad_norm))
            finite = _agree(finite, info, device, any_rank=False)
            if finite:
                optimizer.step()
                consecutive_bad = 0
            else:
                nonfinite_total += 1
                consecutive_bad += 1
                log.warning("step %d: non-finite loss or gradient; step skipped", step + 1)
            optimizer.zero_grad(set_to_none=True)
            step += 1

            if finite:
                window.loss += float(step_loss)
                for name, value in step_terms.items():
                    window.terms[name] = window.terms.get(name, 0.0) + float(value)
                window.steps += 1
            if consecutive_bad >= cfg.train.max_nonfinite:
                last = list_checkpoints(run_dir)
                where = (
                    f"the last good checkpoint is {last[-1][1]}"
                    if last
                    else "no checkpoint was written yet"
                )
                raise TrainingDiverged(
                    f"the loss was non-finite for {consecutive_bad} steps in a row (up to step "
                    f"{step}); {where}. Lower optim.lr, check the teacher's targets, or raise "
                    f"train.max_nonfinite"
                )

            if info.main and (step % cfg.train.log_every == 0 or step == steps) and window.steps:
                record = _metrics_record(
                    step, window, lr, wd, grad_norm, nonfinite_total, batches.bad, cfg, info, peak
                )
                metrics.append(record)
                step_log.info(
                    "step %d/%d loss %.5f lr %.2e clips/s %.1f mfu %.1f%%",
                    step,
                    steps,
                    record["loss"],
                    lr,
                    record["clips_per_s"],
                    100 * record["mfu"],
                )
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        lr=f"{lr:.1e}",
                        clips_s=f"{record['clips_per_s']:.1f}",
                    )
                window = _Window()
            if bar is not None:
                bar.update(1)

            stop_now = _agree(stop.signal is not None, info, device, any_rank=True)
            # During a streak of skipped steps the newest checkpoint stays the last good one.
            periodic = step % cfg.train.checkpoint_every == 0 and consecutive_bad == 0
            if periodic or step == steps or stop_now:
                if info.main:
                    _save(run_dir, step, model, optimizer, cfg, nonfinite_total, device)
            if stop_now:
                stopped_by = stop.signal or "signal on another rank"
                log.warning(
                    "stopped by %s at step %d; resume with: salt train --resume %s",
                    stopped_by,
                    step,
                    run_dir,
                )
                break
    if bar is not None:
        bar.close()

    summary = {}
    if info.main:
        summary = summarize(metrics.read(), cfg.train.smoothing, cfg.train.rebound_threshold)
        summary.update(
            {
                "run": run_dir.name,
                "step": step,
                "total_steps": steps,
                "stopped_by": stopped_by,
                "grad_clip": cfg.optim.grad_clip,
                "salt_version": __version__,
            }
        )
        write_json(run_dir / "summary.json", summary)
    if info.enabled:
        dist.barrier()
    return TrainResult(run_dir, summary, step, stopped_by, model)


def _metrics_record(
    step, window, lr, wd, grad_norm, nonfinite_total, bad_videos, cfg, info, peak
) -> dict:
    elapsed = max(time.perf_counter() - window.t0, 1e-9)
    n = window.steps
    clips_per_s = window.clips * info.world / elapsed
    tokens = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
    record = {"step": step, "loss": window.loss / n}
    record.update({f"loss/{k}": v / n for k, v in window.terms.items()})
    record.update(
        {
            "lr": lr,
            "wd": wd,
            "grad_norm": float(grad_norm),
            "clips_per_s": clips_per_s,
            "tokens_per_s": clips_per_s * tokens,
            "tflops": window.flops / elapsed / 1e12,
            "mfu": window.flops / elapsed / (peak * 1e12),
            "nonfinite_total": nonfinite_total,
            "bad_videos": bad_videos,
            "time": time.time(),
        }
    )
    return record


def _save(run_dir, step, model, optimizer, cfg, nonfinite_total, device) -> None:
    state = {
        "student": model.student.state_dict(),
        "predictor": model.predictor.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": cfg.to_dict(),
        "nonfinite_total": nonfinite_total,
        "rng": torch.get_rng_state(),
        "salt_version": __version__,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    save_checkpoint(run_dir, step, state, cfg.train.keep_checkpoints)


@attrs.frozen
class TrainPlan:
    """A run's shape, known before its first step: what ``salt train --dry-run`` prints and
    what a run logs when it starts."""

    cfg: Config
    device: str
    world: int
    rank: int  # this process's; rank 0 reports the plan
    dataset_size: int
    steps: int
    warmup: int
    student_params: int
    predictor_params: int
    teacher_dim: int
    flops_per_step: float  # forward + backward of one optimizer step on all processes

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.accum_steps * self.world

    def lines(self) -> list[str]:
        """The plan as readable lines."""
        cfg = self.cfg
        tokens = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
        epochs = self.steps * self.global_batch / max(self.dataset_size, 1)
        return [
            f"salt-vla {__version__}, profile {cfg.profile}, device {self.device}, "
            f"{self.world} process(es)",
            f"student {cfg.student.name} ({self.student_params / 1e6:.1f}M params), predictor "
            f"{cfg.predictor.name} {cfg.predictor.depth}x{cfg.predictor.width} "
            f"({self.predictor_params / 1e6:.1f}M), teacher {cfg.teacher.spec} "
            f"(dim {self.teacher_dim})",
            f"data {cfg.data.spec} ({self.dataset_size} clips), {cfg.data.num_frames}x"
            f"{cfg.data.image_size}px clips, grid {cfg.grid} = {tokens} tokens, masks "
            f"{cfg.mask.name}",
            f"{self.steps} steps (warmup {self.warmup}, ~{epochs:.1f} epochs), batch "
            f"{cfg.train.batch_size} x accum {cfg.train.accum_steps} x {self.world} = "
            f"{self.global_batch} clips/step, {self.flops_per_step / 1e12:.2f} TFLOP/step",
        ]


def make_plan(cfg, student, predictor, teacher, masker, size, info, device) -> TrainPlan:
    """Measure a run's shape from its built parts (modules may live on the meta device)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    steps = total_steps(cfg, size, info.world)
    batch = cfg.train.batch_size
    # Analytic FLOPs of one micro-batch with the masks its first samples would get.
    masks = masker(sample_keys(cfg.train.seed, 0, np.arange(batch)))
    flops = SaltModel(student, predictor).train_flops(batch, masks)
    return TrainPlan(
        cfg=cfg,
        device=str(device),
        world=info.world,
        rank=info.rank,
        dataset_size=size,
        steps=steps,
        warmup=warmup_steps(cfg.optim, steps),
        student_params=count(student),
        predictor_params=count(predictor),
        teacher_dim=teacher.teacher_dim,
        flops_per_step=flops * cfg.train.accum_steps * info.world,
    )


def dry_run(cfg: Config) -> TrainPlan:
    """Check everything a run needs - config, data, teacher (or cache), masker and, under
    ``torchrun``, the process group - and return its plan without allocating the models
    or taking a step."""
    info = setup_distributed(cfg.train.device)
    try:
        device = resolve_device(cfg.train.device, info.local_rank)
        teacher = build_teacher(cfg)
        dataset = build_clips(cfg, teacher, "train", cfg.train.seed)
        with torch.device("meta"):
            student = build_student(cfg)
            predictor = build_predictor(cfg, student.embed_dim, teacher.teacher_dim)
        masker = build_masker(cfg)
        Objective(cfg.loss.name, cfg.loss.options)
        plan = make_plan(cfg, student, predictor, teacher, masker, len(dataset), info, device)
        if info.enabled:
            dist.barrier()  # every rank got here: the rendezvous and the backend work
        return plan
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def config_from_checkpoint(path: str | Path) -> Config:
    """The resolved config a checkpoint was trained with."""
    return from_dict(load_checkpoint(path)["config"])
