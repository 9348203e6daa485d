"""The loss: registered terms (``mse+vicreg``) combined into one objective with named parts,
scored at the masked tokens of each mask group."""

from __future__ import annotations

import torch

from salt.contracts import LossTerm
from salt.masking import MaskGroup, gather_tokens
from salt.registry import losses, parse_spec


class Objective:
    """Sum of loss terms; calling it gives ``(total, {term: value})``."""

    def __init__(self, spec: str, options: dict | None = None):
        options = options or {}
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


def masked_loss(
    preds: list[torch.Tensor], targets: torch.Tensor, masks: list[MaskGroup], objective: Objective
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective at each group's masked tokens, averaged over mask groups (each named
    term averaged too)."""
    total = 0.0
    terms: dict[str, torch.Tensor] = {}
    for pred, group in zip(preds, masks, strict=True):
        loss, parts = objective(pred, gather_tokens(targets, group.target).to(pred.dtype))
        total = total + loss / len(masks)
        for name, value in parts.items():
            terms[name] = terms.get(name, 0.0) + value.detach() / len(masks)
    return total, terms
