"""Batching in the DataLoader workers: stack clips, drop unreadable samples, add masks."""

from __future__ import annotations

from torch.utils.data import default_collate

from salt.masking import Masker, sample_keys


def collate_samples(samples: list[dict]) -> dict:
    """Stack readable samples; unreadable ones become ``errors``, views stay a list."""
    errors = [s["error"] for s in samples if "error" in s]
    good = [dict(s) for s in samples if "error" not in s]
    views = [s.pop("view", None) for s in good]
    batch = default_collate(good) if good else {}
    batch["errors"] = errors
    batch["views"] = views
    batch["size"] = len(good)
    return batch


class MaskCollator:
    """DataLoader ``collate_fn`` that stacks samples and adds masks (runs in the workers)."""

    def __init__(self, masker: Masker, seed: int):
        self.masker = masker
        self.seed = seed

    def __call__(self, samples: list[dict]) -> dict:
        batch = collate_samples(samples)
        if batch["size"]:
            keys = sample_keys(self.seed, batch["epoch"].numpy(), batch["index"].numpy())
            batch["masks"] = self.masker(keys)
        return batch
