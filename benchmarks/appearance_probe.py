"""What a trained encoder keeps of a clip's appearance, next to its motion.

The photo-texture benchmark (``motion-natural``) draws each clip's surfaces from
scikit-image's 14 sample photos, independently of its motion class. This script trains the
quick start's probe (attentive, whitened tokens, low-shot) on the same held-out clips with
another label - which photo textures the background, or the moving object A - so an
encoder's top-1 there measures the appearance it carries, where ``salt eval classify
--data motion-natural`` measures the motion. Chance is 1/14 for every label.

    OMP_NUM_THREADS=2 python benchmarks/appearance_probe.py ENCODER [ENCODER ...] \
        [--labels background,object,motion] [--train 448] [--test 1792]

``--per-class REPORT...`` instead splits saved motion scores by class: a quick start's
``quickstart.json`` or ``salt eval classify ... --json``'s output on ``motion[:N]`` or
``motion-natural[:N]`` (their test clip ``i`` is class ``i mod 14``; the reports keep each
probe seed's hit on each clip), one column per encoder.

An ENCODER is what ``salt export``/``VideoEncoder.from_pretrained`` take (a run, a
checkpoint, an export folder), or ``random:ENCODER`` for a randomly initialized one of its
architecture (the quick start's random encoder, seed 0). Prints one row per encoder and
label: top-1 +- the probe seeds' standard error (and the test clips' draw).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import attrs
from torch.utils.data import Dataset

from salt.config import DataConfig
from salt.data import NaturalMotionClips
from salt.eval.baseline import random_like
from salt.eval.classify import ClassifySettings, LabelledSplits, classify
from salt.export import load_encoder
from salt.motion import CLASSES
from salt.natural import PHOTOS

# The key of each surface in params(): the background, and object A (the one every motion
# class moves).
SURFACES = {"background": "background", "object": "a"}


class PhotoLabels(Dataset):
    """``motion-natural`` clips labelled by the photo one surface is cut from (``surface``),
    or by their motion class (``"motion"``): the clips are the benchmark's, drawn once per
    process and kept."""

    def __init__(self, clips: NaturalMotionClips, surface: str):
        self.clips, self.surface = clips, surface

    def __len__(self) -> int:
        return len(self.clips)

    def label(self, index: int) -> int:
        if self.surface == "motion":
            return self.clips.generator.label(index)
        texture = self.clips.generator.params(index)[SURFACES[self.surface]]["texture"]
        return int(texture["photo"])

    def getitem(self, index: int, epoch: int = 0):
        return attrs.evolve(self.clips.getitem(index, epoch), label=self.label(index))

    def __getitem__(self, index: int):
        return self.getitem(index)


@functools.cache
def clips(geometry: tuple[int, int, int], split: str, count: int) -> NaturalMotionClips:
    """``count`` clips of ``split`` at ``(num_frames, image_size, frame_step)``: one dataset
    per geometry, so each clip is drawn once for every label and encoder."""
    num_frames, image_size, frame_step = geometry
    data = DataConfig(
        spec=f"motion-natural:{count}",
        num_frames=num_frames,
        image_size=image_size,
        frame_step=frame_step,
    )
    return NaturalMotionClips(data, split, count)


def splits(config: dict, surface: str, train: int, test: int) -> LabelledSplits:
    """``train`` labelled clips of the train split and ``test`` of the test split, at the
    encoder's clip geometry."""
    geometry = (config["num_frames"], config["image_size"], config.get("frame_step", 4))
    parts = [clips(geometry, "train", train), clips(geometry, "test", test)]
    classes = tuple(CLASSES) if surface == "motion" else PHOTOS
    name = f"motion-natural, {surface} label"
    return LabelledSplits(*(PhotoLabels(p, surface) for p in parts), classes, name)


def encoder(path: str):
    """The module and config ``path`` names (``random:ENCODER``: a random one like it)."""
    if path.startswith("random:"):
        model, config = load_encoder(path.removeprefix("random:"))
        return random_like(model, architecture=config["architecture"], seed=0), config
    return load_encoder(path)


def class_scores(report: dict) -> list[float]:
    """Top-1 per motion class of one encoder's saved classify report (its attentive probe,
    averaged over seeds)."""
    hits = report["scores"]["attentive"]["hits"]
    if tuple(report["classes"]) != tuple(CLASSES) or report.get("views", 1) != 1 or not hits:
        raise ValueError(
            f"{report['data']!r} is not the built-in motion benchmark scored one view a clip "
            f"with per-clip hits: only motion[:N] and motion-natural[:N] reports split by class"
        )
    k = len(CLASSES)
    return [sum(seed[c::k].count(1) for seed in hits) / (len(hits) * len(hits[0][c::k]))
            for c in range(k)]  # fmt: skip


def per_class(paths: list[str]) -> list[str]:
    """Markdown rows: each motion class's top-1 for every encoder the reports hold."""
    columns: dict[str, list[float]] = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        reports = saved.get("classify", saved)  # a quick start's, or classify --json's
        for model, report in reports.items():
            columns[f"{path}:{model}"] = class_scores(report)
    lines = [f"| class | {' | '.join(columns)} |", f"| --- |{' --- |' * len(columns)}"]
    for c, name in enumerate(CLASSES):
        lines.append(f"| {name} | {' | '.join(f'{v[c]:.3f}' for v in columns.values())} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoders", nargs="+", help="encoders, or reports with --per-class")
    parser.add_argument(
        "--per-class", action="store_true", help="split saved motion scores by class instead"
    )
    parser.add_argument("--labels", default="background,object,motion")
    parser.add_argument("--train", type=int, default=448, help="labelled clips (default 448)")
    parser.add_argument("--test", type=int, default=1792, help="test clips (default 1792)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.per_class:
        try:
            print("\n".join(per_class(args.encoders)))
        except (OSError, ValueError, KeyError) as err:
            parser.error(f"--per-class: {err}")
        return 0
    labels = args.labels.split(",")
    unknown = [label for label in labels if label not in (*SURFACES, "motion")]
    if unknown:
        parser.error(f"--labels: unknown {unknown}; choose among background, object, motion")
    settings = ClassifySettings(
        probes=("attentive",), seeds=args.seeds, epochs=args.epochs, whiten=True, workers=0
    )
    print(f"| encoder | {' | '.join(labels)} |\n| --- |{' --- |' * len(labels)}")
    for path in args.encoders:
        model, config = encoder(path)
        row = []
        for label in labels:
            report = classify(
                model, splits(config, label, args.train, args.test), config["mean"],
                config["std"], settings, path, device="cpu",
            )  # fmt: skip
            score = report.scores[0]
            row.append(f"{score.mean:.3f} +- {score.stderr:.3f} (clips {score.clip_stderr:.3f})")
        print(f"| {path} | {' | '.join(row)} |", flush=True)
    print(f"chance: {1 / len(PHOTOS):.3f} (photos), {1 / len(CLASSES):.3f} (motion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
