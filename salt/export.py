"""Export a run's student encoder (safetensors + config.json) and load it back."""

from __future__ import annotations

import errno
import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salt import __version__
from salt.checkpoints import (
    SELECTORS,
    list_checkpoints,
    load_checkpoint,
    names_checkpoint,
    resolve_checkpoint,
    run_dir_of,
)
from salt.config import ClipGeometry, from_dict
from salt.folders import (
    EMPTY,
    EXPORT,
    EXPORT_FILES,
    FolderRefused,
    describe,
    folder_kind,
    remove_stage,
    stage_beside,
    swap_in,
)
from salt.io import (
    UnreadableFileError,
    WriteError,
    atomic_write_bytes,
    check_folder,
    first_line,
    read_json,
    read_safetensors,
    write_json,
)
from salt.models import build_student, load_strict

FORMAT = "salt-encoder"
MODEL_TYPE = "salt_video_encoder"  # config.json's model_type, for Hub tooling
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
        "data": cfg.data.spec,
        "salt_version": __version__,
        "summary": summary or {},
    }


def export_encoder(
    run: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    force: bool = False,
    license: str | None = None,
) -> Path:
    """Write the student encoder of a run (its newest, or the given, checkpoint) to ``out``:
    a new or empty folder, or - with ``force`` - an earlier export, replaced whole.
    ``checkpoint``: a file, or ``best``, ``latest`` or a step number of ``run``'s;
    ``license``: the model card's (default salt-vla's own, apache-2.0)."""
    out = Path(out)
    check_export_folder(out, replace=force)  # before the checkpoint is read: fail fast
    if checkpoint is not None and not Path(checkpoint).exists():
        if str(checkpoint) in SELECTORS or str(checkpoint).isdigit():
            checkpoint = f"{run}:{checkpoint}"
    ckpt = resolve_checkpoint(checkpoint or run)
    state = load_checkpoint(ckpt)
    summary_file = run_dir_of(ckpt) / "summary.json"
    summary = read_json(summary_file) if summary_file.is_file() else {}
    summary["checkpoint_step"] = int(state["step"])
    if "val_loss" in state:  # the run's best: chosen by this held-out loss
        summary["checkpoint_val_loss"] = float(state["val_loss"])
    config = encoder_config(state["config"], summary)
    if license:
        config["license"] = license
    return write_export(out, state["student"], config, replace=force)


def check_export_folder(out: Path, replace: bool) -> None:
    """Refuse to export into ``out`` unless it is new, empty or (with ``replace``) an
    earlier export holding nothing but its own files: nothing else is ever replaced."""
    check_folder(out, "--out")
    kind = folder_kind(out)
    if kind == EMPTY:
        return
    if kind != EXPORT:
        raise FolderRefused(
            f"--out {str(out)!r} {describe(out, kind)}, not an earlier export: an export is "
            f"written only into a new or empty folder, and --force replaces only an earlier "
            f"export; choose another --out"
        )
    if not replace:
        raise FileExistsError(
            f"--out {str(out)!r} holds an earlier export; pass --force to replace it, or "
            f"choose another --out"
        )
    others = [p.name for p in out.iterdir() if p.name not in EXPORT_FILES]
    if others:
        raise FolderRefused(
            f"--out {str(out)!r} holds an earlier export and files salt did not write "
            f"({', '.join(sorted(others)[:4])}); --force replaces only an export's own files - "
            f"move those, or choose another --out"
        )


