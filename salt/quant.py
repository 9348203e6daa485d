"""8-bit teacher latents: int8 codes with a per-channel and a per-token scale.

A clip's latents ``x [N, D]`` are stored as ``codes`` (int8), ``channel_scale [D]`` (each
channel's RMS over the clip's tokens) and ``token_scale [N]`` (each token's largest
channel-normalized magnitude / 127), so that ``x ~= codes * token_scale[:, None] *
channel_scale[None, :]``. The channel scale keeps a few large-magnitude channels (common in
ViT outputs) from spending every token's 8 bits; the token scale does the same for
high-norm tokens. Scales are float32 (0.5% of the bytes at D=768): the error is the
rounding of the codes alone, ~1e-4 of the latents' energy on Gaussian-like latents.

Caches keep the codes as they are read (half the bytes of fp16 from disk to the device) and
the loop dequantizes on the device, where it is nearly free.
"""

from __future__ import annotations

import attrs
import torch

LEVELS = 127  # symmetric int8: codes in [-127, 127]
_TINY = 1e-30  # a scale never divides by zero (an all-zero channel or token stays zero)


@attrs.frozen
class QuantizedLatents:
    """8-bit latents ``[..., N, D]``: what a dataset, a batch or the loop carries for an
    int8 cache. ``dequantize`` gives the latents back."""

    codes: torch.Tensor  # int8 [..., N, D]
    token_scale: torch.Tensor  # float32 [..., N]
    channel_scale: torch.Tensor  # float32 [..., D]

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The latents, ``codes * token_scale * channel_scale``, in ``dtype``."""
        out = self.codes.to(torch.float32) * self.token_scale.unsqueeze(-1)
        return out.mul_(self.channel_scale.unsqueeze(-2)).to(dtype)

    def to(self, device, non_blocking: bool = False) -> QuantizedLatents:
        return QuantizedLatents(
            *(t.to(device, non_blocking=non_blocking) for t in attrs.astuple(self, recurse=False))
        )

    def pin_memory(self) -> QuantizedLatents:
        return QuantizedLatents(*(t.pin_memory() for t in attrs.astuple(self, recurse=False)))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a cache shard stores, by key."""
        return {
            "latents": self.codes,
            "token_scale": self.token_scale,
            "channel_scale": self.channel_scale,
        }

    @staticmethod
    def stack(items: list[QuantizedLatents]) -> QuantizedLatents:
        """Stack per-clip latents into a batch."""
        return QuantizedLatents(
            torch.stack([q.codes for q in items]),
            torch.stack([q.token_scale for q in items]),
            torch.stack([q.channel_scale for q in items]),
        )


def quantize(latents: torch.Tensor) -> QuantizedLatents:
    """Per-channel, per-token int8 codes of ``latents [..., N, D]`` (any float dtype)."""
    if latents.dim() < 2:
        raise ValueError(f"latents must be [..., tokens, dim], got shape {tuple(latents.shape)}")
    x = latents.float()
    if not torch.isfinite(x).all():
        raise ValueError("latents hold NaN or inf values; they cannot be stored in 8 bits")
    channel = x.square().mean(dim=-2).sqrt().clamp_min(_TINY)  # [..., D]
    normed = x / channel.unsqueeze(-2)
    token = (normed.abs().amax(dim=-1) / LEVELS).clamp_min(_TINY)  # [..., N]
    codes = torch.round(normed / token.unsqueeze(-1)).clamp_(-LEVELS, LEVELS)
    return QuantizedLatents(codes.to(torch.int8), token, channel)


def dense(targets: torch.Tensor | QuantizedLatents) -> torch.Tensor:
    """Targets as float32, whether stored dense (fp16, bf16, fp32) or in 8 bits."""
    if isinstance(targets, QuantizedLatents):
        return targets.dequantize(torch.float32)
    return targets.float()


def squared_error(reference: torch.Tensor, q: QuantizedLatents) -> tuple[float, float]:
    """``(sum (x - x_hat)^2, sum x^2)`` of the 8-bit latents against ``reference``: their
    ratio over a cache is the relative MSE ``salt cache info`` reports."""
    ref = reference.float()
    return float((q.dequantize() - ref).square().sum()), float(ref.square().sum())
