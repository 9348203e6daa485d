"""Clips by specification, for evaluation: a video of a source, a frame step, a position,
a crop shift, a frame order and (on the built-in worlds) another scene of the same motion.

The sources are the data layer's own: the built-in generators (``synthetic[:N]``,
``motion[:N]``, their held-out ``val`` content) and videos found by :func:`salt.video.discover`
(a folder, CSV manifest, SSv2 list or ``lerobot:PATH``). :class:`SpecClips` serves a list of
specs as a dataset of :class:`~salt.batch.Sample` s, which the evaluation's one token
encoder (:mod:`salt.eval.tokens`) reads like any other source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset

from salt.batch import Sample
from salt.data import SPLIT_SEEDS, SYNTHETIC_CLIPS, parse_data_spec
from salt.motion import MotionClasses
from salt.natural import NaturalMotionClasses
from salt.synthetic import ProceduralClips, SyntheticMotion
from salt.video import VideoCollection, VideoDecodeError, decode_view, discover, open_video, view_of

logger = logging.getLogger(__name__)


@attrs.frozen
class ClipSpec:
    """One clip of a source video: ``num_frames`` frames ``step`` apart starting at
    ``position`` (0..1) of the video's free range; ``shift`` (dy, dx) pixels moves the crop
    (None: the standard centre view); ``order`` re-orders the decoded frames; ``scene`` > 0
    asks for the same motion in another scene (another background), where the source can
    render one (the built-in data; videos on disk have only their own)."""

    video: int
    step: int
    position: float = 0.5
    shift: tuple[int, int] | None = None
    order: tuple[int, ...] | None = None
    scene: int = 0


class GeneratedSource:
    """Held-out clips of built-in data (the ``val`` split's content seed), rendered at any
    frame numbers."""

    generator_class: type[ProceduralClips]

    def __init__(
        self, length: int = SYNTHETIC_CLIPS, image_size: int = 224, seed: int = SPLIT_SEEDS["val"]
    ):
        self.data = self.generator_class(length=length, image_size=image_size, seed=seed)
        self.image_size = image_size
        self.name = f"{self.data.kind}:{length}"

    def __len__(self) -> int:
        return len(self.data)

    def readable(self, video: int) -> bool:
        """Every built-in video renders."""
        return True

    def clip(self, spec: ClipSpec, num_frames: int) -> torch.Tensor:
        """``uint8 [T, C, H, W]``."""
        # A built-in video has no end; treat it as two clip spans long.
        start = round(spec.position * num_frames * spec.step)
        frames = self.data.render(
            spec.video, start + np.arange(num_frames) * spec.step, scene=spec.scene
        )
        if spec.shift is not None:
            # The built-in worlds (shapes and backgrounds) are periodic, so a roll is a
            # seamless crop shift (but for the stripes of the motion benchmark's bar).
            frames = np.roll(frames, spec.shift, axis=(1, 2))
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class SyntheticSource(GeneratedSource):
    """Held-out clips of the built-in moving-shape data (``synthetic[:N]``)."""

    generator_class = SyntheticMotion


class MotionSource(GeneratedSource):
    """Held-out clips of the labelled motion benchmark (``motion[:N]``, :mod:`salt.motion`)."""

    generator_class = MotionClasses


class NaturalMotionSource(MotionSource):
    """Held-out clips of the motion benchmark with photo textures (``motion-natural[:N]``)."""

    generator_class = NaturalMotionClasses


GENERATED = {
    "synthetic": SyntheticSource,
    "motion": MotionSource,
    "motion-natural": NaturalMotionSource,
}


class VideoSource:
    """Videos of a ``salt.video`` collection (folder, CSV manifest or SSv2 list)."""

    def __init__(self, collection: VideoCollection, image_size: int = 224, name: str = ""):
        self.collection = collection
        self.image_size = image_size
        self.name = name or str(collection.root)
        self._reader: tuple[int, object] | None = None  # the last opened video
        self._usable: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.collection.records)

    def reader(self, video: int):
        if self._reader is None or self._reader[0] != video:
            reader = open_video(self.collection.path(self.collection.records[video]))
            if len(reader) == 0:
                raise VideoDecodeError(f"video {self.collection.records[video].source!r} is empty")
            self._reader = (video, reader)
        return self._reader[1]

    def readable(self, video: int) -> bool:
        """Whether ``video`` opens (a corrupt one is skipped with a warning, once)."""
        if video not in self._usable:
            try:
                self.reader(video)
                self._usable[video] = True
            except Exception as err:  # a corrupt file can fail anywhere inside the decoder
                logger.warning(
                    "evaluation skips %s: %s", self.collection.records[video].source, err
                )
                self._usable[video] = False
        return self._usable[video]

    def clip(self, spec: ClipSpec, num_frames: int) -> torch.Tensor:
        """``uint8 [T, C, H, W]``, decoded through a ``salt.video.View``."""
        reader = self.reader(spec.video)
        size = self.image_size
        record = self.collection.records[spec.video]
        source, segment = record.source, record.segment
        if spec.shift is None:
            view = view_of(
                reader, source, num_frames, spec.step, size, position=spec.position, segment=segment
            )
            return decode_view(reader, view)
        # Shifted crops come from a slightly larger resize so that they stay inside the frame:
        # the centre view at that size, cropped to ``size`` around its centre plus the shift.
        margin = crop_jitter(size)
        view = view_of(
            reader,
            source,
            num_frames,
            spec.step,
            size + 2 * margin,
            position=spec.position,
            segment=segment,
        )
        top, left = view.crop[0] + margin + spec.shift[0], view.crop[1] + margin + spec.shift[1]
        return decode_view(reader, attrs.evolve(view, crop=(top, left, size, size)))


def make_source(spec: str, image_size: int) -> GeneratedSource | VideoSource:
    """The probe source a data spec names: ``synthetic[:N]``, ``motion[:N]``,
    ``motion-natural[:N]`` or videos (see ``discover``)."""
    parsed = parse_data_spec(spec)
    if parsed.kind in GENERATED:
        return GENERATED[parsed.kind](parsed.count, image_size)
    return VideoSource(discover(parsed.path), image_size, name=spec)


def crop_jitter(image_size: int) -> int:
    """The largest crop shift (pixels) of clip-consistency sub-clips."""
    return max(1, image_size // 16)


class SpecClips(Dataset):
    """The clips ``specs`` name, rendered from ``source`` at ``num_frames`` frames (frames
    re-ordered as a spec asks): a dataset of samples like the training sources."""

    def __init__(self, source, specs: Sequence[ClipSpec], num_frames: int):
        self.source, self.specs, self.num_frames = source, list(specs), num_frames

    def __len__(self) -> int:
        return len(self.specs)

    def getitem(self, index: int, epoch: int = 0) -> Sample:
        spec = self.specs[index]
        clip = self.source.clip(attrs.evolve(spec, order=None), self.num_frames)
        video = clip[list(spec.order)] if spec.order is not None else clip
        return Sample(video, index=index, epoch=epoch)

    def __getitem__(self, index: int) -> Sample:
        return self.getitem(index)
