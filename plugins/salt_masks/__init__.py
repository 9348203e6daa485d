"""Built-in plugin: multi-block (V-JEPA), tube (VideoMAE), random and future-prediction maskers."""

from __future__ import annotations

import copy
import math

import numpy as np

from salt.hookspecs import hookimpl
from salt.masking import MaskGroup, equalize, expand_time, split, uniforms

# V-JEPA's two groups: many small blocks (short range) and two large ones (long range).
DEFAULT_GROUPS = (
    {"name": "short", "num_blocks": 8, "spatial_scale": 0.15},
    {"name": "long", "num_blocks": 2, "spatial_scale": 0.7},
)


class MultiBlockMasker:
    """Targets are unions of random blocks; the context is what no block covers.

    Each group yields its own (context, target) pair, as in V-JEPA. Blocks span the full
    clip in time unless ``temporal_scale`` < 1.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        groups: tuple[dict, ...] | list[dict] = DEFAULT_GROUPS,
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        temporal_scale: float = 1.0,
        min_context: int = 1,
        max_tries: int = 20,
        context_lengths: tuple[int, ...] | None = None,
    ):
        self.grid = tuple(grid)
        self.groups = [self._check_group(dict(g)) for g in groups]
        self.group_names = tuple(g.get("name", f"group{i}") for i, g in enumerate(self.groups))
        lo, hi = aspect_ratio
        if not 0 < lo <= hi:
            raise ValueError(
                f"aspect_ratio must be (low, high) with 0 < low <= high, got {aspect_ratio}"
            )
        if not 0 < temporal_scale <= 1:
            raise ValueError(f"temporal_scale must be in (0, 1], got {temporal_scale}")
        self.aspect_ratio = (float(lo), float(hi))
        self.temporal_scale = float(temporal_scale)
        self.min_context = int(min_context)
        self.max_tries = int(max_tries)
        # Per group, a fixed context length (tokens); None equalizes each batch to its
        # shortest context. salt.masking.fix_lengths sets it for compiled runs.
        self.context_lengths = None if context_lengths is None else tuple(context_lengths)
        if self.context_lengths is not None and len(self.context_lengths) != len(self.groups):
            raise ValueError(
                f"context_lengths needs one length per mask group ({len(self.groups)}), got "
                f"{list(self.context_lengths)}"
            )

    def with_context_lengths(self, lengths: tuple[int, ...]) -> MultiBlockMasker:
        """This masker with each group's context length fixed (see ``context_lengths``)."""
        fixed = copy.copy(self)
        fixed.context_lengths = tuple(int(k) for k in lengths)
        return fixed

    @staticmethod
    def _check_group(group: dict) -> dict:
        unknown = set(group) - {"name", "num_blocks", "spatial_scale"}
        if unknown:
            raise ValueError(
                f"unknown multiblock group option(s) {sorted(unknown)}; "
                "use name, num_blocks, spatial_scale"
            )
        if int(group.get("num_blocks", 0)) < 1:
            raise ValueError(f"a mask group needs num_blocks >= 1, got {group}")
        if not 0 < float(group.get("spatial_scale", 0)) < 1:
            raise ValueError(f"a mask group needs 0 < spatial_scale < 1, got {group}")
        return group

    def _blocks(self, keys: np.ndarray, group: dict, stream: int) -> np.ndarray:
        """Boolean target masks ``[B, T, H, W]`` (or ``[B, 1, H, W]`` for full-time blocks)."""
        t_len, h_len, w_len = self.grid
        n = int(group["num_blocks"])
        u = uniforms(keys, 6 * n, stream).reshape(len(keys), 6, n)
        lo, hi = self.aspect_ratio
        area = float(group["spatial_scale"]) * h_len * w_len
        ar = lo + (hi - lo) * u[:, 0]
        h = np.clip(np.rint(np.sqrt(area * ar)), 1, max(h_len - 1, 1)).astype(np.int64)
        w = np.clip(np.rint(np.sqrt(area / ar)), 1, max(w_len - 1, 1)).astype(np.int64)
        top = (u[:, 1] * (h_len - h + 1)).astype(np.int64)
        left = (u[:, 2] * (w_len - w + 1)).astype(np.int64)
        rows = np.arange(h_len)
        cols = np.arange(w_len)
        in_h = (rows >= top[..., None]) & (rows < (top + h)[..., None])  # [B, n, H]
        in_w = (cols >= left[..., None]) & (cols < (left + w)[..., None])  # [B, n, W]
        if self.temporal_scale >= 1:
            return (in_h[..., :, None] & in_w[..., None, :]).any(axis=1)[:, None]
        d = max(1, round(self.temporal_scale * t_len))
        # Starts run from -(d-1) and blocks are clipped to the clip, so every time slice is
        # covered equally often (a start in [0, T-d] would favour the middle slices).
        start = np.floor(u[:, 3] * (t_len + d - 1)).astype(np.int64) - (d - 1)
        frames = np.arange(t_len)
        in_t = (frames >= start[..., None]) & (frames < (start + d)[..., None])  # [B, n, T]
        cube = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]
        return cube.any(axis=1)

    def _group(self, keys: np.ndarray, group: dict, index: int) -> MaskGroup:
        t_len = self.grid[0]
        target = self._blocks(keys, group, stream=index * 1000)
        context = ~target.reshape(len(keys), -1)
        for attempt in range(1, self.max_tries + 1):
            short = context.sum(axis=1) < self.min_context
            if not short.any():
                break
            redo = ~self._blocks(keys[short], group, stream=index * 1000 + attempt)
            context[short] = redo.reshape(int(short.sum()), -1)
        if (context.sum(axis=1) < self.min_context).any():
            raise RuntimeError(
                f"multiblock group {group} left fewer than {self.min_context} context positions "
                f"after {self.max_tries} redraws; lower spatial_scale or num_blocks"
            )
        scores = uniforms(keys, context.shape[1], stream=index * 1000 + 999)
        spatial = context.shape[1] != t_len * self.grid[1] * self.grid[2]
        k = None
        if self.context_lengths is not None:  # in tokens; full-time blocks mask whole tubes
            k = self.context_lengths[index] // t_len if spatial else self.context_lengths[index]
        context = equalize(context, scores, k)
        if spatial:
            context = expand_time(context, t_len)
        return split(context)

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        return [self._group(keys, g, i) for i, g in enumerate(self.groups)]


