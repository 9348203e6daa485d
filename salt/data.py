"""Datasets, the resumable sampler and the loader that feeds masked batches to the trainer."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from salt.config import Config, DataConfig
from salt.masking import MaskCollator, Masker
from salt.synthetic import SyntheticMotion


def build_dataset(data: DataConfig, split: str = "train") -> Dataset:
    """The dataset named by ``data.spec``; ``synthetic[:N]`` is the built-in one."""
    name, _, arg = data.spec.partition(":")
    if name == "synthetic":
        try:
            length = int(arg) if arg else 2048
        except ValueError:
            raise ValueError(
                f"data spec {data.spec!r}: the part after 'synthetic:' is a clip count, "
                f"e.g. 'synthetic:512'"
            ) from None
        # The held-out split uses a different content seed, so no clip appears in both.
        return SyntheticMotion(
            length=length,
            num_frames=data.num_frames,
            image_size=data.image_size,
            frame_step=data.frame_step,
            seed=0 if split == "train" else 1,
        )
    raise ValueError(
        f"unknown data spec {data.spec!r}; the built-in data is 'synthetic' or 'synthetic:N' "
        f"(N clips)"
    )


class KeyedDataset(Dataset):
    """Wraps a dataset so items are fetched by ``(epoch, index)`` and carry both."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        sample = dict(self.dataset[index])
        sample["index"] = index
        sample["epoch"] = epoch
        return sample


class EpochBatchSampler(Sampler):
    """An endless stream of batches of ``(epoch, index)`` keys, resumable at any batch.

    Each epoch is a seeded permutation split evenly across ranks; batch ``b`` of the
    stream depends only on (seed, b, rank, world), so resuming at batch ``b`` is exact.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0
    ):
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start = start
        self.batches_per_epoch = (size // world) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {size} clips, fewer than one batch of {batch_size} per "
                f"process on {world} process(es); lower train.batch_size or add data"
            )

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(self.start, self.batches_per_epoch)
        while True:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=gen)
            per_rank = self.batches_per_epoch * self.batch_size
            mine = order[self.rank :: self.world][:per_rank].tolist()
            for b in range(offset, self.batches_per_epoch):
                chunk = mine[b * self.batch_size : (b + 1) * self.batch_size]
                yield [(epoch, i) for i in chunk]
            epoch, offset = epoch + 1, 0


def build_loader(
    dataset: Dataset,
    masker: Masker,
    cfg: Config,
    start_batch: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader whose workers decode clips and make masks; endless, starting at a batch."""
    sampler = EpochBatchSampler(
        len(dataset), cfg.train.batch_size, cfg.train.seed, rank, world, start_batch
    )
    workers = cfg.data.num_workers
    return DataLoader(
        KeyedDataset(dataset),
        batch_sampler=sampler,
        collate_fn=MaskCollator(masker, cfg.train.seed),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def normalize_clips(
    video: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype=torch.float32
) -> torch.Tensor:
    """uint8 clips ``[B, T, C, H, W]`` -> normalized model input ``[B, C, T, H, W]``."""
    x = video.to(dtype).div_(255.0) if video.dtype == torch.uint8 else video.to(dtype)
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, 1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, 1, -1, 1, 1)
    return ((x - m) / s).permute(0, 2, 1, 3, 4).contiguous()


def steps_per_epoch(size: int, cfg: Config, world: int = 1) -> int:
    """Optimizer steps in one pass over ``size`` clips."""
    batches = (size // world) // cfg.train.batch_size
    return max(1, math.floor(batches / cfg.train.accum_steps))


__all__ = [
    "build_dataset",
    "build_loader",
    "EpochBatchSampler",
    "KeyedDataset",
    "normalize_clips",
    "steps_per_epoch",
]
