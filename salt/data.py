"""The data layer: every source of clips, its splits, and the loader that feeds the loop.

Sources (each a torch ``Dataset`` of :class:`salt.batch.Sample`):

- ``SyntheticClips`` - the built-in moving-shapes data (``synthetic[:N]``);
- ``VideoDataset``   - videos on disk (a folder, a CSV manifest or an SSv2 list);
- ``CachedClips``    - one split of a teacher-latent cache: each clip decoded with the view
  the teacher saw, its latents attached as the sample's targets.

:func:`parse_data_spec` is the one reader of data specs and :func:`build_source` the one
place that knows splits: ``synthetic`` holds out clips with another content seed, videos
take a held-out spec, and a cache keeps each split it was built with.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from salt.batch import Batch, MaskCollator, Sample
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
    read_centre_view,
    view_of,
)

log = logging.getLogger("salt.train")

SYNTHETIC_CLIPS = 2048  # clips in plain ``synthetic``
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # synthetic content seed of each split
_CLIP_SOURCE = re.compile(r"^synthetic/(\d+)$")


@attrs.frozen
class DataSpec:
    """A parsed data spec: the built-in data (with a clip count) or a path to videos."""

    kind: str  # "synthetic" or "videos"
    count: int = SYNTHETIC_CLIPS  # synthetic clips
    path: str = ""  # a folder, CSV/TXT manifest or SSv2 JSON list

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"


def parse_data_spec(spec: str) -> DataSpec:
    """``synthetic`` / ``synthetic:N`` (N clips of the built-in data), else a path to videos."""
    name, sep, arg = str(spec).strip().partition(":")
    if name != "synthetic":
        return DataSpec("videos", path=str(spec))
    if not sep or not arg:
        return DataSpec("synthetic")
    try:
        count = int(arg)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"data spec {spec!r}: the part after 'synthetic:' is a clip count, e.g. 'synthetic:512'"
        )
    return DataSpec("synthetic", count)


def synthetic_clip_index(source: str) -> int | None:
    """The clip number of a built-in clip's source id ``synthetic/N`` (a view's ``source``),
    else None."""
    m = _CLIP_SOURCE.match(str(source).strip())
    return int(m.group(1)) if m else None


def synthetic_view(dataset: SyntheticMotion, index: int) -> View:
    """The (only) view of a built-in clip: every frame of the clip, the whole image."""
    size = dataset.image_size
    frames = tuple(range(0, dataset.num_frames * dataset.frame_step, dataset.frame_step))
    return View(f"synthetic/{index}", frames, (0, 0, size, size), (size, size))


def check_split(split: str) -> str:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
    return split


class SyntheticClips(Dataset):
    """Built-in clips with their view; each split is drawn with its own content seed, so no
    clip appears in two splits."""

    def __init__(self, data: DataConfig, split: str = "train", count: int = SYNTHETIC_CLIPS):
        self.generator = SyntheticMotion(
            length=count,
            num_frames=data.num_frames,
            image_size=data.image_size,
            frame_step=data.frame_step,
            seed=SPLIT_SEEDS[check_split(split)],
        )

    def __len__(self) -> int:
        return len(self.generator)

    def getitem(self, index: int, epoch: int = 0) -> Sample:
        item = self.generator[index]
        view = synthetic_view(self.generator, index).as_dict()
        return Sample(item["video"], item["label"], view, index=index, epoch=epoch)

    def __getitem__(self, index: int) -> Sample:
        return self.getitem(index)


class VideoDataset(Dataset):
    """Clips of videos on disk: a random view per (seed, epoch, index) for training, fixed,
    evenly spaced views (``views_per_video`` per video, centre crop) otherwise.

    Readers are opened inside ``getitem``, i.e. in the DataLoader worker, never before
    the workers fork. An unreadable video yields a failed sample instead of raising.
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
        d = self.data
        geometry = (self.record(index).source, d.num_frames, d.frame_step, d.image_size, d.fps)
        if self.train:
            u = uniforms(sample_keys(self.seed, epoch, index), 3, stream=11)[0]
            return view_of(reader, *geometry, u=tuple(u))
        k = index % self.views_per_video
        return view_of(reader, *geometry, position=(k + 0.5) / self.views_per_video)

    def getitem(self, index: int, epoch: int = 0) -> Sample:
        record = self.record(index)
        try:
            reader = open_video(self.collection.path(record))
            view = self.view(index, reader, epoch)
            clip = decode_view(reader, view)
        except VideoDecodeError as err:
            return Sample.failed(str(err), index)
        except ViewMismatchError:
            raise
        except Exception as err:  # a corrupt file can fail anywhere inside the decoder
            return Sample.failed(f"cannot read {record.source!r}: {err}", index)
        return Sample(clip, self.label_id(record), view.as_dict(), index=index, epoch=epoch)

    def __getitem__(self, index: int) -> Sample:
        return self.getitem(index)


