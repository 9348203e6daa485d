"""Built-in plugin: where a run's metrics go - metrics.jsonl (always), TensorBoard, W&B.

A logger factory takes ``(arg, run_dir, config)`` and returns an object with
``log(step, metrics)`` (called on rank 0 at every metrics line with the numbers the loop
computed: loss and its terms, lr, wd, grad norm, clips/s, tokens/s, TFLOP/s, MFU, ...) and
``close()``, and may have ``resumed(step)`` (see ``salt.contracts.Logger``). TensorBoard and
W&B are optional installs, imported only when chosen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from salt.hookspecs import hookimpl
from salt.metrics import MetricsLog

# The run's own log file listens to "salt".
log = logging.getLogger("salt.train")


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


# The W&B project when neither run.wandb_project (or wandb:PROJECT) nor WANDB_PROJECT names one.
DEFAULT_WANDB_PROJECT = "salt-vla"


def wandb_init_args(run: dict, project: str | None = None) -> dict[str, Any]:
    """``wandb.init``'s project, entity, group, tags and mode: each from its ``run.wandb_*``
    field (``run``: the config's run section), else W&B's environment variable
    (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``,
    ``WANDB_MODE``), else W&B's default (None; the project: salt-vla). ``project``: what
    ``wandb:PROJECT`` in ``run.loggers`` names, another way to set ``run.wandb_project``."""
    field = run.get("wandb_project", "")
    if project and field and project != field:
        raise ValueError(
            f"run.loggers names the W&B project {project!r} (wandb:{project}) and "
            f"run.wandb_project names {field!r}: keep one of them"
        )
    env = os.environ
    tags = run.get("wandb_tags") or [t.strip() for t in env.get("WANDB_TAGS", "").split(",")]
    return {
        "project": project or field or env.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT,
        "entity": run.get("wandb_entity") or env.get("WANDB_ENTITY") or None,
        "group": run.get("wandb_group") or env.get("WANDB_RUN_GROUP") or None,
        "tags": [t for t in tags if t] or None,
        "mode": run.get("wandb_mode") or env.get("WANDB_MODE") or None,
    }


class WandbLogger:
    """A Weights & Biases run named after the run directory, its files in ``RUN/wandb``.

    Its id, kept in ``RUN/wandb_id.txt``, makes a resumed run (:meth:`resumed`) continue the
    same W&B run; a run started afresh in a folder an earlier start left (one that saved no
    checkpoint) gets a new one, as its ``metrics.jsonl`` starts anew."""

    def __init__(self, run_dir: Path, config: dict, project: str | None = None):
        try:
            import wandb
        except ImportError as err:
            raise RuntimeError(
                f"the wandb logger needs the wandb package ({err}); pip install wandb, or drop "
                f"it from run.loggers"
            ) from None
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.config = config
        self.init_args = wandb_init_args(config.get("run", {}), project)
        self.id_file = self.run_dir / "wandb_id.txt"
        self.run = None
        self.next_step = 0  # the first step the W&B run does not hold yet
        if not self.id_file.is_file():  # a new run folder: a new W&B run, begun at once
            self._begin(secrets.token_hex(4))
        # Else resumed() continues that run, or a first log() without it begins a new one.

    def _begin(self, run_id: str) -> None:
        earlier = self.id_file.read_text().strip() if self.id_file.is_file() else run_id
        self.id_file.write_text(run_id)
        self.run = self.wandb.init(
            **self.init_args,
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(self.run_dir),
            config=self.config,
        )
        # Online, a resumed run holds the steps logged before the stop; W&B refuses them again.
        self.next_step = self.run.starting_step
        if self.run.offline and not self.run.disabled:
            self._drop_earlier_offline_folders({run_id, earlier})

    def _drop_earlier_offline_folders(self, run_ids: set[str]) -> None:
        """W&B writes each start of an offline run to a folder of its own; this start's holds
        the whole run (:meth:`resumed` replays what came before), so the earlier ones go."""
        current = Path(self.run.settings.sync_dir)
        names = "|".join(re.escape(i) for i in sorted(run_ids))
        segment = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-({names})(-\d+)?")
        for folder in current.parent.iterdir():
            if folder != current and folder.is_dir() and segment.fullmatch(folder.name):
                shutil.rmtree(folder)
                log.info("removed %s: this start's W&B folder holds the whole run", folder)

    def resumed(self, step: int) -> None:
        """Continue the W&B run from the checkpoint at ``step``.

        W&B keeps no history to rewind offline (``resume_from`` is a server feature), so the
        run's steps up to ``step`` that this W&B run does not hold are logged again from
        ``metrics.jsonl``: offline, all of them (into this start's folder, the only one left);
        online, any the server lost. Steps the W&B run already holds (online: up to where the
        run stopped) are skipped, as W&B would refuse them: they keep their first values."""
        if self.run is None:
            self._begin(self.id_file.read_text().strip())
        for record in MetricsLog(self.run_dir / "metrics.jsonl").read():
            if self.next_step <= record.get("step", -1) <= step:
                self._send(record["step"], record)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row of the W&B run at ``step`` (skipped when the run already holds it)."""
        if self.run is None:  # a fresh start where an earlier one left its W&B run
            self._begin(secrets.token_hex(4))
        if step >= self.next_step:
            self._send(step, metrics)

    def _send(self, step: int, metrics: dict[str, Any]) -> None:
        row: dict[str, Any] = _scalars(metrics)
        if isinstance(metrics.get("time"), int | float):
            row["_timestamp"] = metrics["time"]  # when the step was taken, also when replayed
        self.run.log(row, step=step)

    def close(self) -> None:
        """Finish the W&B run (offline: its folder is complete, ready for ``wandb sync``)."""
        if self.run is not None:
            self.run.finish()


def _jsonl(arg, run_dir, config):
    return JsonlLogger(run_dir)


def _tensorboard(arg, run_dir, config):
    return TensorBoardLogger(run_dir, config)


def _wandb(arg, run_dir, config):
    return WandbLogger(run_dir, config, project=arg or None)


@hookimpl
def register_loggers(register):
    register("jsonl", _jsonl, "metrics.jsonl in the run directory (always on)")
    register("tensorboard", _tensorboard, "TensorBoard event files in RUN/tensorboard")
    register("wandb", _wandb, "Weights & Biases in RUN/wandb (run.wandb_* fields, WANDB_* vars)")
