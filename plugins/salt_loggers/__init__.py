"""Built-in plugin: where a run's metrics go - metrics.jsonl (always), TensorBoard, W&B.

A logger factory takes ``(arg, run_dir, config)`` and returns an object with
``log(step, metrics)`` (called on rank 0 at every metrics line with the numbers the loop
computed: loss and its terms, lr, wd, grad norm, clips/s, tokens/s, TFLOP/s, MFU, ...) and
``close()``. TensorBoard and W&B are optional installs, imported only when chosen.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from salt.hookspecs import hookimpl
from salt.metrics import MetricsLog


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line, without its step and wall-clock time."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k not in ("step", "time")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class JsonlLogger:
    """``metrics.jsonl`` in the run directory: one JSON object per metrics line (what
    resume, the summary, ``salt plot`` and the viewer read)."""

    def __init__(self, run_dir: Path):
        self.log_file = MetricsLog(Path(run_dir) / "metrics.jsonl")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.log_file.append({"step": step, **{k: v for k, v in metrics.items() if k != "step"}})

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Event files under ``RUN/tensorboard`` (``tensorboard --logdir runs``)."""

    def __init__(self, run_dir: Path, config: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise RuntimeError(
                f"the tensorboard logger needs the tensorboard package ({err}); "
                f"pip install tensorboard, or drop it from run.loggers"
            ) from None
        self.log_dir = str(Path(run_dir) / "tensorboard")
        self.writer = SummaryWriter(log_dir=self.log_dir)
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)

    def resumed(self, step: int) -> None:
        """Continue after the checkpoint at ``step``: TensorBoard drops the events past it
        (a purge marker in the new event file), so the steps logged between that
        checkpoint and the stop are not shown twice."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(log_dir=self.log_dir, purge_step=step + 1)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run named after the run directory (``WANDB_MODE=offline`` keeps
    it on disk under ``RUN/wandb``; ``wandb sync`` uploads it later). A resumed run continues
    the same W&B run."""

    def __init__(self, run_dir: Path, config: dict, project: str | None):
        try:
            import wandb
        except ImportError as err:
            raise RuntimeError(
                f"the wandb logger needs the wandb package ({err}); pip install wandb, or drop "
                f"it from run.loggers"
            ) from None
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id)
        self.run = wandb.init(
            # wandb:PROJECT, else W&B's own WANDB_PROJECT; entity, group, tags and mode come
            # from W&B's environment variables (WANDB_ENTITY, WANDB_RUN_GROUP, ...) as usual.
            project=project or os.environ.get("WANDB_PROJECT") or "salt-vla",
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log(_scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def _jsonl(arg, run_dir, config):
    return JsonlLogger(run_dir)


def _tensorboard(arg, run_dir, config):
    return TensorBoardLogger(run_dir, config)


def _wandb(arg, run_dir, config):
    return WandbLogger(run_dir, config, project=arg)


@hookimpl
def register_loggers(register):
    register("jsonl", _jsonl, "metrics.jsonl in the run directory (always on)")
    register("tensorboard", _tensorboard, "TensorBoard event files in RUN/tensorboard")
    register("wandb", _wandb, "Weights & Biases (wandb:PROJECT; WANDB_MODE=offline works)")