class CachedClips(Dataset):
    """One split of a latent cache: each clip decoded with its stored view, its latents as
    the sample's targets.

    ``data`` relocates the videos when its spec is a path (they moved since the build);
    the default ``synthetic`` means "where the cache says". Clips stored in the cache are
    used as they are, and then nothing is decoded.
    """

    def __init__(self, split, data: DataConfig):
        self.split = split  # salt.cache CacheSplit or LegacySplit
        self.data = data
        self.synthetic: SyntheticMotion | None = None
        self.root: Path | None = None
        info = split.info
        spec = parse_data_spec(data.spec)
        # --data says where the training videos are now; another split moves with it only
        # when its own recorded folder is gone.
        relocated = None if spec.synthetic else spec.path
        recorded = info.get("data_root")
        if split.name != "train" and recorded and Path(recorded).is_dir():
            relocated = None
        self.sources: list[str] | None = None  # older layout: each video's file
        if split.stores_clips:
            return  # every clip is in the cache: nothing to decode, no videos needed
        if info.get("data_kind") == "legacy":
            self._locate_legacy(relocated)
        elif info.get("data_kind") == "synthetic":
            meta = split.cache.meta
            geometry = {k: meta[k] for k in ("num_frames", "frame_step", "image_size")}
            built = attrs.evolve(data, spec=info["data_spec"], **geometry)
            self.synthetic = SyntheticClips(
                built, split.name, parse_data_spec(info["data_spec"]).count
            ).generator
        elif relocated is not None:
            root = Path(relocated)
            if root.is_file():  # a manifest or SSv2 list: its paths are relative to its folder
                root = root.parent
            if not root.is_dir():
                raise ViewMismatchError(
                    f"--data {relocated!r} does not exist; give the folder (or the CSV "
                    f"manifest or SSv2 list) where the cache's videos are now"
                )
            self.root = root
        else:
            root = Path(info["data_root"])
            if not root.is_dir():
                raise ViewMismatchError(
                    f"the cache's videos were under {info['data_root']}, which does not exist "
                    f"now; pass --data DIR to say where they moved"
                )
            self.root = root

    def _locate_legacy(self, relocated: str | None) -> None:
        if relocated is None:
            raise ValueError(
                f"the older-layout cache {self.split.path} does not record where its videos "
                f"are; pass --data DIR (a folder with files named <video_id>.<ext>)"
            )
        collection = discover(relocated)
        by_stem = {Path(r.source).stem: r.source for r in collection.records}
        absent = [v for v in self.split.video_ids if v not in by_stem]
        if absent:
            raise ViewMismatchError(
                f"{len(absent)} video ids of the cache have no file under {relocated} "
                f"(first: {absent[:3]})"
            )
        self.sources = [by_stem[v] for v in self.split.video_ids]
        self.root = Path(collection.root)

    def __len__(self) -> int:
        return len(self.split)

    def getitem(self, i: int, epoch: int = 0) -> Sample:
        latents = self.split.latents(i)
        clip = self.split.clip(i)
        view = None
        if clip is None:
            try:
                view, clip = self._decode(i)
            except ViewMismatchError:
                raise
            except Exception as err:  # unreadable now: skip, like any bad video
                return Sample.failed(f"cache sample {i}: {err}", i)
        return Sample(clip, self.split.label(i), view, latents, index=i, epoch=epoch)

    def __getitem__(self, i: int) -> Sample:
        return self.getitem(i)

    def _decode(self, i: int) -> tuple[dict, torch.Tensor]:
        if self.sources is not None:  # older layout: no stored view; the centre view, as built
            data = attrs.evolve(self.data, fps=0.0)  # the older layout predates data.fps
            view, clip = read_centre_view(self.root / self.sources[i], self.sources[i], data)
            return view.as_dict(), clip
        view = self.split.view(i)
        if self.synthetic is not None:
            index = synthetic_clip_index(view.source)
            return view.as_dict(), self.synthetic[index]["video"]
        path = self.root / view.source
        if not path.is_file():
            raise ViewMismatchError(
                f"cache sample {i}: its source {view.source!r} is missing under {self.root}; "
                f"pass --data DIR if the videos moved"
            )
        try:
            return view.as_dict(), decode_view(open_video(path), view)
        except ViewMismatchError as err:
            raise ViewMismatchError(f"cache sample {i}: {err}") from None


