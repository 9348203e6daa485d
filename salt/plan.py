"""A run's plan - its shape, known before the first step - and ``salt train --dry-run``."""

from __future__ import annotations

import time

import attrs
import numpy as np
import torch.distributed as dist

from salt import __version__
from salt.assemble import assemble
from salt.config import Config
from salt.data import check_one_batch, check_readable, steps_per_epoch
from salt.distributed import DistInfo, resolve_device, setup_distributed
from salt.losses import Objective
from salt.masking import sample_keys
from salt.memory import MemoryPlan, plan_memory
from salt.models import SaltModel, fixed_lengths, masker_of
from salt.optim import warmup_steps
from salt.registry import check_names
from salt.validate import Validation


def default_run_name(cfg: Config) -> str:
    """``<student>-<teacher>-<timestamp>`` with path-unsafe characters replaced."""
    raw = f"{cfg.student.name}-{cfg.teacher.spec}-{time.strftime('%Y%m%d_%H%M%S')}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def total_steps(cfg: Config, dataset_size: int, world: int) -> int:
    """``train.epochs`` passes over the data when set, else ``train.steps``."""
    check_one_batch(dataset_size, cfg.train.batch_size, world)
    if cfg.train.epochs > 0:
        return cfg.train.epochs * steps_per_epoch(dataset_size, cfg, world)
    if cfg.train.steps <= 0:
        raise ValueError("set train.steps (or train.epochs) to a positive number")
    return cfg.train.steps


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
    context: tuple[int, ...] = ()  # per mask group, the first batch's context tokens
    fixed_lengths: bool = False  # the same in every batch (mask.lengths)
    memory: MemoryPlan | None = None  # per process, planned (dry runs)
    held_out: str = ""  # salt.validate.Validation.describe()
    decoding: str = ""  # which backend reads each codec of the videos (salt.decoders.survey)

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.accum_steps * self.world

    def lines(self) -> list[str]:
        """The plan as readable lines."""
        cfg = self.cfg
        tokens = cfg.geometry.num_tokens
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
            f"{cfg.mask.name}, context {'+'.join(map(str, self.context))} tokens "
            f"({'fixed' if self.fixed_lengths else 'first batch; each batch its own'})",
            f"{self.steps} steps (warmup {self.warmup}, ~{epochs:.1f} epochs), batch "
            f"{cfg.train.batch_size} x accum {cfg.train.accum_steps} x {self.world} = "
            f"{self.global_batch} clips/step, {self.flops_per_step / 1e12:.2f} TFLOP/step",
        ] + [
            line
            for line in (
                f"held-out loss: {self.held_out}" if self.held_out else "",
                f"video decoding {self.decoding}" if self.decoding else "",
            )
            if line
        ]


def make_plan(
    cfg: Config, model: SaltModel, masker, *, teacher_dim: int, clips: int, info: DistInfo, device
) -> TrainPlan:
    """Measure a run's shape from its built parts (modules may live on the meta device)."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    steps = total_steps(cfg, clips, info.world)
    batch = cfg.train.batch_size
    # Analytic FLOPs of one micro-batch with the masks its first samples would get.
    masks = masker(sample_keys(cfg.train.seed, 0, np.arange(batch)))
    flops = model.train_flops(batch, masks)
    return TrainPlan(
        cfg=cfg,
        device=str(device),
        world=info.world,
        rank=info.rank,
        dataset_size=clips,
        steps=steps,
        warmup=warmup_steps(cfg.optim, steps),
        student_params=count(model.student),
        predictor_params=count(model.predictor),
        teacher_dim=teacher_dim,
        flops_per_step=flops * cfg.train.accum_steps * info.world,
        context=tuple(g.context.shape[1] for g in masks),
        fixed_lengths=fixed_lengths(cfg),
    )


def decoding(clips, cfg: Config) -> str:
    """Which backend ``data.decoder`` reads each codec of a video source with (a sample of
    its files); empty for sources that decode nothing (built-in data, stored clips)."""
    from salt.decoders import describe_survey, survey

    collection = getattr(clips, "collection", None)
    if collection is None:
        return ""
    files = list(dict.fromkeys(collection.path(r) for r in collection.records))
    return describe_survey(survey(files, cfg.data.decoder), cfg.data.decoder)


def dry_run(cfg: Config) -> TrainPlan:
    """Check everything a run needs - config, data, teacher (or cache), masker and, under
    ``torchrun``, the process group - and return its plan without allocating the models
    or taking a step."""
    info = setup_distributed(cfg.train.device)
    try:
        device = resolve_device(cfg.train.device, info.local_rank)
        check_names(cfg)
        run = assemble(cfg, "train", cfg.train.seed, meta=True)  # no weights allocated
        check_readable(run.clips, cfg.data, cfg.train.seed)
        masker = masker_of(cfg)
        Objective(cfg.loss.name, cfg.loss.options, cfg.loss.target_norm)
        plan = make_plan(
            cfg,
            run.model,
            masker,
            teacher_dim=run.teacher.teacher_dim,
            clips=len(run.clips),
            info=info,
            device=device,
        )
        masks = masker(sample_keys(cfg.train.seed, 0, np.arange(cfg.train.batch_size)))
        memory = plan_memory(cfg, run.model, masks, run.teacher, cached=run.data.cached)
        held_out = Validation.for_run(cfg, run.data, masker, info, device).describe()
        plan = attrs.evolve(
            plan, memory=memory, held_out=held_out, decoding=decoding(run.clips, cfg)
        )
        if info.enabled:
            dist.barrier()  # every rank got here: the rendezvous and the backend work
        return plan
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
