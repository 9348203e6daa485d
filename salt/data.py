"""Datasets, the resumable sampler and the loader that feeds masked batches to the trainer."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from salt.collate import MaskCollator
from salt.config import Config, DataConfig
from salt.masking import Masker, sample_keys, uniforms
from salt.synthetic import SyntheticMotion
from salt.video import (
    VideoCollection,
    VideoDecodeError,
    VideoRecord,
    View,
    ViewMismatchError,
    decode_view,
    discover,
    open_video,
    sample_view,
)


def build_dataset(data: DataConfig, split: str = "train", seed: int = 0) -> Dataset:
    """The dataset named by ``data.spec``: ``synthetic[:N]`` (built in) or videos on disk."""
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
    return VideoDataset(discover(data.spec), data, seed=seed, train=split == "train")


class VideoDataset(Dataset):
    """Clips of videos on disk: a random view per (seed, epoch, index) for training, fixed,
    evenly spaced views (``views_per_video`` per video, centre crop) otherwise.

    Readers are opened inside ``__getitem__``, i.e. in the DataLoader worker, never before
    the workers fork. An unreadable video yields an ``error`` sample instead of raising.
    """

    def __init__(
        self,
        collection: VideoCollection,
        data: DataConfig,
        seed: int = 0,
        train: bool = True,
        views_per_video: int = 1,
    ):
        self.collection = collection
        self.data = data
        self.seed = seed
        self.train = train
        self.views_per_video = views_per_video
        names = sorted({str(r.label) for r in collection.records if r.label is not None})
        self.classes = names
        self._class_index = {name: i for i, name in enumerate(names)}

    def __len__(self) -> int:
        return len(self.collection.records) * self.views_per_video

    def label_id(self, record: VideoRecord) -> int:
        """Class index of a record's label (-1 when unlabelled)."""
        if record.label is None:
            return -1
        if isinstance(record.label, int):
            return record.label
        return self._class_index[str(record.label)]

    def record(self, index: int) -> VideoRecord:
        return self.collection.records[index // self.views_per_video]

    def view(self, index: int, reader, epoch: int = 0) -> View:
        """The view sample ``index`` takes in ``epoch`` (readers give length and size)."""
        record = self.record(index)
        height, width = reader[0].shape[:2]
        step = self.data.frame_step
        if self.data.fps > 0:
            step = max(1, round(reader.get_avg_fps() / self.data.fps))
        common = dict(
            source=record.source,
            length=len(reader),
            height=height,
            width=width,
            num_frames=self.data.num_frames,
            step=step,
            image_size=self.data.image_size,
        )
        if self.train:
            u = uniforms(sample_keys(self.seed, epoch, index), 3, stream=11)[0]
            return sample_view(**common, u=tuple(u))
        k = index % self.views_per_video
        return sample_view(**common, position=(k + 0.5) / self.views_per_video)

    def getitem(self, index: int, epoch: int) -> dict:
        record = self.record(index)
        try:
            reader = open_video(self.collection.path(record))
            if len(reader) == 0:
                raise VideoDecodeError(f"video {record.source!r} has no frames")
            view = self.view(index, reader, epoch)
            clip = decode_view(reader, view)
        except VideoDecodeError as err:
            return {"error": str(err), "index": index}
        except Exception as err:  # a corrupt file can fail anywhere inside the decoder
            if isinstance(err, ViewMismatchError):
                raise
            return {"error": f"cannot read {record.source!r}: {err}", "index": index}
        return {"video": clip, "label": self.label_id(record), "view": view.as_dict()}

    def __getitem__(self, index: int) -> dict:
        return self.getitem(index, 0)


class KeyedDataset(Dataset):
    """Wraps a dataset so items are fetched by ``(epoch, index)`` and carry both."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        # Datasets with per-epoch randomness (random views) take the epoch too.
        getitem = getattr(self.dataset, "getitem", None)
        sample = dict(getitem(index, epoch) if getitem else self.dataset[index])
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
