"""Temporal probes: does a frozen encoder's representation know about motion and time?

Each task builds labelled clips from a source of videos (the built-in synthetic data, the
motion benchmark's clips or videos on disk), encodes every clip once with the frozen
encoder, and scores the features:

- ``time-arrow``: forward vs reversed clip (2-way);
- ``motion-static``: real clip vs its first frame repeated (2-way);
- ``temporal-shuffle``: ordered vs randomly permuted frames (2-way);
- ``stride``: the same video at frame step 1, 2 or 4 (3-way);
- ``clip-consistency``: two jittered sub-clips of a video (different start, shifted crop;
  on the built-in data the second shows the same motion over another background) must
  retrieve each other (top-1 cosine nearest neighbour among all videos' sub-clips).

Classification tasks are scored by seeded k-fold cross-validation *by video*: the videos
are dealt into ``FOLDS`` folds (all versions of a video in the same fold), a probe trained
on the other folds predicts each fold's clips, and the accuracy is over all those test
predictions, so every clip is tested exactly once. With a single split, a few dozen test
videos put the noise (~0.06) above most differences between encoders. Each score comes
with a standard error over videos (a video's clips are not independent of each other).
Features are the mean over the encoder's patch tokens (there is no CLS token);
``probe="attentive"`` instead fits the attentive probe of :mod:`salt.eval.heads` on the
tokens.

Everything is seeded: the videos drawn, the folds, the permutations, the jitter and the
probes, so a report is a pure function of (encoder, source, settings, seed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salt.clipspec import (
    ClipSpec,
    GeneratedSource,
    MotionSource,
    SyntheticSource,
    VideoSource,
    crop_jitter,
    make_source,
)
from salt.eval.heads import fit_attentive, fit_linear
from salt.eval.report import format_rows
from salt.eval.stats import standard_error
from salt.eval.tokens import FrozenEncoder, Progress, SpecTokens
from salt.synthetic import DIRECTIONS, SPEEDS

logger = logging.getLogger(__name__)

TASKS = ("time-arrow", "motion-static", "temporal-shuffle", "stride", "clip-consistency")
PROBES = ("linear", "attentive")
STRIDES = (1, 2, 4)
FOLDS = 5
# Videos per task: with 5 folds every one is tested, and 256 bring the standard error of an
# accuracy near 0.5 down to ~0.02 (a vit_tiny 8x112 encoder takes about a minute on 2 CPU cores).
NUM_VIDEOS = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Synthetic clips move in one of 8 uniformly drawn directions, so a reversed clip is just a
# forward clip of another possible video: the arrow of time is invisible. Real footage has
# gravity; the synthetic time-arrow task keeps the videos whose shape falls (S, SW, SE).
FALLING = tuple(DIRECTIONS.index(d) for d in ("S", "SW", "SE"))
# A clip shows only speed x step, so stride is ambiguous across the synthetic speeds; the
# stride task keeps the fastest ones (the clearest motion at small image sizes).
STRIDE_SPEED = len(SPEEDS) - 1


def accepts(source, task: str, video: int) -> bool:
    """Whether ``video`` of ``source`` can serve ``task``: a readable video can serve every
    task, but on the built-in worlds some cannot show what a task asks (see FALLING and
    STRIDE_SPEED); on the motion benchmark time-arrow keeps the even classes, because class
    ``2k + 1`` is class ``2k`` played backwards (a reversed clip would be a forward clip of
    the other)."""
    if not source.readable(video):
        return False
    if isinstance(source, SyntheticSource):
        if task == "time-arrow":
            return source.data.params(video)["direction"] in FALLING
        if task == "stride":
            return source.data.params(video)["speed"] == STRIDE_SPEED
    if isinstance(source, MotionSource):
        return task != "time-arrow" or source.data.label(video) % 2 == 0
    return True


# ------------------------------------------------------------------------------- tasks


@attrs.frozen
class TaskData:
    """A task's clips: labelled clips for a probe, or paired sub-clips for retrieval."""

    name: str
    videos: tuple[int, ...]
    clips: tuple[ClipSpec, ...]
    labels: tuple[int, ...] = ()  # classification tasks
    classes: tuple[str, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()  # retrieval: indices into clips


def select_videos(source, task: str, num_videos: int, seed: int) -> tuple[int, ...]:
    """The first ``num_videos`` videos (in a seeded order) that can serve ``task``."""
    order = np.random.default_rng([seed, 1]).permutation(len(source))
    chosen = []
    for video in order.tolist():
        if accepts(source, task, video):
            chosen.append(video)
            if len(chosen) == num_videos:
                break
    if len(chosen) < num_videos:
        logger.warning(
            "probe %s: only %d of the %d requested videos are usable in %s",
            task,
            len(chosen),
            num_videos,
            source.name,
        )
    needed = 2 if task == "clip-consistency" else 4
    if len(chosen) < needed:
        kind = source.data.kind if isinstance(source, GeneratedSource) else "synthetic"
        raise ValueError(
            f"probe {task!r} needs at least {needed} usable videos but {source.name!r} gave "
            f"{len(chosen)}; use a larger data spec (e.g. '{kind}:2048') or more videos"
        )
    return tuple(sorted(chosen))


def fold_videos(
    videos: Sequence[int], seed: int, folds: int = FOLDS
) -> tuple[tuple[int, ...], ...]:
    """A seeded partition of video ids into ``folds`` test folds of near-equal size (fewer
    when there are fewer videos): every video is in exactly one fold."""
    videos = sorted(set(videos))
    if len(videos) < 2:
        raise ValueError(f"cross-validation needs at least 2 videos, got {len(videos)}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    folds = min(folds, len(videos))
    order = np.random.default_rng([seed, 2]).permutation(len(videos))
    return tuple(tuple(sorted(videos[i] for i in order[k::folds])) for k in range(folds))


def shuffled_order(num_frames: int, seed: int, video: int) -> tuple[int, ...]:
    """A seeded frame permutation that is neither the identity nor the reversal."""
    if num_frames < 3:
        raise ValueError(
            f"temporal-shuffle needs clips of at least 3 frames (got {num_frames}): with 2 "
            f"frames the only shuffle is the reversal; leave the task out"
        )
    rng = np.random.default_rng([seed, 3, video])
    identity, reverse = list(range(num_frames)), list(range(num_frames))[::-1]
    while True:
        order = rng.permutation(num_frames).tolist()
        if order != identity and order != reverse:
            return tuple(order)


def build_task(
    task: str, videos: Sequence[int], num_frames: int, frame_step: int, image_size: int, seed: int
) -> TaskData:
    """The clips (and labels) of one task over the given videos."""
    T = num_frames
    clips, labels = [], []

    def labelled(*versions: ClipSpec) -> None:
        for label, clip in enumerate(versions):
            clips.append(clip)
            labels.append(label)

    if task == "time-arrow":
        for v in videos:
            base = ClipSpec(v, frame_step)
            labelled(base, attrs.evolve(base, order=tuple(range(T - 1, -1, -1))))
        return TaskData(task, tuple(videos), tuple(clips), tuple(labels), ("forward", "reversed"))
    if task == "motion-static":
        for v in videos:
            base = ClipSpec(v, frame_step)
            labelled(base, attrs.evolve(base, order=(0,) * T))
        return TaskData(task, tuple(videos), tuple(clips), tuple(labels), ("moving", "static"))
    if task == "temporal-shuffle":
        for v in videos:
            base = ClipSpec(v, frame_step)
            labelled(base, attrs.evolve(base, order=shuffled_order(T, seed, v)))
        return TaskData(task, tuple(videos), tuple(clips), tuple(labels), ("ordered", "shuffled"))
    if task == "stride":
        for v in videos:
            labelled(*(ClipSpec(v, step) for step in STRIDES))
        classes = tuple(f"step {s}" for s in STRIDES)
        return TaskData(task, tuple(videos), tuple(clips), tuple(labels), classes)
    if task == "clip-consistency":
        jitter = crop_jitter(image_size)
        pairs = []
        for v in videos:
            rng = np.random.default_rng([seed, 5, v])
            first, second = rng.uniform(0.0, 0.5), rng.uniform(0.5, 1.0)
            shifts = rng.integers(-jitter, jitter + 1, size=(2, 2)).tolist()
            pairs.append((len(clips), len(clips) + 1))
            # The second sub-clip shows the same motion in another scene where the source can
            # render one, so a static background cannot identify the video.
            clips.append(ClipSpec(v, frame_step, round(first, 4), tuple(shifts[0])))
            clips.append(ClipSpec(v, frame_step, round(second, 4), tuple(shifts[1]), scene=1))
        return TaskData(task, tuple(videos), tuple(clips), pairs=tuple(pairs))
    raise ValueError(f"unknown probe task {task!r}; the tasks are {', '.join(TASKS)}")


# ------------------------------------------------------------------------------ scoring


def retrieval_hits(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per pair ``[n]``: the share of the two directions (row i of one set finds row i of the
    other as its cosine nearest neighbour, and back) that hit, after centring on the mean
    of both sets."""
    both = torch.cat([first, second]).double()
    centred = F.normalize(both - both.mean(0), dim=1)
    a, b = centred[: len(first)], centred[len(first) :]
    sim = a @ b.T
    target = torch.arange(len(first))
    return ((sim.argmax(1) == target).double() + (sim.argmax(0) == target).double()) / 2


def retrieval_accuracy(first: torch.Tensor, second: torch.Tensor) -> float:
    """Top-1 retrieval accuracy (both directions averaged), see ``retrieval_hits``."""
    return float(retrieval_hits(first, second).mean())


# ------------------------------------------------------------------------------ reports


@attrs.frozen
class TaskResult:
    """One task's score: ``accuracy`` is the cross-validated probe accuracy over all clips
    (each predicted by the probe of the fold that held its video out), or top-1 retrieval
    accuracy for clip-consistency (``videos`` is then the gallery, ``folds`` 0); ``stderr``
    is its standard error over videos."""

    task: str
    metric: str  # "linear", "attentive" or "retrieval"
    accuracy: float
    stderr: float
    chance: float
    classes: tuple[str, ...]
    videos: tuple[int, ...]
    folds: int
    clips: int

    def to_dict(self) -> dict:
        d = attrs.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@attrs.frozen
class ProbeReport:
    """The scores of one encoder on the probe tasks, with the settings that produced them."""

    results: tuple[TaskResult, ...]
    probe: str
    source: str
    seed: int
    num_videos: int
    num_frames: int
    image_size: int
    frame_step: int
    seconds: float = 0.0

    def __getitem__(self, task: str) -> TaskResult:
        for result in self.results:
            if result.task == task:
                return result
        raise KeyError(f"no probe task {task!r} in this report; it has {', '.join(self.tasks)}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(r.task for r in self.results)

    @property
    def accuracies(self) -> dict[str, float]:
        """Task -> accuracy."""
        return {r.task: r.accuracy for r in self.results}

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "probe": self.probe,
            "source": self.source,
            "seed": self.seed,
            "num_videos": self.num_videos,
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "frame_step": self.frame_step,
            "seconds": self.seconds,
            "tasks": {r.task: r.to_dict() for r in self.results},
        }

    @classmethod
    def from_dict(cls, d: dict) -> ProbeReport:
        results = tuple(
            TaskResult(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
            for r in d["tasks"].values()
        )
        fields = {k: v for k, v in d.items() if k != "tasks"}
        return cls(results=results, **fields)

    def header(self) -> str:
        folds = max((r.folds for r in self.results), default=0)
        scoring = f", {folds}-fold cross-validation by video" if folds else ""
        return (
            f"{self.probe} probe{scoring}, {self.source}, {self.num_frames}x{self.image_size}px "
            f"clips at step {self.frame_step}, seed {self.seed}"
        )

    def table(self) -> str:
        """A readable text table, one row per task."""
        rows = [("task", "metric", "accuracy", "+-se", "chance", "videos", "folds", "clips")]
        for r in self.results:
            rows.append(
                (
                    r.task,
                    "top-1 retrieval" if r.metric == "retrieval" else f"{r.metric} probe",
                    f"{r.accuracy:.3f}",
                    f"{r.stderr:.3f}",
                    f"{r.chance:.3f}",
                    str(len(r.videos)),
                    str(r.folds) if r.folds else "-",
                    str(r.clips),
                )
            )
        return f"temporal probes: {self.header()}\n" + format_rows(rows)


def compare(reports: dict[str, ProbeReport]) -> str:
    """One table, a row per task and an ``accuracy+-stderr`` column per named report."""
    if not reports:
        raise ValueError("compare() needs at least one report")
    tasks = list(dict.fromkeys(t for report in reports.values() for t in report.tasks))
    rows = [("task", "chance", *reports)]
    for task in tasks:
        chances = [r[task].chance for r in reports.values() if task in r.tasks]
        cells = [_score(r[task]) if task in r.tasks else "-" for r in reports.values()]
        rows.append((task, f"{chances[0]:.3f}", *cells))
    headers = dict.fromkeys(r.header() for r in reports.values())
    return "temporal probes: " + "; ".join(headers) + "\n" + format_rows(rows)


def _score(result: TaskResult) -> str:
    return f"{result.accuracy:.3f}+-{result.stderr:.3f}"


# --------------------------------------------------------------------------------- run


def clip_settings(config: dict) -> dict:
    """``run_probes`` keywords that sample clips the way an exported encoder was trained."""
    return {"mean": config["mean"], "std": config["std"], "frame_step": config.get("frame_step", 4)}


def run_probes(
    encoder: nn.Module,
    source: str | GeneratedSource | VideoSource = "synthetic",
    num_videos: int = NUM_VIDEOS,
    seed: int = 0,
    probe: str = "linear",
    batch_size: int = 32,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    num_frames: int | None = None,
    image_size: int | None = None,
    frame_step: int = 4,
    tasks: Sequence[str] | None = None,
    progress: Progress | None = None,
    folds: int = FOLDS,
) -> ProbeReport:
    """Score a frozen encoder (normalized ``[B, C, T, H, W]`` -> tokens ``[B, N, D]``) on
    the temporal probe tasks (all of ``TASKS`` by default).

    ``source`` is a data spec (``synthetic[:N]``, ``motion[:N]``, a video folder, CSV
    manifest, SSv2 list or ``lerobot:PATH``) or a built source; each task draws
    ``num_videos`` videos from it (fewer, with a warning, when the source has fewer usable
    ones). Clips are ``num_frames`` frames at ``frame_step`` and ``image_size`` pixels
    (defaults: the encoder's ``num_frames`` and ``image_size``), normalized with
    ``mean``/``std`` (use the encoder's training values).
    Probes are cross-validated over ``folds`` folds of each task's videos.
    ``seed`` fixes everything random; ``progress(task, done, total)`` is called after each
    encoded batch. The encoder runs in eval mode under ``torch.inference_mode`` on its own
    device, and gets its train/eval mode back afterwards."""
    started = time.perf_counter()
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    tasks = tuple(TASKS if tasks is None else tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown probe task(s) {unknown}; the tasks are {', '.join(TASKS)}")
    if num_videos < 4:
        raise ValueError(
            f"num_videos must be at least 4 (a train and a test split), got {num_videos}"
        )
    if folds < 2:
        raise ValueError(f"folds must be at least 2 (cross-validation), got {folds}")
    num_frames = num_frames or getattr(encoder, "num_frames", None)
    image_size = image_size or getattr(encoder, "image_size", None)
    if not num_frames or not image_size:
        raise ValueError(
            "the encoder has no num_frames/image_size attributes; pass num_frames= and image_size="
        )
    if isinstance(source, str):
        source = make_source(source, image_size)
    if source.image_size != image_size:
        raise ValueError(
            f"the source renders {source.image_size}px frames but the clips are {image_size}px"
        )
    frozen = FrozenEncoder(encoder, mean, std, batch_size)
    clip_encoder = SpecTokens(frozen, source, num_frames, keep_tokens=probe == "attentive")
    was_training = encoder.training
    encoder.eval()
    try:
        results = []
        for task in tasks:
            videos = select_videos(source, task, num_videos, seed)
            data = build_task(task, videos, num_frames, frame_step, image_size, seed)
            clip_encoder.encode(data.clips, task, progress)
            result = score_task(data, clip_encoder, probe, seed, folds)
            logger.info("probe %s: %.3f (chance %.3f)", task, result.accuracy, result.chance)
            results.append(result)
    finally:
        encoder.train(was_training)
    return ProbeReport(
        results=tuple(results),
        probe=probe,
        source=source.name,
        seed=seed,
        num_videos=num_videos,
        num_frames=num_frames,
        image_size=image_size,
        frame_step=frame_step,
        seconds=round(time.perf_counter() - started, 3),
    )


def score_task(
    data: TaskData, clips: SpecTokens, probe: str, seed: int, folds: int = FOLDS
) -> TaskResult:
    """Cross-validate the probe of one task over ``folds`` folds of its videos (or score
    retrieval) on encoded clips."""
    if data.pairs:
        first = clips.features([data.clips[i] for i, _ in data.pairs])
        second = clips.features([data.clips[j] for _, j in data.pairs])
        hits = retrieval_hits(first, second)  # [videos]
        return TaskResult(
            task=data.name,
            metric="retrieval",
            accuracy=float(hits.mean()),
            stderr=standard_error(hits),
            chance=1.0 / len(data.pairs),
            classes=(),
            videos=data.videos,
            folds=0,
            clips=2 * len(data.pairs),
        )
    labels = torch.tensor(data.labels)
    clip_videos = torch.tensor([c.video for c in data.clips])
    predicted = torch.empty_like(labels)
    test_folds = fold_videos(data.videos, seed, folds)
    num_classes = len(data.classes)
    for fold in test_folds:
        test = torch.isin(clip_videos, torch.tensor(fold))
        train_specs = [c for c, t in zip(data.clips, test.tolist(), strict=True) if not t]
        test_specs = [c for c, t in zip(data.clips, test.tolist(), strict=True) if t]
        if probe == "linear":
            predicted[test] = fit_linear(
                clips.features(train_specs),
                labels[~test],
                clips.features(test_specs),
                num_classes,
            )
        else:
            predicted[test] = fit_attentive(
                clips.token_sets(train_specs),
                labels[~test],
                clips.token_sets(test_specs),
                num_classes,
                seed=seed,
            )
    correct = (predicted == labels).double()
    per_video = torch.stack([correct[clip_videos == v].mean() for v in data.videos])
    return TaskResult(
        task=data.name,
        metric=probe,
        accuracy=float(correct.mean()),
        stderr=standard_error(per_video),
        chance=1.0 / num_classes,
        classes=data.classes,
        videos=data.videos,
        folds=len(test_folds),
        clips=len(data.clips),
    )


def load_report(path: str | Path) -> ProbeReport:
    """A report saved as JSON with ``ProbeReport.to_dict``."""
    return ProbeReport.from_dict(json.loads(Path(path).read_text()))
