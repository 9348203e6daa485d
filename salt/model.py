"""The trainable pair (student + predictor), built from a config through the registries."""

from __future__ import annotations

import torch
from torch import nn

from salt.config import Config
from salt.data import build_dataset
from salt.losses import Objective
from salt.masking import Masker, MaskGroup, gather_tokens
from salt.registry import maskers, predictors, students, teachers
from salt.teachers import Teacher, check_teacher, freeze


def build_student(cfg: Config) -> nn.Module:
    """The student encoder named by ``cfg.student.name`` at the data's clip geometry."""
    s = cfg.student
    return students.create(
        s.name,
        num_frames=cfg.data.num_frames,
        image_size=cfg.data.image_size,
        patch_size=s.patch_size,
        tubelet_size=s.tubelet_size,
        drop_path=s.drop_path,
        pos_embed=s.pos_embed,
        grad_checkpointing=s.grad_checkpointing,
    )


def build_teacher(cfg: Config) -> Teacher:
    """The frozen teacher named by ``cfg.teacher.spec``, checked against the student's grid."""
    teacher = teachers.create(cfg.teacher.spec, cfg=cfg)
    check_teacher(teacher, cfg.teacher.spec, cfg.grid)
    return freeze(teacher)


def build_clips(cfg: Config, teacher: Teacher, split: str, seed: int):
    """The clips a run reads: the teacher's own (a cache's views and latents) or, for a
    teacher that computes its targets, the configured data."""
    dataset = teacher.dataset(cfg, split)
    return dataset if dataset is not None else build_dataset(cfg.data, split, seed)


def build_masker(cfg: Config) -> Masker:
    """The masker named by ``cfg.mask`` on the config's token grid."""
    return maskers.create(cfg.mask.name, grid=cfg.grid, **cfg.mask.options)


def build_predictor(cfg: Config, embed_dim: int, teacher_dim: int) -> nn.Module:
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


def masked_loss(
    preds: list[torch.Tensor], targets: torch.Tensor, masks: list[MaskGroup], objective: Objective
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective averaged over mask groups, with each named term averaged too."""
    total = 0.0
    terms: dict[str, torch.Tensor] = {}
    for pred, group in zip(preds, masks, strict=True):
        loss, parts = objective(pred, gather_tokens(targets, group.target).to(pred.dtype))
        total = total + loss / len(masks)
        for name, value in parts.items():
            terms[name] = terms.get(name, 0.0) + value.detach() / len(masks)
    return total, terms


def load_trained_pair(state: dict, cfg: Config) -> tuple[Teacher, SaltModel]:
    """The teacher named by ``cfg`` and a checkpoint's student + predictor (eval mode).

    A teacher whose width the predictor was not trained for is a clear error."""
    teacher = build_teacher(cfg)
    student = build_student(cfg)
    predictor = build_predictor(cfg, student.embed_dim, teacher.teacher_dim)
    student.load_state_dict(state["student"])
    try:
        predictor.load_state_dict(state["predictor"])
    except RuntimeError:
        trained = state["config"]["teacher"]["spec"]
        raise ValueError(
            f"the checkpoint's predictor was trained to predict teacher {trained!r} and does not "
            f"fit teacher {cfg.teacher.spec!r} ({teacher.teacher_dim}-dim latents); use a "
            f"teacher of the same width"
        ) from None
    return teacher, SaltModel(student, predictor).eval()
