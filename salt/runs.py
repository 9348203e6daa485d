"""Run directories: resolved config, log file, metrics.jsonl, checkpoints and the summary."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


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


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per logged step."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resume from an earlier checkpoint rewrites history)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda f: f.write(text.encode()))


def summarize(records: list[dict], smoothing: float = 0.9, rebound_threshold: float = 0.05) -> dict:
    """Min loss and its step, last loss, the smoothed loss and whether it rebounded late.

    The rebound is how far the final smoothed loss sits above the smoothed minimum, as a
    fraction of that minimum; above ``rebound_threshold`` the run is flagged.
    """
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    if not losses:
        return {"steps_logged": 0}
    min_step, min_loss = min(losses, key=lambda sl: sl[1])
    smooth = None
    smooth_min, smooth_min_step = math.inf, 0
    for step, loss in losses:
        smooth = loss if smooth is None else smoothing * smooth + (1 - smoothing) * loss
        if smooth < smooth_min:
            smooth_min, smooth_min_step = smooth, step
    rebound = (smooth - smooth_min) / abs(smooth_min) if smooth_min else 0.0
    return {
        "steps_logged": len(losses),
        "first_loss": losses[0][1],
        "min_loss": min_loss,
        "min_loss_step": min_step,
        "last_loss": losses[-1][1],
        "last_step": losses[-1][0],
        "smoothed_loss": smooth,
        "smoothed_min_loss": smooth_min,
        "smoothed_min_step": smooth_min_step,
        "rebound": rebound,
        "late_rebound": rebound > rebound_threshold,
        "nonfinite_steps": int(records[-1].get("nonfinite_total", 0)),
    }


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint after ``step`` optimizer steps lives."""
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int = 0) -> Path:
    """Atomically save ``state``; keep only the newest ``keep`` checkpoints (0 keeps all)."""
    path = checkpoint_path(run_dir, step)
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's newest checkpoint."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(
                f"run directory {str(path)!r} has no checkpoints (checkpoints/step_*.pt); "
                f"was it stopped before its first checkpoint?"
            )
        return found[-1][1]
    raise FileNotFoundError(f"no checkpoint or run directory at {str(path)!r}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint without unpickling arbitrary objects."""
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=True)


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding a checkpoint file."""
    return checkpoint.resolve().parent.parent
