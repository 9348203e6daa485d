"""What each registry's entries must be: the contracts a plugin implements.

Every factory has the same shape, ``factory(arg, **keywords)``: ``arg`` is the part of the
spec after the first ``:`` (None when there is none) and the keywords are listed below.

=========  =================================================  ==================================
registry   factory keywords                                   returns
=========  =================================================  ==================================
students   num_frames, image_size, patch_size, tubelet_size,  a :class:`Student`
           (optional) drop_path, pos_embed, grad_checkpointing
teachers   geometry (a ``salt.config.ClipGeometry``)          a :class:`Teacher`
predictors embed_dim, teacher_dim, grid, width, depth, heads,  a :class:`Predictor`
           drop_path, grad_checkpointing
maskers    grid, then the entries of ``mask.options``         a :class:`Masker`
losses     the entries of ``loss.options.<name>``             a :class:`LossTerm`
loggers    run_dir (a ``Path``), config (the run's as a dict)  a :class:`Logger`
=========  =================================================  ==================================

``tests/test_contracts.py`` checks every registered entry of every registry against these.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from salt.masking import Masker, MaskGroup

__all__ = ["Teacher", "Student", "Predictor", "Masker", "MaskGroup", "LossTerm", "Logger"]


class Teacher(nn.Module):
    """A frozen source of target latents: normalized clip ``[B, C, T, H, W]`` ->
    latents ``[B, N, teacher_dim]`` for every token of ``grid``.

    A teacher whose latents were computed once and stored with the data (a cache) sets
    ``cache``; a run then reads its clips from that cache, with the stored latents as each
    batch's targets (``salt.assemble.DataSource``), and the teacher itself is never run.
    """

    teacher_dim: int
    grid: tuple[int, int, int]
    cache = None  # salt.cache.LatentCache | LegacyCache for stored latents

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(video)")

    def forward_flops(self) -> float:
        """Forward FLOPs per clip spent computing targets (0 for stored latents)."""
        return 0.0


@runtime_checkable
class Student(Protocol):
    """A video encoder trained on the visible tokens only."""

    embed_dim: int
    grid: tuple[int, int, int]
    num_tokens: int

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Normalized clip ``[B, C, T, H, W]`` -> all patch tokens with positions ``[B, N, D]``."""

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Run the blocks on the kept tokens ``keep [B, Nc]`` only -> ``[B, Nc, D]``."""

    def forward_flops(self, kept_tokens: int) -> float:
        """Forward FLOPs of one clip with ``kept_tokens`` visible tokens."""


@runtime_checkable
class Predictor(Protocol):
    """Maps the student's context tokens to predictions of the teacher at target positions."""

    teacher_dim: int

    def __call__(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """Context ``[B, Nc, D]`` and token indices -> predictions ``[B, Nt, teacher_dim]``."""

    def forward_flops(self, context_tokens: int, target_tokens: int) -> float:
        """Forward FLOPs of one clip."""


@runtime_checkable
class LossTerm(Protocol):
    """One loss term: predictions and targets ``[B, Nt, D]`` -> named scalar parts."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Logger(Protocol):
    """Where a run's metrics go (on rank 0), besides the always-on ``metrics.jsonl``."""

    def log(self, step: int, metrics: dict) -> None:
        """One metrics line: every number the loop computed at ``step`` (loss and terms, lr,
        wd, grad_norm, clips_per_s, tokens_per_s, tflops, mfu, ...)."""

    def close(self) -> None:
        """The run is over (finished, stopped or failed): flush and release.

        A logger may also have ``resumed(step)``: called once, before the first ``log``,
        when the run continues from its checkpoint at ``step`` - what was logged past that
        step is about to be logged again, so a logger that keeps history drops it there."""
