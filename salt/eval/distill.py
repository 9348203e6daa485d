"""Held-out distillation loss: how well a trained student + predictor predict the teacher."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import torch

from salt.assemble import assemble
from salt.cache import MissingSplitError
from salt.checkpoints import load_checkpoint, resolve_checkpoint
from salt.config import Config, apply_overrides, from_dict
from salt.data import build_eval_loader
from salt.distributed import resolve_device
from salt.losses import Objective
from salt.models import masker_of
from salt.validate import held_out_of, loss_sums

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

    def evaluation(self) -> dict:
        """The held-out loss as an export records it (``--record``)."""
        from datetime import date

        from salt import __version__

        return {
            "task": "masked-latent-prediction",
            "dataset": self.data,
            "metric": "loss",
            "name": f"held-out distillation loss (teacher {self.teacher})",
            "value": round(self.loss, 6),
            "step": self.step,
            "clips": self.clips,
            "date": date.today().isoformat(),
            "salt_version": __version__,
        }

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
    spec passed as ``data.spec``, else the run's ``data.val_spec`` (without either, an error:
    never the training videos). Masks depend only on ``seed`` and the clip index, so two
    checkpoints are compared on exactly the same masked clips.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg, changed = held_out_config(from_dict(state["config"]), overrides or {})
    for key, (old, new) in changed.items():
        log.info("%s: using %r from the command line (the checkpoint has %r)", key, new, old)
    torch.manual_seed(seed)
    run = assemble(cfg, state=state)
    device = resolve_device(device)
    teacher, model = run.teacher.to(device), run.model.to(device)
    given = "data.spec" in (overrides or {})  # held-out data named on the command line
    data = cfg.data.spec
    if not given and not run.data.cached and cfg.data.val_spec:
        data = cfg.data.val_spec
    try:
        clips = run.data.clips("val", seed) if given else run.data.held_out()
    except MissingSplitError as err:  # a cache without a held-out split
        raise ValueError(
            f"{err.args[0]}; or score the run against a live teacher with --teacher SPEC"
        ) from None
    except ValueError as err:  # videos without held-out ones
        raise ValueError(f"{err}, or name them with --data SPEC") from None
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
    sums = loss_sums(model, teacher, loader, objective, device, cfg.data.mean, cfg.data.std)
    if not sums["clips"]:
        raise ValueError(f"no readable clips in {cfg.data.spec!r} to evaluate on")
    held_out = held_out_of(sums)
    return DistillReport(
        checkpoint=str(path),
        step=int(state["step"]),
        teacher=cfg.teacher.spec,
        data=f"{cfg.teacher.spec} (val split)" if run.data.cached else data,
        clips=held_out.clips,
        batches=held_out.batches,
        seed=seed,
        loss=held_out.loss,
        terms=held_out.terms,
        target_power=held_out.target_power,
        overridden=changed,
    )
