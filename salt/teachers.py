"""The teacher interface: a frozen source of target latents ``[B, N, D]``."""

from __future__ import annotations

import torch
from torch import nn


class Teacher(nn.Module):
    """A frozen teacher. Subclasses set ``teacher_dim`` and ``grid`` and implement ``targets``.

    ``targets`` receives the collated batch (for teachers that read latents stored with the
    data) and the normalized clip ``[B, C, T, H, W]`` (for teachers that compute them).
    """

    teacher_dim: int
    grid: tuple[int, int, int]

    def targets(self, batch: dict, video: torch.Tensor) -> torch.Tensor:
        """Target latents ``[B, N, teacher_dim]`` for every token of the grid."""
        raise NotImplementedError(f"{type(self).__name__} must implement targets()")

    def dataset(self, cfg, split: str):
        """A dataset this teacher's targets come with (cached latents), or None for the
        configured data."""
        return None

    def forward_flops(self) -> float:
        """Forward FLOPs per clip spent computing targets (0 for cached latents)."""
        return 0.0


def freeze(teacher: Teacher) -> Teacher:
    """No gradients, eval mode: the teacher never changes during training."""
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def check_teacher(teacher: object, spec: str, grid: tuple[int, int, int]) -> None:
    """A teacher must declare its width and a latent grid matching the student's."""
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher {spec!r} built a {type(teacher).__name__}, not a salt Teacher")
    dim = getattr(teacher, "teacher_dim", None)
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"teacher {spec!r} declares no positive teacher_dim (got {dim!r})")
    if tuple(teacher.grid) != tuple(grid):
        raise ValueError(
            f"teacher {spec!r} gives latents on a {tuple(teacher.grid)} grid but the student's "
            f"clips make a {tuple(grid)} grid; match data.num_frames, data.image_size, "
            f"student.patch_size and student.tubelet_size to the teacher"
        )
