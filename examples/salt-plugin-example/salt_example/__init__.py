"""An example salt plugin: a future-prediction masker and a smooth-L1 loss.

salt finds this module through the ``salt`` entry-point group (see pyproject.toml) and calls
the hooks below with a ``register`` callback; what they register is then available by name
everywhere: ``--set mask.name=future:0.5``, ``--set loss.name=smooth_l1``, ``salt plugins``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salt.hookspecs import hookimpl
from salt.masking import MaskGroup, indices

__version__ = "0.1.0"


class FutureMasker:
    """Context: every token of the first time slices; targets: every token after them.

    Deterministic, so every sample of a batch has the same counts (what the predictor's
    batching needs) and ``keys`` - the per-sample random keys - go unused.
    """

    group_names = ("future",)
    deterministic = True  # the same split for every sample: the keys go unused

    def __init__(self, grid: tuple[int, int, int], context_fraction: float = 0.5):
        self.grid = tuple(grid)
        slices = grid[0]
        self.context_slices = round(slices * context_fraction)
        if not 1 <= self.context_slices < slices:
            raise ValueError(
                f"future:{context_fraction} keeps {self.context_slices} of {slices} time "
                f"slices as context; choose a fraction that keeps at least one slice on each "
                f"side (e.g. future:0.5)"
            )

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        """One group for a batch of ``len(keys)`` samples."""
        per_slice = self.grid[1] * self.grid[2]
        context = np.zeros((len(keys), self.grid[0] * per_slice), dtype=bool)
        context[:, : self.context_slices * per_slice] = True
        return [MaskGroup(indices(context), indices(~context))]


def future_masker(arg: str | None, grid: tuple[int, int, int], **options) -> FutureMasker:
    """``future[:FRACTION]``; ``mask.options`` may also set ``context_fraction``."""
    if arg is not None:
        options["context_fraction"] = float(arg)
    return FutureMasker(grid, **options)


def smooth_l1(arg: str | None = None, beta: float = 1.0, weight: float = 1.0):
    """Smooth-L1 (Huber) loss: quadratic below ``beta``, linear above it."""
    if arg:
        raise ValueError(f"loss 'smooth_l1' takes no argument, got smooth_l1:{arg}")
    if beta <= 0:
        raise ValueError(f"smooth_l1 needs beta > 0, got {beta}")

    def loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        value = F.smooth_l1_loss(pred.float(), target.float(), beta=beta)
        return {"smooth_l1": weight * value}

    return loss


@hookimpl
def register_maskers(register):
    register("future", future_masker, "predict the later time slices from the first (future:0.5)")


@hookimpl
def register_losses(register):
    register("smooth_l1", smooth_l1, "smooth-L1 (Huber) on masked teacher latents (beta=1.0)")