def build_source(
    data: DataConfig, split: str = "train", seed: int = 0, cache=None, fixed_views: int = 0
) -> Dataset:
    """The clips of ``split``: a cache's split when the teacher's latents are stored
    (``cache``), else the built-in data or the videos named by ``data.spec``.

    Videos have no split of their own: a held-out split is a held-out spec. Training clips
    take a random view per (seed, epoch, index), other splits a fixed centre view;
    ``fixed_views`` > 0 takes that many evenly spaced centre views per video in any split
    (what a cache build stores).
    """
    check_split(split)
    if cache is not None:
        return CachedClips(cache.split(split), data)
    spec = parse_data_spec(data.spec)
    if spec.synthetic:
        return SyntheticClips(data, split, spec.count)
    train = split == "train" and fixed_views == 0
    views = max(1, fixed_views)
    return VideoDataset(discover(spec.path), data, seed=seed, train=train, views_per_video=views)


class TooManyBadVideos(RuntimeError):
    """More than ``data.max_bad_fraction`` of the videos seen could not be read."""


class ReadableBatches:
    """Batches from a loader, skipping unreadable videos with a warning naming each, and
    stopping once too many of them fail."""

    MIN_SEEN = 20  # judge the share of bad videos only once a few were tried

    def __init__(self, loader: DataLoader, max_bad_fraction: float):
        self.iterator = iter(loader)
        self.max_bad_fraction = max_bad_fraction
        self.seen = 0
        self.bad = 0

    def __iter__(self) -> ReadableBatches:
        return self

    def __next__(self) -> Batch:
        while True:
            batch = next(self.iterator)
            self.seen += batch.size + len(batch.errors)
            for message in batch.errors:
                self.bad += 1
                log.warning("skipped an unreadable video: %s", message)
            if self.seen >= self.MIN_SEEN and self.bad > self.max_bad_fraction * self.seen:
                raise TooManyBadVideos(
                    f"{self.bad} of {self.seen} videos could not be read, more than "
                    f"data.max_bad_fraction={self.max_bad_fraction}; check the data (the log "
                    f"names each file) or raise data.max_bad_fraction"
                )
            if batch.size:
                return batch


class KeyedDataset(Dataset):
    """Wraps a source so items are fetched by ``(epoch, index)`` and carry both."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, index = key
        # Sources with per-epoch randomness (random views) take the epoch too.
        sample = self.dataset.getitem(index, epoch)
        return attrs.evolve(sample, index=index, epoch=epoch)


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


def build_eval_loader(
    dataset: Dataset,
    batch_size: int,
    indices: Sequence[int],
    masker: Masker | None,
    seed: int,
    workers: int,
) -> DataLoader:
    """The clips at ``indices`` in order, as epoch 0, with masks seeded by ``seed`` (no masks
    without a masker): evaluation and cache builds."""
    from torch.utils.data import Subset

    return DataLoader(
        Subset(KeyedDataset(dataset), [(0, i) for i in indices]),
        batch_size=batch_size,
        collate_fn=MaskCollator(masker, seed),
        num_workers=workers,
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
