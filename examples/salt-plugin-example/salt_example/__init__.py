"""An example salt plugin: a frame-interpolation masker, a smooth-L1 loss and a command.

salt finds this module through the ``salt`` entry-point group (see pyproject.toml) and calls
the hooks below with a ``register`` callback; what they register is then available by name
everywhere: ``--set mask.name=interleave:2``, ``--set loss.name=smooth_l1``, ``salt plugins``.
``register_commands`` adds ``salt interleave``, which prints the split a stride gives.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salt.hookspecs import hookimpl
from salt.masking import MaskGroup, indices

__version__ = "0.2.0"


class InterleaveMasker:
    """Context: every ``stride``-th time slice (0, stride, 2*stride, ...); targets: the slices
    between them - the student learns to fill in the frames it did not see.

    Deterministic, so every sample of a batch has the same counts (what the predictor's
    batching needs) and ``keys`` - the per-sample random keys - go unused.
    """

    group_names = ("interleave",)
    deterministic = True  # the same split for every sample: the keys go unused

    def __init__(self, grid: tuple[int, int, int], stride: int = 2):
        self.grid = tuple(grid)
        self.stride = int(stride)
        if not 2 <= self.stride <= grid[0]:
            raise ValueError(
                f"interleave:{stride} needs a stride from 2 to the clip's {grid[0]} time "
                f"slices, so that some slices are seen and some predicted (e.g. interleave:2)"
            )

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        """One group for a batch of ``len(keys)`` samples."""
        seen = np.arange(self.grid[0]) % self.stride == 0  # [T]
        per_token = np.repeat(seen, self.grid[1] * self.grid[2])  # [T*H*W]
        context = np.broadcast_to(per_token, (len(keys), per_token.size))
        return [MaskGroup(indices(context), indices(~context))]


def interleave_masker(arg: str | None, grid: tuple[int, int, int], **options) -> InterleaveMasker:
    """``interleave[:STRIDE]``; ``mask.options`` may also set ``stride``."""
    if arg is not None:
        if not arg.isdigit():
            raise ValueError(f"interleave:{arg} needs a whole-number stride, e.g. interleave:2")
        options["stride"] = int(arg)
    return InterleaveMasker(grid, **options)


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
    register("interleave", interleave_masker, "predict the slices between every 2nd (interleave:2)")


@hookimpl
def register_losses(register):
    register("smooth_l1", smooth_l1, "smooth-L1 (Huber) on masked teacher latents (beta=1.0)")


def cmd_interleave(args) -> int:
    """Print which time slices of a clip the student sees and which it predicts."""
    (group,) = InterleaveMasker((args.slices, 1, 1), stride=args.stride)(np.zeros(1))
    print("context slices:  ", " ".join(map(str, group.context[0].tolist())))
    print("predicted slices:", " ".join(map(str, group.target[0].tolist())))
    return 0


@hookimpl
def register_commands(commands):
    p = commands.add_parser("interleave", help="show the slices interleave:STRIDE predicts")
    p.add_argument("--slices", type=int, default=8, help="time slices in a clip (default 8)")
    p.add_argument("--stride", type=int, default=2, help="every STRIDE-th slice is seen")
    p.set_defaults(func=cmd_interleave)
