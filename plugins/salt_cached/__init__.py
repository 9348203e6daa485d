"""Built-in plugin: the cached teacher, reading latents a cache build computed once."""

from __future__ import annotations

import math

import torch

from salt.cache import CachedDataset, LatentCache, LegacyCache, open_cache, resolve_cache
from salt.config import Config
from salt.hookspecs import hookimpl
from salt.teachers import Teacher


class CachedTeacher(Teacher):
    """Targets come with each batch from the cache; no model is ever loaded."""

    def __init__(
        self, cache: LatentCache | LegacyCache, grid: tuple[int, int, int], data_root: str | None
    ):
        super().__init__()
        self.cache = cache
        self.teacher_dim = cache.teacher_dim
        self.grid = tuple(grid)
        self.data_root = data_root

    def targets(self, batch: dict, video: torch.Tensor) -> torch.Tensor:
        return batch["latents"].to(video.device, torch.float32, non_blocking=True)

    def dataset(self, cfg: Config, split: str) -> CachedDataset:
        return CachedDataset(self.cache, cfg, self.data_root)


def _check_geometry(cache: LatentCache, cfg: Config, spec: str) -> None:
    meta, data = cache.meta, cfg.data
    for key, have in (("num_frames", data.num_frames), ("image_size", data.image_size)):
        if meta[key] != have:
            raise ValueError(
                f"teacher {spec!r} was cached from {meta['num_frames']}-frame clips at "
                f"{meta['image_size']}px, but data.{key}={have}; train with "
                f"--set data.{key}={meta[key]} (or --profile recipe)"
            )
    if (
        meta["data_kind"] != "synthetic"
        and meta["frame_step"] != data.frame_step
        and not meta.get("fps")
    ):
        raise ValueError(
            f"teacher {spec!r} was cached at frame_step {meta['frame_step']} but "
            f"data.frame_step={data.frame_step}; set --set data.frame_step={meta['frame_step']}"
        )


def _cached(arg: str | None, cfg: Config) -> CachedTeacher:
    if not arg:
        raise ValueError("teacher 'cached' needs a cache name or directory, e.g. cached:v1huge")
    cache = open_cache(resolve_cache(arg))
    spec = f"cached:{arg}"
    # --data relocates the videos; the default 'synthetic' means "where the cache says".
    data_root = None if cfg.data.spec.split(":")[0] == "synthetic" else cfg.data.spec
    if isinstance(cache, LatentCache):
        _check_geometry(cache, cfg, spec)
        return CachedTeacher(cache, cache.grid, data_root)
    tokens = math.prod(cfg.grid)
    if cache.latent_shape[0] != tokens:
        raise ValueError(
            f"teacher {spec!r} (older layout) holds {cache.latent_shape[0]} latents per clip, but "
            f"the student's clips make {tokens} tokens (grid {cfg.grid}); match data.num_frames "
            f"and data.image_size to the cache"
        )
    return CachedTeacher(cache, cfg.grid, data_root)


@hookimpl
def register_teachers(register):
    register(
        "cached",
        _cached,
        "latents from `salt cache build` (cached:NAME or cached:DIR); loads no model",
    )
