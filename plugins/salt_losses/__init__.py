"""Built-in plugin: regression losses on the masked teacher latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salt.hookspecs import hookimpl


def _no_arg(name):
    def check(arg):
        if arg:
            raise ValueError(f"loss {name!r} takes no argument, got {name}:{arg}")

    return check


def mse(arg=None, weight: float = 1.0):
    """Mean squared error over every predicted latent element."""
    _no_arg("mse")(arg)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mse": weight * F.mse_loss(pred.float(), target.float())}

    return loss


def l1(arg=None, weight: float = 1.0):
    """Mean absolute error over every predicted latent element."""
    _no_arg("l1")(arg)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"l1": weight * F.l1_loss(pred.float(), target.float())}

    return loss


def cosine(arg=None, weight: float = 1.0):
    """One minus the cosine similarity of each predicted token with its target, averaged."""
    _no_arg("cosine")(arg)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        sim = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-6)
        return {"cosine": weight * (1.0 - sim).mean()}

    return loss


@hookimpl
def register_losses(register):
    register("mse", mse, "mean squared error on masked teacher latents (the default)")
    register("l1", l1, "mean absolute error on masked teacher latents")
    register("cosine", cosine, "1 - cosine similarity per token")
