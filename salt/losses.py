"""Combine registered loss terms (``mse+vicreg``) into one objective with named parts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from salt.registry import losses, parse_spec

LossTerm = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


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