class TubeMasker:
    """VideoMAE tube masking: the same random spatial positions are hidden in every frame."""

    group_names = ("tube",)

    def __init__(self, grid: tuple[int, int, int], ratio: float = 0.9):
        self.grid = tuple(grid)
        self.ratio = _ratio(ratio)

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        t_len, h_len, w_len = self.grid
        context = _keep_random(keys, h_len * w_len, self.ratio)
        return [split(expand_time(context, t_len))]


class RandomMasker:
    """Hide a fixed share of tokens chosen uniformly over the whole grid."""

    group_names = ("random",)

    def __init__(self, grid: tuple[int, int, int], ratio: float = 0.9):
        self.grid = tuple(grid)
        self.ratio = _ratio(ratio)

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        return [split(_keep_random(keys, math.prod(self.grid), self.ratio))]


class FutureMasker:
    """Context: every token of the first time slices; targets: every token after them.

    The encoder sees only the start of the clip, so the predictor can place the later
    tokens only if the context carries where things are going: motion, not appearance. It
    is deterministic - every sample of a batch has the same split, and the per-sample keys
    go unused.
    """

    group_names = ("future",)
    deterministic = True

    def __init__(self, grid: tuple[int, int, int], context_fraction: float = 0.5):
        self.grid = tuple(grid)
        slices = grid[0]
        self.context_slices = round(slices * float(context_fraction))
        if not 1 <= self.context_slices < slices:
            raise ValueError(
                f"future:{context_fraction} keeps {self.context_slices} of {slices} time "
                f"slices as context; choose a fraction that keeps at least one slice on each "
                f"side (e.g. future:0.5)"
            )

    def __call__(self, keys: np.ndarray) -> list[MaskGroup]:
        per_slice = self.grid[1] * self.grid[2]
        context = np.zeros((len(keys), math.prod(self.grid)), dtype=bool)
        context[:, : self.context_slices * per_slice] = True
        return [split(context)]


def _ratio(value) -> float:
    value = float(value)
    if not 0 < value < 1:
        raise ValueError(f"mask ratio must be strictly between 0 and 1, got {value}")
    return value


def _keep_random(keys: np.ndarray, n: int, ratio: float) -> np.ndarray:
    """Boolean context ``[B, n]`` keeping ``n - round(n * ratio)`` (at least 1) random slots."""
    keep = max(1, n - round(n * ratio))
    if keep >= n:
        raise ValueError(f"mask ratio {ratio} hides nothing of {n} tokens; raise it")
    scores = uniforms(keys, n, stream=7)
    chosen = np.argpartition(scores, keep - 1, axis=1)[:, :keep]
    context = np.zeros((len(keys), n), dtype=bool)
    np.put_along_axis(context, chosen, True, axis=1)
    return context


def _ratio_factory(name, cls):
    def factory(arg, grid, **options):
        if arg is not None:
            options["ratio"] = float(arg)
        return _build(name, cls, grid, options)

    return factory


def _build(name, cls, grid, options):
    try:
        return cls(grid, **options)
    except TypeError as err:
        raise ValueError(f"bad mask.options for {name!r} {options}: {err}") from None


def _future(arg, grid, **options):
    if arg is not None:
        try:
            options["context_fraction"] = float(arg)
        except ValueError:
            raise ValueError(
                f"future:{arg} needs a fraction of the time slices to keep as context, "
                f"e.g. future:0.5"
            ) from None
    return _build("future", FutureMasker, grid, options)


def _multiblock(arg, grid, **options):
    if arg:
        raise ValueError(f"masker 'multiblock' takes no argument, got multiblock:{arg}")
    return _build("multiblock", MultiBlockMasker, grid, options)


@hookimpl
def register_maskers(register):
    register("multiblock", _multiblock, "V-JEPA multi-block: 8 blocks x 0.15 and 2 blocks x 0.7")
    register(
        "tube", _ratio_factory("tube", TubeMasker), "VideoMAE tube masking, ratio 0.9 (tube:RATIO)"
    )
    register(
        "random",
        _ratio_factory("random", RandomMasker),
        "uniform random tokens, ratio 0.9 (random:RATIO)",
    )
    register(
        "future",
        _future,
        "predict the later time slices from the first, context fraction 0.5 (future:FRACTION)",
    )
