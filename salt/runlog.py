"""What a run writes as it goes: its log file, the metrics window and its loggers
(``metrics.jsonl`` always, plus ``run.loggers``: TensorBoard, W&B, plugins), the progress
bar, and ``summary.json`` at the end. Only the main process writes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from salt import __version__
from salt.config import Config
from salt.io import remove_stale_temps, write_json
from salt.metrics import MetricsLog, summarize

if TYPE_CHECKING:
    import torch

log = logging.getLogger("salt.train")
# Per-step lines go to the run's log file; the CLI hides them on the console behind the bar.
step_log = logging.getLogger("salt.metrics")


def log_file_name(run_name: str) -> str:
    """``<run>_<YYYYmmdd_HHMMSS>_pid<PID>.log``."""
    return f"{run_name}_{time.strftime('%Y%m%d_%H%M%S')}_pid{os.getpid()}.log"


def attach_log_file(run_dir: Path, run_name: str) -> logging.Handler:
    """Send the library's log records to a new log file in the run directory."""
    handler = logging.FileHandler(run_dir / log_file_name(run_name))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("salt")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


@attrs.define
class MetricsWindow:
    """Sums over the steps since the last metrics line."""

    loss: float | torch.Tensor = 0.0
    terms: dict = attrs.Factory(dict)
    steps: int = 0  # finite steps: the ones whose loss counts
    clips: int = 0
    flops: float = 0.0
    t0: float = attrs.Factory(time.perf_counter)

    def add(self, result) -> None:
        """One optimizer step's ``salt.step.StepResult`` (its loss only when finite)."""
        self.clips += result.clips
        self.flops += result.flops
        if result.finite:  # summed on the device: read once per metrics line
            self.loss = self.loss + result.loss.detach()
            for name, value in result.terms.items():
                self.terms[name] = self.terms.get(name, 0.0) + value.detach()
            self.steps += 1

    def record(self, step: int, optimizer: dict, tokens: int, world: int, peak: float) -> dict:
        """The metrics line for the window ending at ``step``: mean loss and terms, the
        optimizer's values (lr, wd, grad_norm), throughput and MFU against ``peak`` TFLOP/s."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        n = self.steps
        clips_per_s = self.clips * world / elapsed
        record = {"step": step, "loss": float(self.loss) / n}
        record.update({f"loss/{k}": float(v) / n for k, v in self.terms.items()})
        record.update(optimizer)
        record["clips_per_s"] = clips_per_s
        record["tokens_per_s"] = clips_per_s * tokens
        record["window_s"] = elapsed  # what `salt runs` adds up into training time
        record["tflops"] = self.flops / elapsed / 1e12
        record["mfu"] = self.flops / elapsed / (peak * 1e12)
        return record


class RunLog:
    """A run directory's log file, ``config.json``, ``metrics.jsonl``, progress bar and
    ``summary.json``; a no-op on every process but the main one."""

    def __init__(
        self, run_dir: Path, cfg: Config, main: bool = True, world: int = 1, fresh: bool = True
    ):
        """``fresh``: a run starting at step 0, whose folder may hold what an earlier start
        that stopped before its first checkpoint wrote (that is removed)."""
        self.run_dir = run_dir
        self.cfg = cfg
        self.main = main
        self.world = world
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.window = MetricsWindow()
        self.peak_tflops = 1.0
        self.steps = 0
        self.bar = None
        self.last_val: float | None = None
        self.resumed_at: int | None = None  # the checkpoint's step, when continuing one
        self._handler = None
        self.loggers: list = []
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            for folder in (run_dir, run_dir / "checkpoints"):
                for tmp in remove_stale_temps(folder):
                    log.info("removed %s, left by an interrupted write", tmp)
            if fresh:
                for stale in (self.metrics.path, run_dir / "summary.json"):
                    if stale.exists():
                        stale.unlink()
                        log.info("removed %s of an earlier start that saved no checkpoint", stale)
            self._handler = attach_log_file(run_dir, run_dir.name)

    def resumed(self, step: int) -> None:
        """Drop metrics past ``step``: the resumed run logs those steps again."""
        if self.main:
            self.metrics.truncate_after(step)
        self.resumed_at = step
        log.info("resumed %s at step %d", self.run_dir, step)

    def start(self, plan_lines: list[str], peak_tflops: float, steps: int, start_step: int):
        """Log the plan and open the progress bar."""
        self.peak_tflops = peak_tflops
        self.steps = steps
        if not self.main:
            return
        # Written once everything was built: a run that fails to start (or a resume with
        # settings that do not fit its checkpoint) leaves the run's config as it was.
        write_json(self.run_dir / "config.json", self.cfg.to_dict())
        from salt.registry import loggers

        for spec in dict.fromkeys(("jsonl", *self.cfg.run.loggers)):
            logger = loggers.create(spec, run_dir=self.run_dir, config=self.cfg.to_dict())
            if self.resumed_at is not None and hasattr(logger, "resumed"):
                logger.resumed(self.resumed_at)  # it drops what it kept past that step
            self.loggers.append(logger)
        for line in plan_lines:
            log.info("%s", line)
        log.info(
            "MFU is measured against a peak of %.1f TFLOP/s (set train.peak_tflops to change)",
            peak_tflops,
        )
        if self.cfg.train.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        self.window = MetricsWindow()

    def step(self, step: int, result, lr: float, wd: float, nonfinite: int, bad_videos: int):
        """Account for one optimizer step; every ``train.log_every`` steps (and at the last)
        write a metrics line."""
        if not self.main:
            return
        self.window.add(result)
        due = step % self.cfg.train.log_every == 0 or step == self.steps
        if due and self.window.steps:
            tokens = self.cfg.geometry.num_tokens
            optimizer = {"lr": lr, "wd": wd, "grad_norm": float(result.grad_norm)}
            record = self.window.record(step, optimizer, tokens, self.world, self.peak_tflops)
            record.update(
                {"nonfinite_total": nonfinite, "bad_videos": bad_videos, "time": time.time()}
            )
            for logger in self.loggers:
                logger.log(step, record)
            step_log.info(
                "step %d/%d loss %.5f lr %.2e clips/s %.1f mfu %.1f%%",
                step,
                self.steps,
                record["loss"],
                lr,
                record["clips_per_s"],
                100 * record["mfu"],
            )
            if self.bar is not None:
                shown = {"loss": f"{record['loss']:.4f}"}
                if self.last_val is not None:
                    shown["val"] = f"{self.last_val:.4f}"
                shown.update(lr=f"{lr:.1e}", clips_s=f"{record['clips_per_s']:.1f}")
                self.bar.set_postfix(shown)
            self.window = MetricsWindow()
        if self.bar is not None:
            self.bar.update(1)

    def validated(self, step: int, held_out) -> None:
        """Log a held-out measurement (``salt.validate.HeldOut``) after ``step``."""
        if not self.main:
            return
        record = {"step": step, **held_out.record(), "time": time.time()}
        for logger in self.loggers:
            logger.log(step, record)
        step_log.info(
            "step %d/%d held-out loss %.5f on %d clips (%.1f s)",
            step,
            self.steps,
            held_out.loss,
            held_out.clips,
            held_out.seconds,
        )
        self.last_val = held_out.loss  # shown on the bar from the next metrics line

    def finish(
        self,
        step: int,
        stopped_by: str | None,
        best: tuple[int, float] | None = None,
        dataset_clips: int = 0,
    ) -> dict:
        """Close the bar and write ``summary.json``: min loss, its step, last loss, rebound,
        the best checkpoint's step and held-out loss (``best``) when the run keeps one, and
        the passes over its ``dataset_clips`` clips done."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.main:
            return {}
        t = self.cfg.train
        summary = summarize(self.metrics.read(), t.smoothing, t.rebound_threshold)
        summary.update(
            {
                "run": self.run_dir.name,
                "step": step,
                "total_steps": self.steps,
                "stopped_by": stopped_by,
                "grad_clip": self.cfg.optim.grad_clip,
                "salt_version": __version__,
            }
        )
        if best is not None:
            summary.update({"best_step": best[0], "best_val_loss": best[1]})
        if dataset_clips:
            t = self.cfg.train
            summary["epochs"] = step * t.batch_size * t.accum_steps * self.world / dataset_clips
        write_json(self.run_dir / "summary.json", summary)
        return summary

    def close(self) -> None:
        """Close the loggers and detach the log file (the run is over, or failed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:  # a logger must not hide the run's own outcome
                log.warning("closing a logger failed: %s", err)
        self.loggers = []
        if self._handler is not None:
            logging.getLogger("salt").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
