"""Built-in plugin: VICReg-style variance and covariance penalties on the predictions."""

from __future__ import annotations

import torch

from salt.hookspecs import hookimpl


def variance_penalty(x: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Mean hinge ``relu(target_std - std)`` over the dimensions of ``x [n, D]``."""
    std = (x.var(dim=0) + eps).sqrt()
    return torch.relu(target_std - std).mean()


def covariance_penalty(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances of ``x [n, D]``, divided by ``D``."""
    n, d = x.shape
    x = x - x.mean(dim=0)
    cov = (x.T @ x) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg(arg=None, var_weight: float = 1.0, cov_weight: float = 0.04, target_std: float = 1.0):
    """Variance and covariance terms over all predicted tokens of the batch."""
    if arg:
        raise ValueError(f"loss 'vicreg' takes no argument, got vicreg:{arg}")

    def loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        x = pred.float().reshape(-1, pred.shape[-1])  # [B*Nt, D]
        return {
            "vicreg_var": var_weight * variance_penalty(x, target_std),
            "vicreg_cov": cov_weight * covariance_penalty(x),
        }

    return loss


@hookimpl
def register_losses(register):
    register(
        "vicreg",
        vicreg,
        "variance (hinge on std, target 1) and covariance penalties; add to a base loss: mse+vicreg",
    )
