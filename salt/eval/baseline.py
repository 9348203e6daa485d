"""The reference every number is compared with: an untrained encoder of the same shape."""

from __future__ import annotations

import torch
from torch import nn


def random_like(encoder: nn.Module, architecture: str | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialized student of the encoder's architecture and clip geometry (the
    ``--baseline random`` reference), built without touching the global RNG."""
    from salt.registry import students

    architecture = architecture or getattr(encoder, "architecture", None)
    if not architecture:
        raise ValueError(
            "random_like needs the architecture name (e.g. 'vit_l'); pass architecture= "
            "(load_encoder returns it as config['architecture'])"
        )
    geometry = {}
    for key in ("num_frames", "image_size", "patch_size", "tubelet_size"):
        if not hasattr(encoder, key):
            raise ValueError(f"the encoder has no {key!r} attribute, so random_like cannot copy it")
        geometry[key] = getattr(encoder, key)
    if isinstance(getattr(encoder, "pos_embed", None), nn.Parameter):
        geometry["pos_embed"] = "learned"
    param = next(iter(encoder.parameters()), None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = students.create(architecture, **geometry)
    if param is not None:
        model = model.to(param.device)
    return model.eval()
