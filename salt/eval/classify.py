"""Frozen evaluation on labelled clips: V-JEPA's protocol, the number researchers report.

The encoder is frozen. Each training clip is encoded to its patch tokens; probes are
trained on them and scored by top-1 accuracy on held-out clips:

- ``attentive``: a learned query cross-attends over all patch tokens (multi-head), then a
  linear head - V-JEPA's attentive probe;
- ``linear``: a linear head on the mean-pooled tokens.

Both are trained with AdamW and a warmup-cosine learning rate, ``seeds`` times from
different initializations (mean and standard error over seeds are reported). A test clip
may be seen through several temporal views, whose logits are averaged.

``whiten``: the tokens are first ZCA-whitened with the training split's token mean and
covariance (no labels used). A trained encoder's tokens are dominated by a few directions
(a clip's colours and layout) that squash everything else in the probe's LayerNorm; an
invertible linear map adds no information, it only lets the probe reach the rest.

Tokens are computed once and kept in memory when they fit ``feature_memory_gb`` (every
epoch and every probe reuses them); otherwise - SSv2 with a ViT-L - the frozen encoder runs
on the fly each epoch and all probes learn from the same forward pass.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from salt.config import MOTION_BENCHMARKS, DataConfig, OptimConfig
from salt.data import (
    BUILT_IN,
    GeneratedClips,
    VideoDataset,
    build_source,
    keep_rendered,
    parse_data_spec,
    render_workers,
)
from salt.eval.heads import Whitening, make_probe
from salt.eval.report import format_rows
from salt.eval.stats import gap_in_stderr, per_clip, standard_error
from salt.eval.tokens import FrozenEncoder, Progress, Tokens
from salt.optim import lr_at
from salt.video import discover

log = logging.getLogger(__name__)

PROBES = ("attentive", "linear")


@attrs.frozen
class ClassifySettings:
    """How the probes are trained and scored (defaults: a CPU-sized V-JEPA recipe)."""

    probes: tuple[str, ...] = ("attentive", "linear")
    seeds: int = 3
    epochs: int = 20
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    probe_batch_size: int = 64
    batch_size: int = 16  # clips per encoder forward
    views: int = 1  # temporal views per test clip (videos), logits averaged
    spatial_views: int = 1  # crops along the long side per temporal view (videos)
    workers: int = 2
    feature_memory_gb: float = 4.0  # keep tokens in memory up to this size
    max_train: int = 0  # 0: every clip of the split
    max_test: int = 0
    whiten: bool = False  # ZCA-whiten tokens (training split's statistics) before the probes
    whiten_tokens: int = 200_000  # tokens the whitening is fitted on (at most)

    def __attrs_post_init__(self):
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ValueError(f"probes must be among {', '.join(PROBES)}, got {self.probes}")
        for name in (
            "seeds",
            "epochs",
            "probe_batch_size",
            "batch_size",
            "views",
            "spatial_views",
            "whiten_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- data


@attrs.frozen
class LabelledSplits:
    """Train and test clips with one class list."""

    train: Dataset
    test: Dataset
    classes: tuple[str, ...]
    name: str
    train_name: str = ""  # what each split was read from, for errors (default: name)
    test_name: str = ""


def labelled_splits(
    data: DataConfig,
    train: str | None = None,
    test: str | None = None,
    views: int = 1,
    spatial_views: int = 1,
) -> LabelledSplits:
    """Train and test clips of a labelled spec.

    Built-in data (``motion[:N]``, ``synthetic[:N]``) has its own splits (test: N // 2
    clips). Videos: ``train``/``test`` specs when given; else a folder holding ``train/``
    and ``test/`` (or ``val/``, ``validation/``) folders of class folders, or an SSv2
    ``train.json`` next to its ``validation.json``.
    """
    spec = parse_data_spec(data.spec)
    if train is None and test is None and spec.synthetic:
        test_count = max(1, spec.count // 2)
        train_set = build_source(data, "train")
        test_set = build_source(attrs.evolve(data, spec=f"{spec.kind}:{test_count}"), "test")
        classes = _builtin_classes(spec.kind)
        names = (f"{data.spec}, train split", f"{spec.kind}:{test_count}, test split")
        splits = LabelledSplits(train_set, test_set, classes, data.spec, *names)
        check_classes(splits)
        return splits
    train, test = _video_specs(data.spec if spec.kind == "videos" else "", train, test)
    train_records = discover(train)
    test_records = discover(test)
    labels = [r.label for c in (train_records, test_records) for r in c.records]
    if any(label is None for label in labels):
        raise ValueError(
            f"{train} or {test} has unlabelled videos; give each a label (a CSV 'label' "
            f"column, class folders, or the SSv2 labels.json)"
        )
    names = sorted({str(label) for label in labels if not isinstance(label, int)})
    if names and any(isinstance(label, int) for label in labels):
        raise ValueError(f"{train} and {test} mix class names and class numbers; use one")
    train_set = VideoDataset(train_records, data, train=True, classes=names or None)
    test_set = VideoDataset(
        test_records,
        data,
        train=False,
        views_per_video=views,
        classes=names or None,
        spatial_views=spatial_views,
    )
    if names:
        classes = tuple(names)
    else:
        classes = tuple(str(i) for i in range(max(int(label) for label in labels) + 1))
    splits = LabelledSplits(train_set, test_set, classes, f"{train} -> {test}", train, test)
    check_classes(splits)
    return splits


def clip_labels(dataset: Dataset) -> list[int] | None:
    """Each clip's class index, read without decoding a clip (None for a dataset that
    cannot say)."""
    if isinstance(dataset, Subset):
        labels = clip_labels(dataset.dataset)
        return None if labels is None else [labels[i] for i in dataset.indices]
    if isinstance(dataset, VideoDataset):
        return [dataset.label_id(dataset.record(i)) for i in range(len(dataset))]
    if isinstance(dataset, GeneratedClips):
        return [dataset.generator.label(i) for i in range(len(dataset))]
    return None


def check_classes(
    splits: LabelledSplits,
    train: Dataset | None = None,
    test: Dataset | None = None,
    hint: str = "",
) -> None:
    """Refuse splits a top-1 score would mislead on: a training split of fewer than 2
    classes (every prediction is right by default), or a test split with classes the
    training split lacks (no probe can learn them). ``train``/``test``: the clips actually
    used (default: the splits whole)."""
    train_labels = clip_labels(splits.train if train is None else train)
    test_labels = clip_labels(splits.test if test is None else test)
    if train_labels is None:
        return

    def named(labels: set[int]) -> str:
        known = splits.classes
        return ", ".join(known[i] if 0 <= i < len(known) else str(i) for i in sorted(labels))

    train_name = splits.train_name or splits.name
    seen = set(train_labels) - {-1}
    if len(seen) < 2:
        held = f"1 class ({named(seen)})" if seen else "no labelled clip"
        raise ValueError(
            f"the training clips ({train_name}) hold {held}: a probe needs at least 2 classes "
            f"to tell apart, and its top-1 would be 1.0 by default; add clips of other "
            f"classes{hint}"
        )
    unseen = set(test_labels or ()) - seen - {-1}
    if unseen:
        raise ValueError(
            f"the test clips ({splits.test_name or splits.name}) have classes the training "
            f"clips ({train_name}) lack ({named(unseen)}): a probe cannot learn them; give "
            f"every test class training clips{hint}"
        )


def _builtin_classes(kind: str) -> tuple[str, ...]:
    if kind in MOTION_BENCHMARKS:
        from salt.motion import CLASSES

        return CLASSES
    from salt.synthetic import DIRECTIONS

    return DIRECTIONS


def _video_specs(spec: str, train: str | None, test: str | None) -> tuple[str, str]:
    if train and test:
        return train, test
    path = Path(spec) if spec else None
    if path is not None and path.is_dir() and (path / "train").is_dir():
        for name in ("test", "val", "validation"):
            if (path / name).is_dir():
                return str(path / "train"), str(path / name)
    if path is not None and path.suffix == ".json" and (path.parent / "validation.json").is_file():
        return str(path), str(path.parent / "validation.json")
    raise ValueError(
        f"data {spec or train or test!r} has no train/test splits of its own; give --train and "
        f"--test specs (folders, CSV manifests or SSv2 lists), or a folder with train/ and "
        f"test/ (or val/) inside"
    )


def encoder_splits(
    config: dict,
    data: str = "motion",
    train: str | None = None,
    test: str | None = None,
    settings: ClassifySettings = ClassifySettings(),
) -> LabelledSplits:
    """Labelled train and test clips of ``data`` cut at an encoder's clip geometry (its
    exported ``config``), for ``settings``' views."""
    geometry = DataConfig(
        spec=data,
        num_frames=config["num_frames"],
        image_size=config["image_size"],
        frame_step=config.get("frame_step", 4),
        fps=config.get("fps", 0.0),
        num_workers=settings.workers,
    )
    return labelled_splits(
        geometry, train, test, views=settings.views, spatial_views=settings.spatial_views
    )


