"""Caches in the older layout: ``train/<video id>.pt`` files plus ``train/metadata.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_older_cache(
    root: Path, video_dir: Path, shape: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Seeded bf16 latents ``shape`` for every ``.mp4`` under ``video_dir`` (by file stem)."""
    split = root / "train"
    split.mkdir(parents=True, exist_ok=True)
    ids = sorted(p.stem for p in video_dir.rglob("*.mp4"))
    latents = {}
    for i, vid in enumerate(ids):
        latents[vid] = torch.randn(*shape, generator=torch.Generator().manual_seed(i)).to(
            torch.bfloat16
        )
        torch.save({"latents": latents[vid]}, split / f"{vid}.pt")
    meta = {"latent_shape": list(shape), "video_ids": ids, "model": "videomae-huge"}
    (split / "metadata.json").write_text(json.dumps({**meta, "split": "train"}))
    return latents
