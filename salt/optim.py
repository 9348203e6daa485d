"""AdamW parameter groups and the LR / weight-decay schedules of the recipe."""

from __future__ import annotations

import math

import torch
from torch import nn

from salt.config import OptimConfig

# Parameters that are positions or learned tokens, never decayed whatever their shape.
NO_DECAY_NAMES = ("pos_embed", "mask_token", "cls_token")


def is_decayed(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices/kernels only: not biases, norms or tokens."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    leaf = name.rsplit(".", 1)[-1]
    return leaf not in NO_DECAY_NAMES


def param_groups(model: nn.Module) -> list[dict]:
    """Two AdamW groups: ``decay`` (scheduled weight decay) and ``no_decay`` (always 0)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if is_decayed(name, param) else no_decay).append(param)
    return [
        {"name": "decay", "params": decay, "weight_decay": 0.0},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


# Devices whose runs use the fused AdamW kernel by default. Not the CPU: its kernel is ~2.5x
# faster than the per-tensor loop (7 ms against 18 a step for vit_tiny and its predictor on
# one thread) and steps as it does to float rounding, but two teachers trained with it gave
# students that left the plateau at half the pace of every loop-trained one, the same
# seed's included (docs/results.md, "2026-12-06 (night)"); the CPU keeps the loop the claim
# was measured with until that is understood. ``fused=True`` still asks for the kernel.
FUSED_DEVICES = ("cuda",)


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over ``param_groups(model)``; fused kernels (``fused`` None: where the
    parameters' device has them, :data:`FUSED_DEVICES`)."""
    if fused is None:
        param = next(model.parameters(), None)
        fused = param is not None and param.device.type in FUSED_DEVICES
    return torch.optim.AdamW(
        param_groups(model), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None
    )


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    """The configured warmup, capped at ``max_warmup_fraction`` of the run."""
    return min(cfg.warmup_steps, int(cfg.max_warmup_fraction * total_steps))


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine down to ``min_lr`` at the last step."""
    warm = warmup_steps(cfg, total_steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    span = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def wd_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Cosine from ``weight_decay`` to ``final_weight_decay`` over the run."""
    progress = min(1.0, step / max(1, total_steps))
    start, end = cfg.weight_decay, cfg.final_weight_decay
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Set this step's LR on every group and its weight decay on the decay group only."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = wd if group.get("name") == "decay" else 0.0