def write_export(
    out: Path, weights: dict[str, torch.Tensor], config: dict, replace: bool = True
) -> Path:
    """Write ``model.safetensors`` (metadata ``format: pt``), a model card (``README.md``)
    and ``config.json`` (with the weights' SHA-256 and the Hub's conventional
    ``model_type``/``architectures``/``torch_dtype``) into ``out``: a new or empty folder,
    or an earlier export (with ``replace``). The export is written whole into a folder
    beside ``out`` and then swapped in, so ``out`` never holds a mix of two exports, nor a
    part of one."""
    from safetensors.torch import save

    from salt.hub import model_card

    out = Path(out)
    out = out.resolve() if out.is_symlink() else out  # replace what the link points to
    check_export_folder(out, replace)
    data = save({k: v.detach().contiguous() for k, v in weights.items()}, metadata={"format": "pt"})
    dtypes = {str(v.dtype).removeprefix("torch.") for v in weights.values()}
    config = {
        **config,
        "model_type": MODEL_TYPE,
        "architectures": ["VideoEncoder"],
        "torch_dtype": dtypes.pop() if len(dtypes) == 1 else "mixed",
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    if "norm.weight" in weights:  # the final norm's width: the tokens' (transformers' name)
        config["hidden_size"] = int(weights["norm.weight"].shape[0])
    card = model_card(config, folder=str(out)).encode()
    if out.is_dir() and not any(out.iterdir()):
        _write_files(out, data, card, config)  # nothing there to mix with: in place
        return out
    stage = stage_beside(out)
    try:
        _write_files(stage, data, card, config)
        swap_in(stage, out)
    except WriteError as err:  # name the destination, not the folder it was staged in
        raise WriteError(err.errno, str(err).replace(str(stage), str(out))) from None
    except OSError as err:
        raise WriteError(err.errno or errno.EIO, f"cannot write {out}: {first_line(err)}") from None
    finally:
        remove_stage(stage)
    return out


def _write_files(folder: Path, weights: bytes, card: bytes, config: dict) -> None:
    """The weights, the card, then the config: a folder whose config is there is whole."""
    atomic_write_bytes(folder / WEIGHTS, lambda f: f.write(weights))
    atomic_write_bytes(folder / "README.md", lambda f: f.write(card))  # the model card
    write_json(folder / CONFIG, config)


def check_encoder_config(config: Any, source: str) -> dict:
    """An exported config with the fields an encoder is built from checked: types, ranges,
    lengths; the first problem is a one-line error naming ``source`` and the field."""

    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{source}: field {field!r} {why}; re-export the encoder or fix it")

    if not isinstance(config, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ValueError(f"{source} is not a salt encoder config (format {config.get('format')!r})")
    version = config.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > 1:
        raise ValueError(
            f"{source}: version {version!r} is not one this salt-vla ({__version__}) reads (1); "
            f"upgrade salt-vla or export the encoder again"
        )
    for field in ("architecture", "num_frames", "image_size", "patch_size", "tubelet_size"):
        if field not in config:
            raise bad(field, "is missing")
    if not isinstance(config["architecture"], str) or not config["architecture"]:
        raise bad("architecture", f"must be a student name, got {config['architecture']!r}")
    for field, default in (
        ("num_frames", None),
        ("image_size", None),
        ("patch_size", None),
        ("tubelet_size", None),
        ("frame_step", 1),
    ):
        value = config.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(field, f"must be a positive integer, got {value!r}")
    if config["image_size"] % config["patch_size"]:
        raise bad("image_size", f"({config['image_size']}) must be a multiple of patch_size")
    if config["num_frames"] % config["tubelet_size"]:
        raise bad("num_frames", f"({config['num_frames']}) must be a multiple of tubelet_size")
    fps = config.get("fps", 0.0)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 <= fps < math.inf:
        raise bad("fps", f"must be a number >= 0, got {fps!r}")
    if config.get("pos_embed", "sincos") not in ("sincos", "learned"):
        raise bad("pos_embed", f"must be 'sincos' or 'learned', got {config['pos_embed']!r}")
    for field in ("mean", "std"):
        value = config.get(field)
        numbers = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        if not numbers or len(value) != 3:
            raise bad(
                field, f"must be a list of 3 finite numbers (one per RGB channel), got {value!r}"
            )
    if any(v <= 0 for v in config["std"]):
        raise bad("std", f"must be > 0 in every channel, got {config['std']!r}")
    return config


def read_export_weights(folder: Path, config: dict) -> dict[str, torch.Tensor]:
    """An export's weights, checked against the SHA-256 its config records (exports written
    before checksums have none to check)."""
    from safetensors.torch import load

    file = folder / WEIGHTS
    expected = config.get("weights_sha256")
    if expected is None:
        return read_safetensors(file)
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise UnreadableFileError(
            f"{file} does not match the checksum in {folder / CONFIG} (damaged or modified "
            f"since export); export the encoder again"
        )
    try:
        return load(data)
    except Exception as err:  # a checksummed file that still fails was written broken
        raise UnreadableFileError(f"{file} is not a readable safetensors file ({err})") from None


def build_encoder(config: dict) -> nn.Module:
    """An untrained student with an exported config's architecture and clip geometry."""
    geometry = ClipGeometry(
        config["num_frames"], config["image_size"], config["patch_size"], config["tubelet_size"]
    )
    return build_student(
        config["architecture"], geometry, pos_embed=config.get("pos_embed", "sincos")
    )


def load_encoder(path: str | Path, revision: str | None = None, **hub) -> tuple[nn.Module, dict]:
    """A trained encoder from an export directory, its ``model.safetensors``, a run
    directory, a checkpoint, or a Hugging Face Hub repo id (``org/name``, at ``revision``;
    through the Hub's cache and offline mode; ``hub``: ``cache_dir``, ``local_files_only``,
    ``token`` for the download); returns the module (eval mode) and its config. What looks like a path (:func:`salt.hub.looks_like_path`: ``./``, ``/``, ``~``,
    ``runs/...``, a drive, a file suffix) is never looked up on the Hub."""
    from salt.hub import download, is_repo_id

    given = str(path)
    if is_repo_id(given):
        path = download(given, revision, **hub)
    path = Path(path).expanduser()
    folder = path.parent if path.suffix == ".safetensors" else path
    if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
        config = check_encoder_config(read_json(folder / CONFIG), str(folder / CONFIG))
        model = build_encoder(config)
        load_strict(model, read_export_weights(folder, config), str(folder / WEIGHTS))
    elif (folder / CONFIG).is_file() and not list_checkpoints(folder):
        raise FileNotFoundError(
            f"{folder} holds {CONFIG} but no {WEIGHTS}: an incomplete export; export it again"
        )
    elif path.exists() or names_checkpoint(given):
        state = load_checkpoint(path)
        config = encoder_config(state["config"], {"checkpoint_step": int(state["step"])})
        model = build_encoder(config)
        load_strict(model, state["student"], str(resolve_checkpoint(path)))
    else:
        raise FileNotFoundError(
            f"no encoder at {given!r}: no such file or folder (a local path, so the Hub was "
            f"not asked); expected an export directory ({CONFIG} + {WEIGHTS}), a run directory, "
            f"a checkpoint file or a Hub repo id (org/name)"
        )
    return model.eval(), config


def record_evaluation(export: str | Path, entries: list[dict[str, Any]]) -> Path:
    """Record evaluations into an export: its ``config.json`` (``evaluations``) and its
    model card (a table, and model-index entries on the Hub). An entry for the same task,
    data and metric replaces the older one; the weights are not touched."""
    from salt.hub import evaluations_of, model_card

    folder = Path(export)
    if not ((folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()):
        raise FileNotFoundError(
            f"--record {export}: not an export folder ({CONFIG} + {WEIGHTS}); write one with "
            f"`salt export RUN --out DIR` and record into DIR"
        )
    config = read_json(folder / CONFIG)
    check_encoder_config(config, str(folder / CONFIG))

    def key(e: dict) -> tuple:
        return e["task"], e["dataset"], e["metric"], e.get("name")

    new = {key(e) for e in entries}
    config["evaluations"] = [e for e in evaluations_of(config) if key(e) not in new] + entries
    card = model_card(config, folder=str(export)).encode()
    atomic_write_bytes(folder / "README.md", lambda f: f.write(card))
    write_json(folder / CONFIG, config)
    return folder
