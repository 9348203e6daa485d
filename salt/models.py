"""Building the teacher, the trainable pair (student + predictor) and the masker from a config
(:mod:`salt.assemble` puts them together with the clips into a run)."""

from __future__ import annotations

import torch
from torch import nn

from salt.config import ClipGeometry, Config
from salt.masking import Masker, MaskGroup, fix_lengths
from salt.registry import maskers, predictors, students
from salt.teachers import Teacher, build_teacher


def build_student(name: str, geometry: ClipGeometry, **options) -> nn.Module:
    """The student encoder ``name`` at a clip geometry (options: drop_path, pos_embed, ...)."""
    return students.create(name, **geometry.model_kwargs(), **options)


def student_of(cfg: Config) -> nn.Module:
    """The student a config trains."""
    s = cfg.student
    return build_student(
        s.name,
        cfg.geometry,
        drop_path=s.drop_path,
        pos_embed=s.pos_embed,
        grad_checkpointing=s.grad_checkpointing,
    )


def predictor_of(cfg: Config, embed_dim: int, teacher_dim: int) -> nn.Module:
    """The predictor mapping student tokens to the teacher's width."""
    p = cfg.predictor
    return predictors.create(
        p.name,
        embed_dim=embed_dim,
        teacher_dim=teacher_dim,
        grid=cfg.grid,
        width=p.width,
        depth=p.depth,
        heads=p.heads,
        drop_path=p.drop_path,
        grad_checkpointing=cfg.student.grad_checkpointing,
    )


def masker_of(cfg: Config) -> Masker:
    """The masker named by ``cfg.mask`` on the config's token grid, its context lengths
    fixed for the run when ``mask.lengths`` asks (or ``auto`` and the step is compiled)."""
    masker = maskers.create(cfg.mask.name, grid=cfg.grid, **cfg.mask.options)
    if fixed_lengths(cfg):
        return fix_lengths(masker, cfg.train.batch_size)
    return masker


def fixed_lengths(cfg: Config) -> bool:
    """Whether a run's mask lengths are fixed (``mask.lengths``, ``auto`` follows compile)."""
    return cfg.mask.lengths == "fixed" or (cfg.mask.lengths == "auto" and cfg.train.compile)


def teacher_of(cfg: Config) -> Teacher:
    """The frozen teacher named by ``cfg.teacher.spec`` at the config's clip geometry."""
    return build_teacher(cfg.teacher.spec, cfg.geometry)


class SaltModel(nn.Module):
    """Student on the visible tokens, predictor at the masked ones, for every mask group."""

    def __init__(self, student: nn.Module, predictor: nn.Module):
        super().__init__()
        self.student = student
        self.predictor = predictor

    def forward(self, video: torch.Tensor, masks: list[MaskGroup]) -> list[torch.Tensor]:
        """Clip ``[B, C, T, H, W]`` -> one prediction ``[B, Nt_g, Dt]`` per mask group."""
        tokens = self.student.embed(video)  # the patch embedding is shared by all groups
        preds = []
        for group in masks:
            context = self.student.encode(tokens, group.context)
            preds.append(self.predictor(context, group.context, group.target))
        return preds

    def train_flops(self, batch_size: int, masks: list[MaskGroup]) -> float:
        """Forward + backward FLOPs (3x forward) of a batch with these masks."""
        total = 0.0
        for group in masks:
            nc, nt = group.context.shape[1], group.target.shape[1]
            total += self.student.forward_flops(nc) + self.predictor.forward_flops(nc, nt)
        return 3.0 * batch_size * total


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, naming every missing or unexpected key and the first tensor whose shape
    differs (weights of another architecture or width)."""
    mine = model.state_dict()
    for key, value in state.items():
        if key in mine and tuple(mine[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source} does not fit this {type(model).__name__}: {key} is "
                f"{tuple(value.shape)} there but {tuple(mine[key].shape)} here (another "
                f"architecture, width or geometry); build the model with the settings it was "
                f"trained with"
            )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source} does not match the {type(model).__name__} it describes: "
            f"missing keys {result.missing_keys or 'none'}, unexpected keys "
            f"{result.unexpected_keys or 'none'}"
        )


def pair_of(cfg: Config, teacher_dim: int, state: dict | None = None) -> SaltModel:
    """The student and its predictor: initialized from the current torch seed, or - given a
    checkpoint's ``state`` - its trained weights, in eval mode.

    A teacher whose width the predictor was not trained for is a clear error."""
    student = student_of(cfg)
    predictor = predictor_of(cfg, student.embed_dim, teacher_dim)
    if state is None:
        return SaltModel(student, predictor)
    load_strict(student, state["student"], "the checkpoint's student")
    try:
        load_strict(predictor, state["predictor"], "the checkpoint's predictor")
    except ValueError:
        trained = state["config"]["teacher"]["spec"]
        raise ValueError(
            f"the checkpoint's predictor was trained to predict teacher {trained!r} and does not "
            f"fit teacher {cfg.teacher.spec!r} ({teacher_dim}-dim latents); use a "
            f"teacher of the same width"
        ) from None
    return SaltModel(student, predictor).eval()
