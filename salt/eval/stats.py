"""The statistics of every evaluation: standard errors over seeds and over clips, the gap
between two encoders in standard errors of the difference, and rank correlation."""

from __future__ import annotations

import math

import torch


def standard_error(per_video: torch.Tensor) -> float:
    """Standard error of a mean over videos, from each video's score ``[n]`` (its clips'
    share of correct predictions): the clips of one video are not independent samples."""
    if len(per_video) < 2:
        return 0.0
    return float(per_video.double().std() / len(per_video) ** 0.5)


def per_clip(hits: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Each test clip's share of seeds that classified it correctly ``[clips]``."""
    if not hits:
        return torch.zeros(0, dtype=torch.float64)
    return torch.tensor(hits, dtype=torch.float64).mean(0)


def gap_in_stderr(a, b) -> float:
    """(a.mean - b.mean) in standard errors of that difference, for two scores with a
    ``mean``, its ``stderr`` over probe seeds and ``hits`` (per seed, per test clip).

    The error adds what the probe seeds scatter, ``se_a^2 + se_b^2``, to what the draw of
    test clips does: both scored on the same clips (equal ``hits`` lengths), that is the
    paired standard error over clips of the per-clip difference. +-inf when the error is 0
    and the means differ, 0 when they are equal.
    """
    diff = a.mean - b.mean
    var = a.stderr**2 + b.stderr**2
    if a.hits and b.hits and len(a.hits[0]) == len(b.hits[0]):
        var += standard_error(per_clip(a.hits) - per_clip(b.hits)) ** 2
    if var > 0:
        return diff / math.sqrt(var)
    return math.copysign(math.inf, diff) if diff else 0.0


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (nan when either is constant)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"spearman needs two lists of the same length >= 2, got {len(a)}, {len(b)}"
        )
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va and vb else float("nan")
