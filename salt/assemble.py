"""A run assembled from its config, in one place: its teacher, where its clips come from, and
its trainable pair (student + predictor), fresh or a checkpoint's.

``salt train``, ``--dry-run``, ``salt eval distill`` and the viewer all start here. It is
also the one place a teacher spec decides the data: a teacher whose latents are stored
(``cached:NAME``) brings its cache, and the run's clips are then the cache's splits with
those latents as targets (``data.spec`` only says where the videos moved) - its teacher is
never asked for clips, nor run. With any other teacher the data spec alone chooses the clips.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import torch
from torch.utils.data import Dataset

from salt.config import Config, DataConfig
from salt.data import CachedClips, build_source, check_split, held_out_source
from salt.models import SaltModel, pair_of, teacher_of
from salt.teachers import Teacher

__all__ = ["DataSource", "RunParts", "assemble", "teacher_and_data"]


@attrs.frozen
class DataSource:
    """Where a run's clips come from: those ``data.spec`` names, or the splits of a latent
    cache - each clip decoded with the view the teacher saw, its latents as the targets."""

    data: DataConfig
    cache: Any = None  # salt.cache.LatentCache | LegacyCache: the targets are stored

    @property
    def cached(self) -> bool:
        """Whether the targets come stored with the clips (the teacher is never run)."""
        return self.cache is not None

    def clips(self, split: str = "train", seed: int = 0) -> Dataset:
        """The clips of ``split`` (:func:`salt.data.build_source`, or the cache's split: a
        cache without it raises its ``MissingSplitError``)."""
        if self.cache is None:
            return build_source(self.data, split, seed)
        return CachedClips(self.cache.split(check_split(split)), self.data)

    def held_out(self) -> Dataset:
        """The held-out clips a run is scored on: the cache's ``val`` split (with the stored
        targets), else :func:`salt.data.held_out_source`'s."""
        if self.cache is None:
            return held_out_source(self.data)
        return self.clips("val")


def teacher_and_data(cfg: Config) -> tuple[Teacher, DataSource]:
    """The run's frozen teacher and where its clips come from: the one place ``cached:NAME``
    becomes the cache's clips with their stored latents."""
    teacher = teacher_of(cfg)
    return teacher, DataSource(cfg.data, teacher.cache)


@attrs.frozen
class RunParts:
    """What a run is made of: the frozen teacher, where its clips come from, the clips of the
    split asked for (if any), and the student + predictor."""

    teacher: Teacher
    data: DataSource
    model: SaltModel
    clips: Dataset | None = None


def assemble(
    cfg: Config,
    split: str | None = None,
    seed: int = 0,
    state: dict | None = None,
    meta: bool = False,
) -> RunParts:
    """Build a run's parts in the order a seed fixes them: the teacher (a random one draws
    from the torch RNG), the clips of ``split`` (none when None; ``seed`` picks training
    views), then the student and its predictor - initialized from the torch RNG, or the
    trained ones of a checkpoint's ``state`` (eval mode), or shapes only on the meta device
    (``meta``: a plan)."""
    teacher, data = teacher_and_data(cfg)
    clips = data.clips(split, seed) if split is not None else None
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = pair_of(cfg, teacher.teacher_dim, state)
    return RunParts(teacher, data, model, clips)
