"""Export a run's student encoder (safetensors + config.json) and load it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from salt import __version__
from salt.checkpoints import load_checkpoint, resolve_checkpoint, run_dir_of
from salt.config import ClipGeometry, from_dict
from salt.io import write_json
from salt.models import build_student

FORMAT = "salt-encoder"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def encoder_config(cfg_dict: dict, summary: dict | None = None) -> dict[str, Any]:
    """The ``config.json`` of an exported encoder, from a run's resolved config."""
    cfg = from_dict(cfg_dict)  # fills fields that older checkpoints lack
    s, d = cfg.student, cfg.data
    return {
        "format": FORMAT,
        "version": 1,
        "architecture": s.name,
        "num_frames": d.num_frames,
        "image_size": d.image_size,
        "patch_size": s.patch_size,
        "tubelet_size": s.tubelet_size,
        "pos_embed": s.pos_embed,
        "frame_step": d.frame_step,
        "fps": d.fps,
        "mean": list(d.mean),
        "std": list(d.std),
        "teacher": cfg.teacher.spec,
        "salt_version": __version__,
        "summary": summary or {},
    }


def export_encoder(
    run: str | Path, out: str | Path, checkpoint: str | Path | None = None, force: bool = False
) -> Path:
    """Write the student encoder of a run (its newest, or the given, checkpoint) to ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to overwrite it")
    ckpt = resolve_checkpoint(checkpoint or run)
    state = load_checkpoint(ckpt)
    summary_file = run_dir_of(ckpt) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    summary["checkpoint_step"] = int(state["step"])
    config = encoder_config(state["config"], summary)
    if out.exists() and force:
        shutil.rmtree(out)
    return write_export(out, state["student"], config)


def write_export(out: Path, weights: dict[str, torch.Tensor], config: dict) -> Path:
    """Write ``model.safetensors`` (metadata ``format: pt``) and ``config.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in weights.items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    write_json(out / CONFIG, config)
    return out


def build_encoder(config: dict) -> nn.Module:
    """An untrained student with an exported config's architecture and clip geometry."""
    geometry = ClipGeometry(
        config["num_frames"], config["image_size"], config["patch_size"], config["tubelet_size"]
    )
    return build_student(
        config["architecture"], geometry, pos_embed=config.get("pos_embed", "sincos")
    )


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, naming every missing or unexpected key."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source} does not match the {type(model).__name__} it describes: "
            f"missing keys {result.missing_keys or 'none'}, unexpected keys "
            f"{result.unexpected_keys or 'none'}"
        )


def load_encoder(path: str | Path) -> tuple[nn.Module, dict]:
    """A trained encoder from an export directory, its ``model.safetensors``, a run
    directory or a checkpoint; returns the module (eval mode) and its config."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
        config = json.loads((folder / CONFIG).read_text())
        if config.get("format") != FORMAT:
            raise ValueError(
                f"{folder / CONFIG} is not a salt encoder config (format {config.get('format')!r})"
            )
        model = build_encoder(config)
        load_strict(model, load_file(str(folder / WEIGHTS)), str(folder / WEIGHTS))
    elif path.exists():
        state = load_checkpoint(path)
        config = encoder_config(state["config"], {"checkpoint_step": int(state["step"])})
        model = build_encoder(config)
        load_strict(model, state["student"], str(resolve_checkpoint(path)))
    else:
        raise FileNotFoundError(
            f"no encoder at {str(path)!r}: expected an export directory ({CONFIG} + {WEIGHTS}), "
            f"a run directory or a checkpoint file"
        )
    return model.eval(), config
