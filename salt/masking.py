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
    same split for every sample) says so with a class attribute ``deterministic = True``;
    one that can fix its context lengths itself has ``with_context_lengths(lengths)``
    (else :func:`fix_lengths` wraps it)."""

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


def equalize(context: np.ndarray, scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Give every row ``k`` context tokens (default: the batch's smallest count) without
    biasing which tokens stay.

    ``context [B, M]`` is boolean; rows with more context than ``k`` drop a uniformly random
    subset (lowest ``scores``) into the target set, rows with fewer take a uniformly random
    subset of their targets (highest ``scores``) into the context, so every token stays in
    exactly one of the two sets and no time slice or corner is favoured.
    """
    counts = context.sum(axis=1)
    k = int(counts.min()) if k is None else int(k)
    if not 0 < k < context.shape[1]:
        raise ValueError(
            f"a context of {k} of {context.shape[1]} tokens leaves no context or target"
        )
    if (counts == k).all():
        return context
    ranked = context + scores  # every context token ranks above every target token
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


# Keys for estimating a masker's lengths: a stream no run's (seed, epoch, index) reaches.
_LENGTH_SEED = 0x5A17_1E46


def typical_lengths(masker: Masker, batch_size: int, batches: int = 32) -> list[list[int]]:
    """Per mask group, the context length of ``batches`` simulated batches (a fixed set of
    keys: the same masker and batch size always give the same lengths)."""
    keys = sample_keys(_LENGTH_SEED, 0, np.arange(batches * batch_size))
    rows = [[g.context.shape[1] for g in masker(k)] for k in keys.reshape(batches, batch_size)]
    return [list(group) for group in zip(*rows, strict=True)]


def fix_lengths(masker: Masker, batch_size: int) -> Masker:
    """The masker with each group's context length fixed for a run - the median batch's
    (what equalizing each batch to its shortest context gives, typically) - so a step's
    shapes never change and a compiled step compiles once. Maskers whose lengths never vary
    (tube, random) come back as they are."""
    lengths = typical_lengths(masker, batch_size)
    if all(min(group) == max(group) for group in lengths):
        return masker
    fixed = tuple(int(np.percentile(group, 50, method="lower")) for group in lengths)
    if hasattr(masker, "with_context_lengths"):
        return masker.with_context_lengths(fixed)
    return FixedLengths(masker, fixed)


class FixedLengths:
    """Any masker with each group's context cut or topped up to a fixed length by
    uniformly random tokens (:func:`equalize`)."""

    def __init__(self, masker: Masker, lengths: tuple[int, ...]):
        self.masker = masker
        self.lengths = tuple(lengths)
        self.grid = tuple(masker.grid)
        self.group_names = masker.group_names

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        n = int(np.prod(self.grid))
        out = []
        for g, (group, k) in enumerate(zip(self.masker(keys), self.lengths, strict=True)):
            context = np.zeros((len(keys), n), dtype=bool)
            np.put_along_axis(context, group.context.numpy(), True, axis=1)
            scores = uniforms(keys, n, stream=(_LENGTH_SEED << 8) + g)
            out.append(split(equalize(context, scores, k)))
        return out
