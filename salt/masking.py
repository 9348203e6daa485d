"""Masks: the context/target split of the token grid, made in DataLoader workers.

Randomness here is counter-based: every draw is a hash of (seed, epoch, sample index,
stream, counter), so a sample's mask never depends on worker count or on what ran before,
and a resumed run sees exactly the masks it would have seen.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


class MaskGroup(NamedTuple):
    """One mask group for a batch: sorted token indices of the context and target sets."""

    context: torch.Tensor  # [B, Nc] int64
    target: torch.Tensor  # [B, Nt] int64


class Masker(Protocol):
    """What a masker factory returns. A masker whose masks do not depend on the keys (the
    same split for every sample) says so with a class attribute ``deterministic = True``."""

    grid: tuple[int, int, int]
    group_names: tuple[str, ...]

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        """Masks for a batch whose samples have the given 64-bit keys ``[B]``."""


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def sample_keys(seed: int, epoch: np.ndarray | int, index: np.ndarray | int) -> np.ndarray:
    """One 64-bit key per sample from (seed, epoch, index); ``[B]`` uint64."""
    index = np.atleast_1d(np.asarray(index, dtype=np.uint64))
    epoch = np.broadcast_to(np.asarray(epoch, dtype=np.uint64), index.shape)
    z = _mix(np.full(index.shape, seed, dtype=np.uint64) + _GOLDEN)
    z = _mix(z ^ (epoch + _GOLDEN))
    return _mix(z ^ (index + _GOLDEN))


def uniforms(keys: np.ndarray, n: int, stream: int = 0) -> np.ndarray:
    """``[B, n]`` floats in [0, 1): the ``stream``-th independent sequence of each key."""
    counters = np.arange(n, dtype=np.uint64) + np.uint64(1) + (np.uint64(stream) << np.uint64(32))
    z = _mix(keys[:, None] + counters[None, :] * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def equalize(context: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Give every row the batch's smallest context count without biasing which tokens stay.

    ``context [B, M]`` is boolean; rows with more context than the minimum drop a uniformly
    random subset (lowest ``scores``) into the target set, so every token stays in exactly
    one of the two sets and no time slice or corner is favoured.
    """
    counts = context.sum(axis=1)
    k = int(counts.min())
    if k == int(counts.max()):
        return context
    ranked = np.where(context, scores, -1.0)
    keep = np.argpartition(-ranked, k - 1, axis=1)[:, :k]
    out = np.zeros_like(context)
    np.put_along_axis(out, keep, True, axis=1)
    return out


def indices(mask: np.ndarray) -> torch.Tensor:
    """Sorted indices ``[B, K]`` of a boolean ``[B, M]`` mask with K True entries per row."""
    rows, cols = np.nonzero(mask)
    return torch.from_numpy(cols.reshape(mask.shape[0], -1).astype(np.int64))


def expand_time(spatial: np.ndarray, frames: int) -> np.ndarray:
    """Spatial masks ``[B, S]`` -> token masks ``[B, T*S]`` covering every time slice."""
    return np.tile(spatial, (1, frames))


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b]]`` for tokens ``x [B, N, D]`` and indices ``idx [B, K]`` -> ``[B, K, D]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def split(context: np.ndarray) -> MaskGroup:
    """A MaskGroup whose target is the complement of the boolean ``context [B, N]``."""
    return MaskGroup(indices(context), indices(~context))
