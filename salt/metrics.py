"""A run's ``metrics.jsonl``: writing it, reading it back as curves and summarizing the loss.

One JSON object per logged step (``step``, ``loss``, ``loss/<term>``, ``lr``, ``grad_norm``,
``clips_per_s``, ``mfu``, ...). Readers tolerate a torn last line, which is what a run killed
mid-write leaves; anything else unparsable is an error naming the file and line. No torch
import: the viewer and the plots read metrics without it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Points = list[tuple[int, float]]  # (step, value), in logged order

# What the loss plots show: the total loss, each loss term, the held-out loss and the
# learning rate.
CURVE_KEYS = ("loss", "loss/*", "val_loss", "lr")


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per logged step."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        """Add one step's record as a line."""
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        """Every record so far (none if the file does not exist yet); see :func:`read_records`."""
        if not self.path.exists():
            return []
        return read_records(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resume from an earlier checkpoint rewrites history)."""
        from salt.io import atomic_write_bytes

        kept = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda f: f.write(text.encode()))


def read_records(path: str | Path) -> list[dict]:
    """Every record of a ``metrics.jsonl``, skipping blank lines and a torn last line."""
    path = Path(path)
    lines = enumerate(path.read_text().split("\n"), 1)
    numbered = [(n, line) for n, line in lines if line.strip()]
    records = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as err:
            if i == len(numbered) - 1:
                # A run killed mid-write leaves half a line; the steps before it are good.
                log.warning(
                    "%s: skipping its unparsable last line %d (a run stopped mid-write?): %r",
                    path,
                    n,
                    line[:80],
                )
                break
            raise ValueError(
                f"{path} line {n} is not a JSON object ({err}): {line[:80]!r}; metrics.jsonl "
                f"holds one JSON object per line, so fix or delete that line"
            ) from None
        records.append(record)
    return records


def read_series(
    source: str | Path | Iterable[Mapping[str, Any]], keys: Iterable[str] | None = None
) -> dict[str, Points]:
    """``{key: [(step, value)]}`` of the finite numeric values logged under ``keys``.

    ``source`` is a ``metrics.jsonl`` path or already-read records. ``keys`` are names or
    shell-style patterns (``"loss/*"`` is every loss term); None means every numeric key.
    Series appear in the order their keys were first logged; ``step`` is never a series.
    """
    records = read_records(source) if isinstance(source, (str, Path)) else source
    patterns = None if keys is None else tuple(keys)
    series: dict[str, Points] = {}
    for record in records:
        step = record.get("step")
        if not _finite(step):
            continue
        for key, value in record.items():
            if key == "step" or not _finite(value):
                continue
            if patterns is None or any(fnmatchcase(key, p) for p in patterns):
                series.setdefault(key, []).append((int(step), float(value)))
    return series


def summarize(records: list[dict], smoothing: float = 0.9, rebound_threshold: float = 0.05) -> dict:
    """Min loss and its step, last loss, the smoothed loss and whether it rebounded late;
    the held-out loss's minimum, its step and last value when the run measured one.

    The rebound is how far the run ends above its best, as a fraction of that best: on the
    held-out curve (``val_loss``) when there is one, else on the smoothed training loss;
    above ``rebound_threshold`` the run is flagged.
    """
    losses = _points(records, "loss")
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
    held_out = {}
    val = _points(records, "val_loss")
    if val:
        min_val_step, min_val = min(val, key=lambda sl: sl[1])
        rebound = (val[-1][1] - min_val) / abs(min_val) if min_val else 0.0
        held_out = {
            "val_points": len(val),
            "min_val_loss": min_val,
            "min_val_step": min_val_step,
            "last_val_loss": val[-1][1],
        }
    counted = [r["nonfinite_total"] for r in records if "nonfinite_total" in r]
    timed = [
        (r["window_s"], r.get("clips_per_s", 0.0)) for r in records if _finite(r.get("window_s"))
    ]
    seconds = sum(t for t, _ in timed)
    speed = (
        {"train_seconds": seconds, "clips_per_s": sum(t * c for t, c in timed) / seconds}
        if seconds
        else {}
    )
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
        **held_out,
        "rebound": rebound,
        "rebound_on": "val_loss" if val else "smoothed_loss",
        "late_rebound": rebound > rebound_threshold,
        "nonfinite_steps": int(counted[-1]) if counted else 0,
        **speed,
    }


def _points(records: list[dict], key: str) -> Points:
    """``(step, value)`` of the records with a finite ``key``."""
    return [(r["step"], r[key]) for r in records if key in r and _finite(r[key])]


def _finite(value: Any) -> bool:
    """A real number (not a bool, string or None) that is neither inf nor nan."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
