"""The Hugging Face Hub convention for exported encoders: load by repo id, a model card with
every export, and ``push_to_hub``.

Loading goes through ``huggingface_hub``, so its cache (``HF_HUB_CACHE``), offline mode
(``HF_HUB_OFFLINE=1``: the cache only, no network) and tokens apply as for any Hub model.
Only ``config.json``, ``model.safetensors`` and ``README.md`` are fetched: an export holds
nothing that could run code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from salt import __version__

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILES = ("config.json", "model.safetensors")
CARD = "README.md"


def is_repo_id(text: str) -> bool:
    """``org/name`` that is not a local path: what ``from_pretrained`` fetches from the Hub."""
    return bool(REPO_ID.match(str(text))) and not Path(text).exists()


def download(repo_id: str, revision: str | None = None) -> Path:
    """The local folder (in the Hub cache) holding ``repo_id``'s export at ``revision``."""
    from huggingface_hub import constants, hf_hub_download

    folder = None
    try:
        for name in FILES:
            folder = Path(hf_hub_download(repo_id, name, revision=revision)).parent
    except Exception as err:  # offline without a copy, no such repo, no access, no network
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = (
            "offline mode (HF_HUB_OFFLINE=1) and no copy in the Hub cache "
            f"({constants.HF_HUB_CACHE})"
            if constants.is_offline_mode()
            else why
        )
        raise FileNotFoundError(
            f"could not load {repo_id!r}: no such local path, and not from the Hugging Face Hub "
            f"({where}); fetch it once with `hf download {repo_id}` while online, or give a "
            f"local export directory"
        ) from None
    return folder


def model_card(config: dict[str, Any]) -> str:
    """``README.md`` for an export: metadata for the Hub, what the encoder is, its geometry,
    how it was trained and evaluated, and how to load it."""
    summary = config.get("summary") or {}
    grid = (
        config["num_frames"] // config["tubelet_size"],
        config["image_size"] // config["patch_size"],
        config["image_size"] // config["patch_size"],
    )
    tokens = grid[0] * grid[1] * grid[2]
    lines = [
        "---",
        "library_name: salt-vla",
        "tags: [video, video-encoder, vla, robotics, salt]",
        "---",
        "",
        f"# {config['architecture']} video encoder (SALT)",
        "",
        "A video encoder trained with SALT by salt-vla: a student predicted a frozen teacher's "
        "latents from masked video. It maps clips to patch tokens for VLA policies.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {config['architecture']} |",
        f"| clip | {config['num_frames']} frames x {config['image_size']} px, every "
        f"{config.get('frame_step', 1)}th frame"
        + (f" (at {config['fps']} fps)" if config.get("fps") else "")
        + " |",
        f"| tokens | {tokens} = grid {grid[0]}x{grid[1]}x{grid[2]} (tubelet "
        f"{config['tubelet_size']}, patch {config['patch_size']}) |",
        f"| normalization | mean {config['mean']}, std {config['std']} |",
        f"| teacher | `{config.get('teacher', '?')}` |",
        f"| training data | `{config.get('data', '?')}` |",
    ]
    if "checkpoint_step" in summary:
        lines.append(f"| steps | {summary['checkpoint_step']} |")
    if "min_loss" in summary and "last_loss" in summary:
        lines.append(
            f"| distillation loss | first {summary.get('first_loss', float('nan')):.4f}, "
            f"min {summary['min_loss']:.4f}, last {summary['last_loss']:.4f} |"
        )
    lines.append(f"| weights | `model.safetensors`, {config.get('torch_dtype', 'float32')} |")
    lines += ["", "## Evaluation", ""]
    evaluations = config.get("evaluations") or {}
    if evaluations:
        lines += ["| benchmark | probe | top-1 |", "|---|---|---|"]
        for name, scores in evaluations.items():
            for probe, score in scores.items():
                lines.append(f"| {name} | {probe} | {score} |")
    else:
        lines.append(
            "Not recorded with this export. Frozen evaluation with an attentive probe: "
            "`salt eval classify THIS_FOLDER --data motion` (the built-in motion benchmark) or "
            "`--data path/to/ssv2/train.json`."
        )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import torch",
        "from salt import VideoEncoder",
        "",
        'encoder = VideoEncoder.from_pretrained("REPO_OR_FOLDER").freeze()',
        f"video = torch.randint(0, 256, (1, {config['num_frames']}, 3, {config['image_size']}, "
        f"{config['image_size']}), dtype=torch.uint8)",
        f"tokens = encoder(video)  # [1, {tokens}, width]",
        "```",
        "",
        f"Written by salt-vla {config.get('salt_version', __version__)}.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(
    folder: Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload salt-vla encoder",
) -> str:
    """Upload an export folder (config, weights, model card) to ``repo_id``, creating the
    repository if needed; returns the commit URL. Needs a token (``hf auth login`` or
    ``HF_TOKEN``) with write access."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [n for n in (*FILES, CARD) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a whole export (no {', '.join(missing)})")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        allow_patterns=[*FILES, CARD],
        commit_message=commit_message,
    )
    return str(getattr(info, "commit_url", info))