# ----------------------------------------------------------------------------- report


@attrs.frozen
class ProbeScore:
    """One probe kind's top-1 accuracy per seed, and which test clips each seed got right.

    ``hits[seed][i]`` is 1 where that seed's probe classified the i-th test clip (in clip
    order) correctly; empty where not recorded."""

    probe: str
    accuracies: tuple[float, ...]
    hits: tuple[tuple[int, ...], ...] = ()

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def stderr(self) -> float:
        """Standard error of the mean over probe seeds."""
        return standard_error(torch.tensor(self.accuracies, dtype=torch.float64))

    @property
    def clip_stderr(self) -> float:
        """Standard error of the mean from the draw of test clips: over clips, of each clip's
        share of seeds that got it right (0 when the hits are unknown)."""
        return standard_error(per_clip(self.hits))


@attrs.frozen
class ClassifyReport:
    """Top-1 of each probe on the held-out clips, with what it was measured on."""

    encoder: str
    data: str
    classes: tuple[str, ...]
    train_clips: int
    test_clips: int
    views: int
    scores: tuple[ProbeScore, ...]
    mode: str  # "cached" tokens or "live" encoding
    seconds: dict
    whitened: bool = False  # tokens ZCA-whitened before the probes

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    def evaluations(self) -> list[dict]:
        """Each probe's top-1 as an export records it (``--record``: config.json and the
        model card's model-index)."""
        from datetime import date

        from salt import __version__

        kind = self.data.split(":")[0]  # motion:56 -> motion
        return [
            {
                "task": "video-classification",
                "dataset": self.data,
                "dataset_type": f"salt-vla/{kind}" if kind in BUILT_IN else self.data,
                "metric": "accuracy",
                "name": f"top-1, {s.probe} probe (frozen)",
                "value": round(s.mean, 4),
                "stderr": round(s.stderr, 4),
                "seeds": len(s.accuracies),
                "test_clips": self.test_clips,
                "whitened": self.whitened,
                "date": date.today().isoformat(),
                "salt_version": __version__,
            }
            for s in self.scores
        ]

    def score(self, probe: str) -> ProbeScore:
        return next(s for s in self.scores if s.probe == probe)

    def to_dict(self) -> dict:
        d = attrs.asdict(self)
        d["chance"] = self.chance
        d["scores"] = {
            s.probe: {
                "accuracies": list(s.accuracies),
                "mean": s.mean,
                "stderr": s.stderr,
                "clip_stderr": s.clip_stderr,
                "hits": [list(h) for h in s.hits],
            }
            for s in self.scores
        }
        return d


