"""Checkpoints: what a run saves to continue exactly, where it lives, and reading it back.

A checkpoint is ``<run>/checkpoints/step_<NNNNNNNN>.pt``: the student, predictor and
optimizer state, the step, the resolved config, the failure counter and the RNG state at
that step. ``<run>/checkpoints/best.pt`` holds the weights with the lowest held-out loss
(``train.eval_every``), for export and eval: no optimizer, so a run never resumes from it.
Each holds tensors and plain containers only, so it is read with ``weights_only=True``
(nothing is unpickled). ``RUN:best``, ``RUN:latest`` and ``RUN:STEP`` name one of a run's.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from salt import __version__
from salt.io import UnreadableFileError, atomic_write_bytes, read_json, torch_load
from salt.models import load_strict

CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")
BEST = "best.pt"
SELECTORS = ("best", "latest")  # and a step number: RUN:best, RUN:latest, RUN:1000

log = logging.getLogger(__name__)


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


def best_path(run_dir: Path) -> Path:
    """Where a run keeps the weights with its lowest held-out loss."""
    return run_dir / "checkpoints" / BEST


def save_best(run_dir: Path, state: dict, val_loss: float) -> Path:
    """Atomically keep ``state``'s weights (not its optimizer) as the run's best."""
    kept = {k: v for k, v in state.items() if k not in ("optimizer", "rng", "cuda_rng")}
    kept["val_loss"] = float(val_loss)
    path = best_path(run_dir)
    atomic_write_bytes(path, lambda f: torch.save(kept, f))
    return path


def read_best(run_dir: Path) -> tuple[int, float] | None:
    """``(step, held-out loss)`` of a run's best checkpoint, or None: it has none (or one
    that no longer reads back, which is then as good as none)."""
    path = best_path(run_dir)
    if not path.is_file():
        return None
    try:
        state = torch_load(path)
        return int(state["step"]), float(state["val_loss"])
    except (UnreadableFileError, KeyError, TypeError, ValueError) as err:
        log.warning("ignored the run's best checkpoint: %s", err)
        return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a run directory's newest checkpoint, or one of a run's named by
    ``RUN:best`` (lowest held-out loss), ``RUN:latest`` or ``RUN:STEP``."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        return pick_checkpoint(path, "latest")
    if names_checkpoint(path):
        run, _, which = str(path).rpartition(":")
        return pick_checkpoint(Path(run), which)
    raise FileNotFoundError(f"no checkpoint or run directory at {str(path)!r}")


def names_checkpoint(text: str | Path) -> bool:
    """Whether ``text`` is ``RUN:best``, ``RUN:latest`` or ``RUN:STEP`` with RUN a folder."""
    run, sep, which = str(text).rpartition(":")
    return bool(sep and run) and (which in SELECTORS or which.isdigit()) and Path(run).is_dir()


def pick_checkpoint(run_dir: Path, which: str) -> Path:
    """The checkpoint of ``run_dir`` that ``which`` names: best, latest or a step number."""
    if which == "best":
        path = best_path(run_dir)
        if not path.is_file():
            raise FileNotFoundError(
                f"run {str(run_dir)!r} has no best checkpoint (checkpoints/{BEST}): it is kept "
                f"by runs with train.eval_every > 0 and held-out clips; use {run_dir}:latest "
                f"or a step"
            )
        return path
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{str(run_dir)!r} {_what_instead(run_dir)}")
    if which == "latest":
        return found[-1][1]
    steps = dict(found)
    if which.isdigit() and int(which) in steps:
        return steps[int(which)]
    raise FileNotFoundError(
        f"run {str(run_dir)!r} has no checkpoint {which!r}; it has best, latest and the "
        f"steps {', '.join(str(s) for s, _ in found[-6:])}"
    )


def _what_instead(folder: Path) -> str:
    """Why a folder given as a run holds no checkpoint: what it is instead."""
    if (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file()
        or _format(folder / "config.json") == "salt-encoder"
    ):
        return (
            "is an exported encoder, not a run: this command needs a run directory (or one of "
            "its checkpoints/step_*.pt); an export is for VideoEncoder, salt eval probes and "
            "salt eval classify"
            + (
                ""
                if (folder / "model.safetensors").is_file()
                else " - and its model.safetensors is missing"
            )
        )
    if (folder / "cache.json").is_file() or (folder / "index.json").is_file():
        return "is a latent cache, not a run: give a run directory (or a checkpoint file)"
    return (
        "has no checkpoints (checkpoints/step_*.pt): not a run directory, or a run stopped "
        "before its first checkpoint"
    )


def _format(path: Path) -> str | None:
    """The ``format`` field of a JSON file, if it has one (a link is not followed: this only
    names what a folder is, and the folder's own files say it)."""
    if path.is_symlink():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint without unpickling arbitrary objects."""
    state = torch_load(resolve_checkpoint(path), map_location=map_location)
    if not isinstance(state, dict) or "student" not in state or "config" not in state:
        raise UnreadableFileError(
            f"{resolve_checkpoint(path)} is not a salt training checkpoint (no student weights "
            f"and config); give a run directory or one of its checkpoints/step_*.pt"
        )
    return state


def resume_state(path: str | Path) -> tuple[Path, dict]:
    """The checkpoint a resume continues from, and its state: the given file, or a run
    directory's newest checkpoint that reads back whole - a newer one that does not (a
    truncated copy, a damaged disk) is skipped with a warning that names it."""
    path = Path(path)
    if not path.is_dir():
        ckpt = resolve_checkpoint(path)
        state = load_checkpoint(ckpt)
        if "optimizer" not in state:
            raise ValueError(
                f"{ckpt} holds weights only (the run's best, for export and eval): resume from "
                f"the run folder or one of its checkpoints/step_*.pt"
            )
        return ckpt, state
    found = list_checkpoints(path)
    if not found:
        resolve_checkpoint(path)  # raises, saying what the folder is instead
    for step, ckpt in reversed(found):
        try:
            state = load_checkpoint(ckpt)
        except UnreadableFileError as err:
            log.warning("skipped a checkpoint: %s", err)
            continue
        if ckpt != found[-1][1]:
            log.warning("resuming %s from step %d, its newest intact checkpoint", path, step)
        return ckpt, state
    raise UnreadableFileError(
        f"none of the {len(found)} checkpoints of {path} reads back whole (newest: "
        f"{found[-1][1]}); start the run again under another --run-name"
    )


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding a checkpoint file."""
    return checkpoint.resolve().parent.parent


def training_state(model, optimizer, step: int, config: dict, nonfinite_total: int, device) -> dict:
    """Everything a resumed run needs to take exactly the steps this one would have."""
    state = {
        "student": model.student.state_dict(),
        "predictor": model.predictor.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": config,
        "nonfinite_total": nonfinite_total,
        "rng": torch.get_rng_state(),
        "salt_version": __version__,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_weights(state: dict, model, optimizer) -> int:
    """Load a checkpoint's weights and optimizer state; returns its step."""
    load_strict(model.student, state["student"], "the checkpoint's student")
    load_strict(model.predictor, state["predictor"], "the checkpoint's predictor")
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def restore_rng(state: dict, device) -> None:
    """The RNG state at the checkpoint's step. Call it after the loader's iterator has
    started: starting one draws from the global RNG."""
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
