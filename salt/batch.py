"""The typed samples and batches that flow from the data layer to the loop, eval and viewer.

A dataset returns one :class:`Sample` per clip; the collate function (in the DataLoader
workers) stacks readable samples into a :class:`Batch`, keeps the unreadable ones as
``errors`` and, given a masker, adds the batch's masks.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch

from salt.masking import Masker, MaskGroup, sample_keys
from salt.quant import QuantizedLatents

Targets = torch.Tensor | QuantizedLatents  # stored teacher latents: dense, or 8-bit


@attrs.frozen
class Sample:
    """One clip, or the reason it could not be read (``video`` is None then)."""

    video: torch.Tensor | None  # uint8 [T, C, H, W]
    label: int = -1  # class index, -1 when unlabelled
    view: dict | None = None  # salt.video.View.as_dict(): where the clip came from
    targets: Targets | None = None  # [N, D] stored teacher latents (cached sources)
    error: str | None = None
    index: int = 0  # position in its dataset
    epoch: int = 0

    @classmethod
    def failed(cls, error: str, index: int = 0) -> Sample:
        """An unreadable sample: skipped by the loop with a warning naming ``error``."""
        return cls(None, error=error, index=index)


@attrs.frozen
class Batch:
    """Readable clips stacked, with their keys, labels, views, masks and stored targets."""

    video: torch.Tensor  # uint8 [B, T, C, H, W] (empty when every sample failed)
    epochs: torch.Tensor  # [B] int64
    indices: torch.Tensor  # [B] int64
    labels: torch.Tensor  # [B] int64
    views: list[dict | None]
    targets: Targets | None = None  # [B, N, D], present for cached sources
    masks: list[MaskGroup] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    @property
    def size(self) -> int:
        """Readable clips in the batch."""
        return len(self.views)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The clips, masks and targets on ``device`` (keys, labels and views stay put)."""

        def move(t):
            return t.to(device, non_blocking=non_blocking)

        return attrs.evolve(
            self,
            video=move(self.video),
            targets=None if self.targets is None else move(self.targets),
            masks=[MaskGroup(move(g.context), move(g.target)) for g in self.masks],
        )

    def pin_memory(self) -> Batch:
        """Clips, masks and targets in page-locked memory (the DataLoader's ``pin_memory``),
        so that ``.to(cuda, non_blocking=True)`` copies asynchronously."""
        return attrs.evolve(
            self,
            video=self.video.pin_memory(),
            targets=None if self.targets is None else self.targets.pin_memory(),
            masks=[MaskGroup(g.context.pin_memory(), g.target.pin_memory()) for g in self.masks],
        )

    def keys(self, seed: int) -> np.ndarray:
        """The 64-bit key of each sample: what its masks and random views derive from."""
        return sample_keys(seed, self.epochs.numpy(), self.indices.numpy())


def collate(samples: list[Sample]) -> Batch:
    """Stack readable samples; unreadable ones become ``errors``."""
    good = [s for s in samples if s.video is not None]
    errors = [s.error or f"sample {s.index}: unreadable" for s in samples if s.video is None]
    if good:
        video = torch.stack([s.video for s in good])
    else:
        video = torch.empty(0, dtype=torch.uint8)
    targets = None
    if good and all(isinstance(s.targets, QuantizedLatents) for s in good):
        targets = QuantizedLatents.stack([s.targets for s in good])
    elif good and all(isinstance(s.targets, torch.Tensor) for s in good):
        targets = torch.stack([s.targets for s in good])
    elif any(s.targets is not None for s in good):
        raise ValueError(
            "a batch mixes samples with and without stored targets (or 8-bit and dense)"
        )
    return Batch(
        video=video,
        epochs=torch.tensor([s.epoch for s in good], dtype=torch.int64),
        indices=torch.tensor([s.index for s in good], dtype=torch.int64),
        labels=torch.tensor([s.label for s in good], dtype=torch.int64),
        views=[s.view for s in good],
        targets=targets,
        errors=errors,
    )


class MaskCollator:
    """DataLoader ``collate_fn`` that stacks samples and adds masks (runs in the workers)."""

    def __init__(self, masker: Masker | None, seed: int):
        self.masker = masker
        self.seed = seed

    def __call__(self, samples: list[Sample]) -> Batch:
        batch = collate(samples)
        if batch.size and self.masker is not None:
            batch = attrs.evolve(batch, masks=self.masker(batch.keys(self.seed)))
        return batch
