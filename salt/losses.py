"""The loss: registered terms (``mse+vicreg``) combined into one objective with named parts,
scored at the masked tokens of each mask group."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from salt.config import TARGET_NORMS
from salt.contracts import LossTerm
from salt.masking import MaskGroup, gather_tokens
from salt.registry import losses, parse_spec

NORM_EPS = 1e-6  # in the variance: a channel constant over a clip comes out as zeros


class Objective:
    """Sum of loss terms; calling it gives ``(total, {term: value})``. ``target_norm``: how
    the teacher's latents are standardized before the terms see them (``normalize``)."""

    def __init__(self, spec: str, options: dict | None = None, target_norm: str = "none"):
        options = options or {}
        if target_norm not in TARGET_NORMS:
            raise ValueError(
                f"loss.target_norm must be one of {', '.join(TARGET_NORMS)}, got {target_norm!r}"
            )
        self.target_norm = target_norm
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        if not parts:
            raise ValueError(f"loss spec {spec!r} names no loss; e.g. 'mse' or 'mse+vicreg'")
        unused = set(options) - {parse_spec(p)[0] for p in parts}
        if unused:
            raise ValueError(
                f"loss.options has settings for {sorted(unused)}, which {spec!r} does not use"
            )
        self.spec = spec
        self.terms: list[LossTerm] = []
        for part in parts:
            name, _ = parse_spec(part)
            opts = options.get(name, {})
            if not isinstance(opts, dict):
                raise ValueError(f"loss.options.{name} must be a table of settings, got {opts!r}")
            weight = opts.get("weight", 1.0)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not 0 <= weight < 1e30
            ):
                raise ValueError(
                    f"loss.options.{name}.weight must be a finite number >= 0, got {weight!r} (a "
                    f"negative weight would maximize the term)"
                )
            try:
                self.terms.append(losses.create(part, **opts))
            except TypeError as err:
                raise ValueError(f"bad loss.options.{name} {opts}: {err}") from None

    def __call__(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Predictions and targets ``[B, Nt, D]`` -> (scalar total, named scalar terms)."""
        parts: dict[str, torch.Tensor] = {}
        for term in self.terms:
            for name, value in term(pred, target).items():
                if name in parts:
                    raise ValueError(f"two loss terms in {self.spec!r} are both named {name!r}")
                parts[name] = value
        total = torch.stack(list(parts.values())).sum()
        return total, parts

    def normalize(self, targets: torch.Tensor) -> torch.Tensor:
        """A batch of whole-clip latents ``[B, N, D]`` as the terms compare against them:
        "layer" standardizes each token over its D channels (V-JEPA's targets), "instance"
        each channel over the clip's N tokens (data2vec's), so what is the same everywhere in
        a clip carries no loss. Computed in float32 over every token, before any are picked."""
        if self.target_norm == "none":
            return targets
        x = targets.float()
        if self.target_norm == "layer":
            return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + NORM_EPS)


def masked_loss(
    preds: list[torch.Tensor], targets: torch.Tensor, masks: list[MaskGroup], objective: Objective
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective at each group's masked tokens, averaged over mask groups (each named
    term averaged too)."""
    targets = objective.normalize(targets)
    total = 0.0
    terms: dict[str, torch.Tensor] = {}
    for pred, group in zip(preds, masks, strict=True):
        loss, parts = objective(pred, gather_tokens(targets, group.target).to(pred.dtype))
        total = total + loss / len(masks)
        for name, value in parts.items():
            terms[name] = terms.get(name, 0.0) + value.detach() / len(masks)
    return total, terms
