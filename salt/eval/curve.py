"""Does the distillation loss track the probe? Both, for every checkpoint of a run.

SALT picks checkpoints without labels because its student's held-out distillation loss
predicts downstream accuracy. ``salt eval curve RUN`` measures that on a run: for each
checkpoint, the held-out distillation loss (:mod:`salt.eval.distill`) and the frozen probe's
top-1 (:mod:`salt.eval.classify`), their Spearman rank correlation, and a PNG of both.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import attrs

from salt.checkpoints import (
    best_path,
    list_checkpoints,
    read_best,
    resolve_checkpoint,
    run_dir_of,
)
from salt.eval.classify import (
    ClassifySettings,
    LabelledSplits,
    classify,
    encoder_splits,
    share_clips,
)
from salt.eval.distill import distill_loss
from salt.eval.report import format_rows
from salt.eval.stats import spearman
from salt.export import load_encoder

log = logging.getLogger(__name__)


@attrs.frozen
class CurvePoint:
    """One checkpoint's held-out distillation loss and probe accuracy."""

    step: int
    checkpoint: str
    distill_loss: float
    accuracy: float
    stderr: float  # over probe seeds
    clip_stderr: float = 0.0  # from the draw of test clips
    best: bool = False  # the run's own pick: checkpoints/best.pt (lowest held-out loss)

    @property
    def error(self) -> float:
        """Both standard errors together: how far another probe and test draw may move it."""
        return math.hypot(self.stderr, self.clip_stderr)


@attrs.frozen
class CurveReport:
    """The curve of a run and how well the loss ranks the checkpoints."""

    run: str
    probe: str
    data: str
    points: tuple[CurvePoint, ...]

    @property
    def spearman(self) -> float:
        """Rank correlation of *lower* loss with higher accuracy (1: the loss orders the
        checkpoints exactly as the probe does)."""
        losses = [-p.distill_loss for p in self.points]
        return spearman(losses, [p.accuracy for p in self.points])

    def pick(self) -> dict | None:
        """How the label-free pick (``best``) compares with the checkpoint the probe ranks
        first: their top-1, the gap and whether it is within one standard error of the
        probe's best; None when the run kept no ``best``."""
        picked = next((p for p in self.points if p.best), None)
        if picked is None:
            return None
        top = max(self.points, key=lambda p: p.accuracy)
        gap = top.accuracy - picked.accuracy
        return {
            "best_step": picked.step,
            "best_top1": picked.accuracy,
            "top_step": top.step,
            "top_top1": top.accuracy,
            "top_error": top.error,
            "gap": gap,
            "within_one_se": gap <= top.error,
        }

    def to_dict(self) -> dict:
        rho = self.spearman
        return {
            **attrs.asdict(self),
            "spearman": None if math.isnan(rho) else rho,
            "pick": self.pick(),
        }

    def table(self) -> str:
        rows = [("step", "distill loss", "top-1 (+- seeds, clips)")]
        for p in self.points:
            top1 = f"{p.accuracy:.3f} +- {p.stderr:.3f}, {p.clip_stderr:.3f}"
            rows.append((f"{p.step}{' (best)' if p.best else ''}", f"{p.distill_loss:.5f}", top1))
        lines = [f"run {self.run}: {self.probe} probe on {self.data}", format_rows(rows)]
        rho = self.spearman
        value = (
            "undefined (the loss or the accuracy is the same at every checkpoint)"
            if math.isnan(rho)
            else f"{rho:+.3f}"
        )
        lines.append(f"Spearman(-loss, top-1) = {value} over {len(self.points)} checkpoints")
        pick = self.pick()
        if pick is not None:
            verdict = "within" if pick["within_one_se"] else "NOT within"
            lines.append(
                f"best (lowest held-out loss while training): step {pick['best_step']}, top-1 "
                f"{pick['best_top1']:.3f}; the probe's best: step {pick['top_step']}, "
                f"{pick['top_top1']:.3f} +- {pick['top_error']:.3f} - {verdict} one s.e."
            )
        return "\n".join(lines)


def checkpoint_curve(
    run: str | Path,
    data: str = "motion:448",
    probe: str = "attentive",
    settings: ClassifySettings | None = None,
    distill_overrides: dict | None = None,
    distill_batches: int = 8,
    seed: int = 0,
    device: str = "auto",
    progress=None,
) -> CurveReport:
    """Distillation loss and ``probe`` top-1 for every checkpoint of ``run``."""
    run_dir = run_dir_of(resolve_checkpoint(run))
    checkpoints = [(step, path, False) for step, path in list_checkpoints(run_dir)]
    best = read_best(run_dir)
    if best is not None:  # the run's own pick, scored beside the others
        same = [i for i, (step, _, _) in enumerate(checkpoints) if step == best[0]]
        if same:
            checkpoints[same[0]] = (*checkpoints[same[0]][:2], True)
        else:
            checkpoints = sorted([*checkpoints, (best[0], best_path(run_dir), True)])
    if len(checkpoints) < 2:
        raise ValueError(
            f"run {str(run_dir)!r} keeps {len(checkpoints)} checkpoint(s); a curve needs several - "
            f"train with --set train.keep_checkpoints=0 and a train.checkpoint_every that "
            f"gives five or more"
        )
    settings = attrs.evolve(settings or ClassifySettings(), probes=(probe,))
    splits: LabelledSplits | None = None
    points = []
    for step, path, is_best in checkpoints:
        loss = distill_loss(
            path, distill_overrides, batches=distill_batches, seed=seed, device=device
        )
        encoder, config = load_encoder(path)
        if splits is None:  # every checkpoint is scored on the same clips, drawn once
            splits = encoder_splits(config, data, settings=settings)
            settings = share_clips(splits, settings)
        report = classify(
            encoder,
            splits,
            config["mean"],
            config["std"],
            settings,
            f"step {step}",
            device,
            progress,
        )
        score = report.score(probe)
        log.info("step %d: distill %.5f, %s %.3f", step, loss.loss, probe, score.mean)
        points.append(
            CurvePoint(
                step, str(path), loss.loss, score.mean, score.stderr, score.clip_stderr, is_best
            )
        )
    return CurveReport(str(run_dir), probe, data, tuple(points))


def draw_curve(report: CurveReport, path: Path) -> Path:
    """Two panels over the steps: held-out distillation loss and probe top-1."""
    from salt.plots import Line, Panel, colour_of, draw_panels, save_png

    loss = [(p.step, p.distill_loss) for p in report.points]
    top1 = [(p.step, p.accuracy) for p in report.points]
    picked = [
        Line("best.pt (label-free pick)", colour_of(2), [(p.step, p.accuracy)])
        for p in report.points
        if p.best
    ]
    panels = [
        Panel(
            "held-out distillation loss",
            (Line("distill", colour_of(0), loss),),
            markers=True,
            mark_minimum=True,
        ),
        Panel(
            f"{report.probe} probe top-1 (Spearman with -loss {report.spearman:+.2f})",
            (Line("top-1", colour_of(1), top1), *picked),
            markers=True,
        ),
    ]
    return save_png(draw_panels(panels, columns=2), path)