def compare(reports: dict[str, ClassifyReport]) -> str:
    """One table: a row per (encoder, probe), top-1 mean +- standard error over seeds, the
    standard error from the draw of test clips, and with a ``random`` report among them each
    other encoder's gap to it in standard errors of the difference (see ``gap_in_stderr``)."""
    first = next(iter(reports.values()))
    seeds = len(first.scores[0].accuracies)
    baseline = reports.get("random")
    title = (
        f"{first.data}: {len(first.classes)} classes, {first.train_clips} train / "
        f"{first.test_clips} test clips, {first.views} view(s) per test clip, chance "
        f"{first.chance:.3f}" + (", tokens whitened" if first.whitened else "")
    )
    header = ("encoder", "probe", f"top-1 (+- s.e., {seeds} seeds)", "s.e. (clips)")
    rows = [header + (("vs random",) if baseline is not None else ())]
    for name, report in reports.items():
        for s in report.scores:
            row = (name, s.probe, f"{s.mean:.3f} +- {s.stderr:.3f}", f"{s.clip_stderr:.3f}")
            if baseline is not None and report is not baseline:
                row += (f"{gap_in_stderr(s, baseline.score(s.probe)):+.1f} s.e.",)
            rows.append(row)
    return title + "\n" + format_rows(rows)


