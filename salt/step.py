"""One optimizer step: the micro-batch loop, the teacher's targets, the loss, backward,
clipping and the agreed decision to apply or skip the update."""

from __future__ import annotations

import contextlib
import logging
import math

import attrs
import torch
from torch import nn

from salt.batch import Batch
from salt.contracts import Teacher
from salt.data import normalize_clips
from salt.distributed import DistInfo, agree
from salt.losses import Objective, masked_loss
from salt.models import SaltModel
from salt.quant import dense

log = logging.getLogger("salt.train")


@attrs.frozen
class StepParts:
    """What a training step touches, built once per run."""

    model: SaltModel  # the bare pair: FLOPs, parameters
    net: nn.Module  # what runs forward: the model, compiled and/or under DDP
    teacher: Teacher
    objective: Objective
    optimizer: torch.optim.Optimizer
    device: torch.device
    info: DistInfo
    mean: tuple[float, ...]
    std: tuple[float, ...]
    params: tuple[nn.Parameter, ...]  # the trainable ones: clipped each step
    accum_steps: int = 1
    grad_clip: float = math.inf
    bf16: bool = False  # autocast (GPU)

    def autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)


@attrs.frozen
class StepResult:
    """One optimizer step's loss (and terms) over its micro-batches, and what it cost."""

    loss: torch.Tensor  # scalar, on the device
    terms: dict[str, torch.Tensor]
    grad_norm: torch.Tensor
    finite: bool  # on every rank: False means the update was skipped
    clips: int
    flops: float
    stop: bool = False  # a stop signal reached some rank: every rank stops after this step


def targets_of(parts: StepParts, batch: Batch, video: torch.Tensor) -> torch.Tensor:
    """The teacher's latents ``[B, N, D]``: stored with the batch (a cache) or computed."""
    if batch.targets is not None:
        return dense(batch.targets)
    with torch.no_grad(), parts.autocast():
        return parts.teacher(video)


def train_step(parts: StepParts, batches, stop: bool = False) -> StepResult:
    """Forward and backward ``accum_steps`` micro-batches, clip, and step the optimizer if
    the loss and gradients are finite on every rank (else skip it). ``stop``: this process
    got a stop signal; the result says whether any rank did. The host waits for the device
    once per step, for that decision (the loss stays on the device)."""
    step_loss = torch.zeros((), device=parts.device)
    step_terms: dict[str, torch.Tensor] = {}
    clips, flops = 0, 0.0
    for micro in range(parts.accum_steps):
        batch = next(batches).to(parts.device, non_blocking=True)
        video = normalize_clips(batch.video, parts.mean, parts.std)
        targets = targets_of(parts, batch, video)
        sync = contextlib.nullcontext()
        if parts.info.enabled and micro < parts.accum_steps - 1:
            sync = parts.net.no_sync()  # gradients are all-reduced once, on the last one
        with sync:
            with parts.autocast():
                preds = parts.net(video, batch.masks)
                loss, terms = masked_loss(preds, targets, batch.masks, parts.objective)
            (loss / parts.accum_steps).backward()
        step_loss += loss.detach() / parts.accum_steps
        for name, value in terms.items():
            step_terms[name] = step_terms.get(name, 0.0) + value / parts.accum_steps
        clips += batch.size
        flops += parts.model.train_flops(batch.size, batch.masks)
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.params, parts.grad_clip)
    finite, stop = agree(torch.isfinite(step_loss) & torch.isfinite(grad_norm), stop, parts.info)
    if finite:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return StepResult(step_loss, step_terms, grad_norm, finite, clips, flops, stop)
