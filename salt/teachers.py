"""Teacher loading: a spec resolved through the registry, checked, and frozen."""

from __future__ import annotations

from salt.config import ClipGeometry
from salt.contracts import Teacher
from salt.registry import teachers

__all__ = ["Teacher", "build_teacher", "check_teacher", "freeze"]


def build_teacher(spec: str, geometry: ClipGeometry) -> Teacher:
    """The frozen teacher named by ``spec``, checked against the clips' token grid."""
    teacher = teachers.create(spec, geometry=geometry)
    check_teacher(teacher, spec, geometry.grid)
    return freeze(teacher)


def freeze(teacher: Teacher) -> Teacher:
    """No gradients, eval mode: the teacher never changes during training."""
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def check_teacher(teacher: object, spec: str, grid: tuple[int, int, int]) -> None:
    """A teacher must declare its width and a latent grid matching the student's."""
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher {spec!r} built a {type(teacher).__name__}, not a salt Teacher")
    if "targets" in type(teacher).__dict__ and type(teacher).forward is Teacher.forward:
        raise TypeError(
            f"teacher {spec!r} ({type(teacher).__name__}) implements targets(batch, video), "
            f"the interface of salt-vla 0.1; rename it to forward(video)"
        )
    dim = getattr(teacher, "teacher_dim", None)
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"teacher {spec!r} declares no positive teacher_dim (got {dim!r})")
    if tuple(teacher.grid) != tuple(grid):
        raise ValueError(
            f"teacher {spec!r} gives latents on a {tuple(teacher.grid)} grid but the student's "
            f"clips make a {tuple(grid)} grid; match data.num_frames, data.image_size, "
            f"student.patch_size and student.tubelet_size to the teacher"
        )