# ----------------------------------------------------------------------------- run


def probe_schedule(s: ClassifySettings, total_steps: int) -> OptimConfig:
    """The probes' warmup-cosine schedule, in the trainer's terms (``salt.optim.lr_at``):
    warmup over ``warmup_fraction`` of the steps (at least one), then cosine to ``min_lr``."""
    return OptimConfig(
        lr=s.lr,
        min_lr=s.min_lr,
        warmup_steps=max(1, int(s.warmup_fraction * total_steps)),
        max_warmup_fraction=0.99,
        weight_decay=s.weight_decay,
    )


def feature_bytes(n_clips: int, tokens: int, dim: int) -> int:
    """Memory of ``n_clips`` clips' tokens kept as fp16."""
    return n_clips * tokens * dim * 2


def classify(
    encoder: nn.Module,
    splits: LabelledSplits,
    mean,
    std,
    settings: ClassifySettings = ClassifySettings(),
    name: str = "encoder",
    device: str | torch.device = "auto",
    progress: Progress | None = None,
) -> ClassifyReport:
    """Train ``settings.probes`` on the frozen encoder's tokens of ``splits.train`` and
    score them on ``splits.test`` (``device`` auto: a GPU when there is one)."""
    from salt.distributed import resolve_device

    device = resolve_device(str(device))
    encoder = encoder.to(device).eval()
    train, test = _limit_checked(splits, settings)
    tokens_per_clip = int(getattr(encoder, "num_tokens", 0)) or math.prod(encoder.grid)
    need = feature_bytes(len(train) + len(test), tokens_per_clip, encoder.embed_dim)
    cached = need <= settings.feature_memory_gb * 1e9
    log.info(
        "classify: %d train / %d test clips, %s tokens (%.2f GB as fp16)",
        len(train),
        len(test),
        "cached" if cached else "live",
        need / 1e9,
    )
    started = time.perf_counter()
    frozen = FrozenEncoder(encoder, mean, std, settings.batch_size, settings.workers)
    common = {"cached": cached, "progress": progress}
    train_tokens = Tokens(frozen, train, **common, stage=f"{name} train")
    test_tokens = Tokens(frozen, test, **common, stage=f"{name} test")
    probes = {
        (kind, seed): make_probe(kind, encoder.embed_dim, len(splits.classes), seed).to(device)
        for kind in settings.probes
        for seed in range(settings.seeds)
    }
    whiten = nn.Identity()
    if settings.whiten:
        fitted = time.perf_counter()
        # Shuffled, like epoch 0: the first clips of a folder of class folders are one class.
        batches = train_tokens.batches(settings.probe_batch_size, seed=0)
        whiten = Whitening.fit((t for t, _, _ in batches), settings.whiten_tokens).to(device)
        log.info("classify: whitening fitted in %.1f s", time.perf_counter() - fitted)
    optimizers = {
        key: torch.optim.AdamW(p.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        for key, p in probes.items()
    }
    steps = settings.epochs * math.ceil(len(train) / settings.probe_batch_size)
    schedule = probe_schedule(settings, steps)
    step = 0
    trained = time.perf_counter()
    for epoch in range(settings.epochs):
        for tokens, labels, _ in train_tokens.batches(settings.probe_batch_size, seed=epoch):
            x, y = whiten(tokens.to(device).float()), labels.to(device)
            lr = lr_at(step, schedule, steps)
            for key, probe in probes.items():
                for group in optimizers[key].param_groups:
                    group["lr"] = lr
                loss = F.cross_entropy(probe(x), y)
                optimizers[key].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[key].step()
            step += 1
        if progress is not None:
            progress(f"{name} probes", epoch + 1, settings.epochs)
    train_seconds = time.perf_counter() - trained
    views = getattr(test, "views", 1)
    scores, tested = score_probes(probes, test_tokens, whiten, settings, device, views)
    seconds = {
        "features": round(train_tokens.seconds + test_tokens.seconds, 3),
        "probe_training": round(train_seconds, 3),
        "total": round(time.perf_counter() - started, 3),
    }
    return ClassifyReport(
        encoder=name,
        data=splits.name,
        classes=tuple(splits.classes),
        train_clips=len(train),
        test_clips=tested,
        views=views,
        scores=tuple(scores),
        mode="cached" if cached else "live",
        seconds=seconds,
        whitened=settings.whiten,
    )


def score_probes(probes, test_tokens, whiten, settings, device, views: int):
    """Each probe's hits per test clip (its views' logits summed), and the clips tested."""
    logits = {key: {} for key in probes}
    truth: dict[int, int] = {}
    with torch.inference_mode():
        for tokens, labels, ids in test_tokens.batches(settings.probe_batch_size, seed=None):
            x = whiten(tokens.to(device).float())
            clips = (ids // views).tolist()
            for key, probe in probes.items():
                out = probe(x).float().cpu()
                for clip, row in zip(clips, out, strict=True):
                    logits[key][clip] = logits[key].get(clip, 0) + row  # views averaged
            truth.update(zip(clips, labels.tolist(), strict=True))
    scores = []
    for kind in settings.probes:
        hits = []
        for seed in range(settings.seeds):
            votes = logits[(kind, seed)]
            hits.append(tuple(int(int(votes[c].argmax()) == truth[c]) for c in sorted(votes)))
        accuracies = tuple(sum(h) / max(len(h), 1) for h in hits)
        scores.append(ProbeScore(kind, accuracies, tuple(hits)))
    return scores, len(truth)


def evaluate(
    encoder,
    data: str = "motion",
    train: str | None = None,
    test: str | None = None,
    device: str = "auto",
    **settings,
) -> ClassifyReport:
    """Frozen evaluation from Python: ``salt eval classify`` on one encoder.

    ``encoder`` is what ``VideoEncoder.from_pretrained`` takes (an export, run, checkpoint
    or Hub repo id) or a ``VideoEncoder``; ``data`` a labelled spec (``motion[:N]``, a folder
    with train/ and test/, an SSv2 ``train.json``) or ``train``/``test`` specs; ``settings``
    any :class:`ClassifySettings` field (``probes``, ``seeds``, ``epochs``, ``lr``, ...).
    """
    from salt.export import load_encoder

    if hasattr(encoder, "model") and hasattr(encoder, "config"):  # a VideoEncoder
        model, config = encoder.model, encoder.config
    else:
        model, config = load_encoder(encoder)
    chosen = ClassifySettings(**settings)
    splits = encoder_splits(config, data, train, test, chosen)
    name = str(encoder) if isinstance(encoder, str | Path) else config["architecture"]
    return classify(model, splits, config["mean"], config["std"], chosen, name, device)


def _limit_checked(splits: LabelledSplits, s: ClassifySettings) -> tuple[Dataset, Dataset]:
    """The train and test clips ``max_train``/``max_test`` keep, their classes checked."""
    train, test = _limit(splits.train, s.max_train), _limit(splits.test, s.max_test)
    if train is not splits.train or test is not splits.test:
        hint = (
            f" (--max-train {s.max_train} / --max-test {s.max_test} keep the first clips of "
            f"each split: raise them, or 0 for all)"
        )
        check_classes(splits, train, test, hint)
    return train, test


def share_clips(splits: LabelledSplits, settings: ClassifySettings) -> ClassifySettings:
    """Render the built-in clips :func:`classify` will read (the first ``max_train`` /
    ``max_test`` of each split) once, in ``settings.workers`` processes (at least one per
    torch thread), into the splits' own memory (``data.keep_clips_gb``), so every encoder
    then scored on ``splits`` reads them instead of drawing each again - the quick start's
    three models, a curve's checkpoints. Returns the settings to score with: no loader
    workers when every clip is kept, else ``settings`` as they are (videos are decoded per
    encoder as before)."""
    parts = list(zip(_limit_checked(splits, settings), (splits.train, splits.test), strict=True))
    if not all(isinstance(base, GeneratedClips) for _, base in parts):
        return settings
    if any(len(part) > base.capacity for part, base in parts):
        return settings
    for part, base in parts:
        keep_rendered(base, range(len(part)), render_workers(settings.workers))
    return attrs.evolve(settings, workers=0)


def _limit(dataset: Dataset, count: int) -> Dataset:
    if not count or count >= len(dataset):
        return dataset
    subset = Subset(dataset, list(range(count)))
    subset.getitem = lambda i, epoch=0: dataset.getitem(i, epoch)  # KeyedDataset's interface
    subset.views = getattr(dataset, "views", 1)
    return subset


def plan_lines(
    encoder: nn.Module, config: dict, splits: LabelledSplits, s: ClassifySettings
) -> list[str]:
    """What ``salt eval classify --dry-run`` prints: sizes, memory and compute."""
    train, test = _limit_checked(splits, s)
    tokens = int(getattr(encoder, "num_tokens", 0)) or math.prod(encoder.grid)
    need = feature_bytes(len(train) + len(test), tokens, encoder.embed_dim)
    cached = need <= s.feature_memory_gb * 1e9
    flops = getattr(encoder, "forward_flops", None)
    per_clip = float(flops(tokens)) if flops else float("nan")
    passes = 1 if cached else s.epochs
    params = sum(p.numel() for p in encoder.parameters())
    probe_params = sum(
        p.numel()
        for kind in s.probes
        for p in make_probe(kind, encoder.embed_dim, len(splits.classes), 0).parameters()
    )
    return [
        f"encoder {config.get('architecture', '?')} ({params / 1e6:.1f}M params, frozen), "
        f"{config['num_frames']}x{config['image_size']}px clips, {tokens} tokens x "
        f"{encoder.embed_dim}",
        f"data {splits.name}: {len(splits.classes)} classes, {len(train)} train / {len(test)} "
        f"test clips x {getattr(splits.test, 'views', 1)} view(s)",
        f"tokens as fp16: {need / 1e9:.2f} GB -> "
        + (
            "kept in memory, encoded once"
            if cached
            else f"above --feature-memory {s.feature_memory_gb:g} GB: encoded live every epoch"
        ),
        f"encoder: {per_clip * (len(train) * passes + len(test)) / 1e12:.1f} TFLOP in all "
        f"({passes} pass(es) over train), probes: {', '.join(s.probes)} x {s.seeds} seeds "
        f"({probe_params / 1e6:.2f}M params each set), {s.epochs} epochs",
    ]
