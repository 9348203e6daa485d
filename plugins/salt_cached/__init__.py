"""Built-in plugin: the cached teacher, whose latents a cache build computed once.

``cached:NAME`` (or ``cached:DIR``) opens the cache's metadata only and carries the cache:
``salt.assemble`` makes it the run's data source - each split's locked views with their
latents - so stage 2 never runs a teacher model, and this teacher is never asked for clips.
"""

from __future__ import annotations

import torch

from salt.cache import LatentCache, LegacyCache, check_readable, open_cache, resolve_cache
from salt.config import ClipGeometry
from salt.contracts import Teacher
from salt.data import BUILT_IN
from salt.hookspecs import hookimpl


class CachedTeacher(Teacher):
    """Latents stored in a cache: they come with each batch; no model is ever loaded."""

    def __init__(self, cache: LatentCache | LegacyCache, grid: tuple[int, int, int], spec: str):
        super().__init__()
        self.cache = cache
        self.spec = spec
        self.teacher_dim = cache.teacher_dim
        self.grid = tuple(grid)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            f"teacher {self.spec!r} computes nothing: its latents come with each batch from "
            f"the cache's data source (salt.assemble.DataSource)"
        )


def _check_geometry(cache: LatentCache, geometry: ClipGeometry, spec: str) -> None:
    meta = cache.meta
    for key in ("num_frames", "image_size"):
        if meta[key] != getattr(geometry, key):
            raise ValueError(
                f"teacher {spec!r} was cached from {meta['num_frames']}-frame clips at "
                f"{meta['image_size']}px, but data.{key}={getattr(geometry, key)}; train with "
                f"--set data.{key}={meta[key]} (or --profile recipe)"
            )
    video_splits = [s for s in cache.splits.values() if s.get("data_kind") not in BUILT_IN]
    if video_splits and meta["frame_step"] != geometry.frame_step and not meta.get("fps"):
        raise ValueError(
            f"teacher {spec!r} was cached at frame_step {meta['frame_step']} but "
            f"data.frame_step={geometry.frame_step}; set --set data.frame_step={meta['frame_step']}"
        )


def _cached(arg: str | None, geometry: ClipGeometry) -> CachedTeacher:
    if not arg:
        raise ValueError("teacher 'cached' needs a cache name or directory, e.g. cached:v1huge")
    cache = open_cache(resolve_cache(arg))
    spec = f"cached:{arg}"
    if isinstance(cache, LatentCache):
        check_readable(cache)
        _check_geometry(cache, geometry, spec)
        return CachedTeacher(cache, cache.grid, spec)
    if cache.latent_shape[0] != geometry.num_tokens:
        raise ValueError(
            f"teacher {spec!r} (older layout) holds {cache.latent_shape[0]} latents per clip, but "
            f"the student's clips make {geometry.num_tokens} tokens (grid {geometry.grid}); "
            f"match data.num_frames and data.image_size to the cache"
        )
    return CachedTeacher(cache, geometry.grid, spec)


@hookimpl
def register_teachers(register):
    register(
        "cached",
        _cached,
        "latents from `salt cache build` (cached:NAME or cached:DIR); loads no model",
    )
