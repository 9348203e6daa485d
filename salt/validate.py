"""Held-out distillation loss: a trained pair scored against its teacher on fixed held-out
clips and masks.

It is what ``salt eval distill`` reports for a checkpoint, and what a run measures every
``train.eval_every`` steps to keep its best checkpoint without labels: SALT's student's
held-out loss predicts its downstream accuracy. The clips, their masks and their count are
the same at every measurement, so two points of a curve differ only by the weights.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

import attrs
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from salt.assemble import DataSource
from salt.batch import Batch
from salt.cache import MissingSplitError
from salt.config import Config
from salt.data import build_eval_loader, normalize_clips
from salt.distributed import DistInfo
from salt.losses import Objective, masked_loss
from salt.masking import Masker, gather_tokens
from salt.quant import dense

log = logging.getLogger("salt.train")


@attrs.frozen
class HeldOut:
    """Mean held-out loss (and each term) over ``clips`` clips, with the teacher's E[x^2] at
    the masked positions (the loss of predicting zeros, under MSE)."""

    loss: float
    terms: dict[str, float]
    target_power: float
    clips: int
    batches: int
    seconds: float = 0.0

    def record(self) -> dict:
        """The metrics line of one measurement: ``val_loss``, ``val_loss/<term>``, ..."""
        record = {"val_loss": self.loss}
        record.update({f"val_loss/{name}": value for name, value in self.terms.items()})
        record.update({"val_clips": self.clips, "val_seconds": self.seconds})
        return record


def loss_sums(
    model: nn.Module,
    teacher: nn.Module,
    batches: Iterable[Batch],
    objective: Objective,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """Clip-weighted sums over ``batches``: ``loss``, ``power``, each ``loss/<term>``, and the
    counts ``clips`` and ``batches`` (sums add up across processes; :func:`held_out_of`
    turns them into means)."""
    sums: dict[str, float] = {"loss": 0.0, "power": 0.0, "clips": 0, "batches": 0}
    with torch.inference_mode():
        for batch in batches:
            if not batch.size:
                continue
            batch = batch.to(device)
            video = normalize_clips(batch.video, mean, std)
            with autocast():
                targets = dense(batch.targets) if batch.targets is not None else teacher(video)
                loss, terms = masked_loss(
                    model(video, batch.masks), targets, batch.masks, objective
                )
            n = video.shape[0]
            sums["loss"] += float(loss) * n
            for name, value in terms.items():
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + float(value) * n
            normed = objective.normalize(targets.float())  # what the loss compares against
            power = [float(gather_tokens(normed, g.target).pow(2).mean()) for g in batch.masks]
            sums["power"] += n * sum(power) / len(power)
            sums["clips"] += n
            sums["batches"] += 1
    return sums


def held_out_of(sums: dict[str, float], seconds: float = 0.0) -> HeldOut:
    """Means from :func:`loss_sums` (added over processes)."""
    clips = sums["clips"]
    if not clips:
        raise ValueError("no readable held-out clips to score")
    terms = {k.split("/", 1)[1]: v / clips for k, v in sums.items() if k.startswith("loss/")}
    return HeldOut(
        loss=sums["loss"] / clips,
        terms=terms,
        target_power=sums["power"] / clips,
        clips=int(clips),
        batches=int(sums["batches"]),
        seconds=seconds,
    )


def add_over_ranks(sums: dict[str, float], info: DistInfo) -> dict[str, float]:
    """The sums of every process, added in rank order: the same numbers on every rank."""
    if not info.enabled:
        return sums
    gathered: list = [None] * info.world
    dist.all_gather_object(gathered, sums)
    total: dict[str, float] = {}
    for part in gathered:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


class Validation:
    """A run's held-out loss every ``train.eval_every`` steps (and at its last step).

    The held-out clips (the cache's ``val`` split, the built-in data's, or the videos of
    ``data.val_spec``) and their masks are read once, at the first measurement, and kept in
    memory; each process scores its share (batches ``rank::world``) and the sums are added,
    so every rank gets the same loss - the one a single process gets - and takes the same
    decisions. Reading and scoring leave
    the training RNG untouched: a run with validation takes the steps it would without.
    """

    def __init__(
        self,
        cfg: Config,
        clips: Dataset | None,
        masker: Masker,
        info: DistInfo,
        device: torch.device,
        bf16: bool = False,
    ):
        self.cfg = cfg
        self.clips = clips
        self.masker = masker
        self.info = info
        self.device = device
        self.bf16 = bf16
        self.every = cfg.train.eval_every if clips is not None else 0
        self.batches: list[Batch] | None = None
        self.why = ""  # why a run with train.eval_every > 0 has no held-out clips

    @classmethod
    def for_run(
        cls, cfg: Config, data: DataSource, masker: Masker, info: DistInfo, device, bf16=False
    ) -> Validation:
        """The run's validation on ``data``'s held-out clips, or one that never runs - with a
        warning saying why - when the run has none."""
        clips, why = None, ""
        if cfg.train.eval_every:
            try:
                clips = data.held_out()
            except (MissingSplitError, ValueError) as err:
                why = str(err).rstrip(".")
                log.warning(
                    "no held-out loss for this run (train.eval_every=%d): %s; or set "
                    "train.eval_every=0 to silence this",
                    cfg.train.eval_every,
                    why,
                )
        validation = cls(cfg, clips, masker, info, device, bf16)
        validation.why = why
        return validation

    def describe(self) -> str:
        """One line for the run's plan: when, on what, and where the best goes."""
        t = self.cfg.train
        if not t.eval_every:
            return "off (train.eval_every=0)"
        if self.clips is None:
            return f"none: {self.why}"
        count = min(len(self.clips), t.eval_batches * t.batch_size)
        return (
            f"every {t.eval_every} steps and at the last, on {count} held-out clips (the same "
            f"clips and masks each time); the lowest is kept as checkpoints/best.pt"
        )

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int, last: int) -> bool:
        """Whether to measure after optimizer step ``step`` of ``last``."""
        return self.enabled and (step % self.every == 0 or step == last)

    def _read(self) -> list[Batch]:
        """This process's share of the held-out clips, batched and masked, in memory."""
        t = self.cfg.train
        count = min(len(self.clips), t.eval_batches * t.batch_size)
        # Whole batches per rank: masks are drawn per batch, so each batch is the one a
        # single process scores, whatever the number of processes.
        starts = range(0, count, t.batch_size)[self.info.rank :: self.info.world]
        mine = [i for b in starts for i in range(b, min(b + t.batch_size, count))]
        # Mask seed 0, as `salt eval distill`'s default: runs of any seed share one set.
        loader = build_eval_loader(self.clips, t.batch_size, mine, self.masker, 0, 0)
        return list(loader)

    def measure(self, model: nn.Module, teacher: nn.Module, objective: Objective) -> HeldOut:
        """Score the model (in eval mode; restored to train mode after) on the held-out clips."""
        start = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training RNG stays where it was
            if self.batches is None:
                self.batches = self._read()
            was_training = model.training
            model.eval()
            try:
                sums = loss_sums(
                    model,
                    teacher,
                    self.batches,
                    objective,
                    self.device,
                    self.cfg.data.mean,
                    self.cfg.data.std,
                    lambda: torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16),
                )
            finally:
                model.train(was_training)
        sums = add_over_ranks(sums, self.info)
        return held_out_of(sums, time.perf_counter() - start)
