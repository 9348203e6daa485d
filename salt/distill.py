"""Held-out distillation loss: how well a trained student + predictor predict the teacher."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import torch

from salt.cache import MissingSplitError
from salt.checkpoints import load_checkpoint, resolve_checkpoint
from salt.config import Config, apply_overrides, from_dict
from salt.data import build_eval_loader, build_source, normalize_clips
from salt.distributed import resolve_device
from salt.losses import Objective, masked_loss
from salt.masking import gather_tokens
from salt.models import load_trained_pair, masker_of
from salt.quant import dense

log = logging.getLogger(__name__)


@attrs.frozen
class DistillReport:
    """Mean held-out loss (and each term), the teacher's E[x^2] and their ratio."""

    checkpoint: str
    step: int
    teacher: str
    data: str
    clips: int
    batches: int
    seed: int
    loss: float
    terms: dict
    target_power: float  # E[x^2] of the teacher latents at the masked positions
    overridden: dict  # config values the user's flags replaced: {key: [checkpoint, used]}

    @property
    def ratio(self) -> float:
        """Loss relative to the targets' power: 1.0 is no better than predicting zeros (MSE)."""
        return self.loss / self.target_power if self.target_power else float("nan")

    def to_dict(self) -> dict:
        return {**attrs.asdict(self), "ratio": self.ratio}

    def table(self) -> str:
        rows = [
            ("checkpoint", f"{self.checkpoint} (step {self.step})"),
            ("teacher", self.teacher),
            (
                "data",
                f"{self.data}: {self.clips} clips in {self.batches} batches, seed {self.seed}",
            ),
            ("loss", f"{self.loss:.6f}"),
        ]
        rows += [(f"  {name}", f"{value:.6f}") for name, value in self.terms.items()]
        rows += [
            ("teacher E[x^2]", f"{self.target_power:.6f}"),
            ("loss / E[x^2]", f"{self.ratio:.4f}"),
        ]
        rows += [
            (f"flag {k}", f"{v[1]} (checkpoint had {v[0]})") for k, v in self.overridden.items()
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def held_out_config(saved: Config, overrides: dict) -> tuple[Config, dict]:
    """The checkpoint's config with the user's explicit values on top (flags always win)."""
    cfg = apply_overrides(saved, overrides) if overrides else saved
    before, after = saved.to_dict(), cfg.to_dict()
    changed = {}
    for key in overrides:
        section, _, name = key.partition(".")
        old = before.get(section, {}).get(name) if name else before.get(section)
        new = after.get(section, {}).get(name) if name else after.get(section)
        if old != new:
            changed[key] = [old, new]
    return cfg, changed


def distill_loss(
    checkpoint: str | Path,
    overrides: dict | None = None,
    batches: int = 8,
    seed: int = 0,
    device: str = "auto",
) -> DistillReport:
    """Evaluate a checkpoint's student + predictor on held-out clips with seeded masks.

    The data is the held-out (``val``) split: of the built-in data (``synthetic`` has one),
    of a cache (a run trained from ``cached:NAME`` reads the cache's ``val`` split, and a
    cache without one is an error - never its training clips), or, for videos, the held-out
    spec passed as ``data.spec``. Masks depend only on ``seed`` and the clip index, so two
    checkpoints are compared on exactly the same masked clips.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg, changed = held_out_config(from_dict(state["config"]), overrides or {})
    for key, (old, new) in changed.items():
        log.info("%s: using %r from the command line (the checkpoint has %r)", key, new, old)
    torch.manual_seed(seed)
    teacher, model = load_trained_pair(state, cfg)
    device = resolve_device(device)
    teacher, model = teacher.to(device), model.to(device)
    try:
        clips = build_source(cfg.data, "val", seed, cache=teacher.cache)
    except MissingSplitError as err:  # a cache without a held-out split
        raise ValueError(
            f"{err.args[0]}; or score the run against a live teacher with --teacher SPEC"
        ) from None
    count = min(len(clips), batches * cfg.train.batch_size)
    loader = build_eval_loader(
        clips,
        cfg.train.batch_size,
        range(count),
        masker_of(cfg),
        seed,
        min(cfg.data.num_workers, 2),
    )
    objective = Objective(cfg.loss.name, cfg.loss.options, cfg.loss.target_norm)
    total, power, clips, steps = 0.0, 0.0, 0, 0
    terms: dict[str, float] = {}
    with torch.inference_mode():
        for batch in loader:
            if not batch.size:
                continue
            batch = batch.to(device)
            video = normalize_clips(batch.video, cfg.data.mean, cfg.data.std)
            masks = batch.masks
            targets = dense(batch.targets) if batch.targets is not None else teacher(video).float()
            loss, parts = masked_loss(model(video, masks), targets, masks, objective)
            n = video.shape[0]
            total += float(loss) * n
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + float(value) * n
            normed = objective.normalize(targets)  # the loss's targets
            power += (
                n
                * sum(float(gather_tokens(normed, g.target).pow(2).mean()) for g in masks)
                / len(masks)
            )
            clips += n
            steps += 1
    if not clips:
        raise ValueError(f"no readable clips in {cfg.data.spec!r} to evaluate on")
    return DistillReport(
        checkpoint=str(path),
        step=int(state["step"]),
        teacher=cfg.teacher.spec,
        data=cfg.data.spec if teacher.cache is None else f"{cfg.teacher.spec} (val split)",
        clips=clips,
        batches=steps,
        seed=seed,
        loss=total / clips,
        terms={k: v / clips for k, v in terms.items()},
        target_power=power / clips,
        overridden=changed,
    )
