"""Reading a built cache: its splits, per-sample views and memory-mapped latents, each row
checked against its CRC-32 as it is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from salt.cache.index import (
    INDEX,
    V1_INDEX,
    CacheError,
    CacheIndex,
    IncompleteCacheError,
    LatentMeta,
    MissingSplitError,
    read_shard_records,
)
from salt.cache.shards import KEYS_INT8, row_checksum, sha256
from salt.io import first_line
from salt.quant import QuantizedLatents
from salt.video import View


class LatentCache(LatentMeta):
    """A built cache: metadata, its splits, per-sample views and memory-mapped latent reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if (self.path / INDEX).is_file():
            self.index = CacheIndex.read(self.path)
            self.shards = read_shard_records(self.path)
        elif (self.path / V1_INDEX).is_file():
            from salt.cache.legacy import read_v1  # legacy.py builds on this module

            self.index, self.shards = read_v1(self.path)
        else:
            raise FileNotFoundError(f"{str(self.path)!r} is not a latent cache: {INDEX} is missing")
        self.meta: dict[str, Any] = self.index.meta
        # (shard number, row) of every sample, grouped by split in build order.
        self._rows: dict[str, list[tuple[int, int]]] = {}
        for number, shard in enumerate(self.shards):
            rows = self._rows.setdefault(shard.split, [])
            rows.extend((number, row) for row in range(shard.rows))
        self._handles: dict[int, Any] = {}
        self._verified: set[int] = set()  # shards whose SHA-256 this process has checked

    def __getstate__(self):  # DataLoader workers reopen the memory maps themselves
        state = dict(self.__dict__)
        state["_handles"] = {}
        state["_verified"] = set()
        return state

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.meta["grid"])

    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        """Each split's data and completeness (``cache.json``'s ``splits``)."""
        return self.index.splits

    @property
    def skipped(self) -> list[str]:
        """Why each clip that could not be read was left out, over all splits."""
        return [message for s in self.shards for message in s.skipped]

    def split(self, name: str) -> CacheSplit:
        """The samples of one split; a split the cache lacks is a clear error."""
        if name not in self.splits:
            have = ", ".join(sorted(self.splits)) or "none"
            raise MissingSplitError(
                f"cache {self.path} holds no {name!r} split (it has: {have}); build one with "
                f"`salt cache build --split {name} --data HELD_OUT_DATA` into the same cache"
            )
        return CacheSplit(self, name, self._rows.get(name, []))

    def _shard(self, number: int):
        handle = self._handles.get(number)
        if handle is None:
            shard = self.shards[number]
            file = self.path / shard.file
            if shard.row_crc32 is None and number not in self._verified:
                # No row checksums (an older record): check the whole shard once.
                if not file.is_file() or sha256(file) != shard.sha256:
                    raise CacheError(_damaged(file, "does not match its recorded checksum"))
                self._verified.add(number)
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as err:  # SafetensorError, OSError: missing, truncated, damaged
                raise CacheError(_damaged(file, first_line(err))) from None
            self._handles[number] = handle
        return handle

    def read(self, number: int, row: int, key: str = "latents") -> torch.Tensor:
        """Row ``row`` of a shard's ``latents`` (or ``clips``): a memory-mapped slice, checked
        against the row's recorded CRC-32 before it is returned."""
        shard = self.shards[number]
        try:
            tensor = self._shard(number).get_slice(key)[row]
        except CacheError:
            raise
        except Exception as err:
            raise CacheError(_damaged(self.path / shard.file, first_line(err))) from None
        crcs = (shard.row_crc32 or {}).get(key)
        if crcs is not None and row_checksum(tensor) != crcs[row]:
            raise CacheError(
                _damaged(self.path / shard.file, f"row {row} of {key!r} fails its checksum")
            )
        return tensor

    def incomplete(self) -> dict[str, str]:
        """Split -> why it is not complete (a build that did not finish), for every such split."""
        found = {}
        for name, info in self.splits.items():
            done = sum(s.rows + len(s.skipped) for s in self.shards if s.split == name)
            if not info.get("complete") or done < info.get("total", done):
                found[name] = (
                    f"split {name!r}: {done} of {info.get('total', '?')} clips cached; the build "
                    f"did not finish - run the same `salt cache build` again to complete it"
                )
        return found


def _damaged(file: Path, why: str) -> str:
    return (
        f"{file} is damaged: {why}; `salt cache verify` lists every problem - rebuild it "
        f"(delete the shard and its .json record, then run the same `salt cache build`)"
    )


class CacheSplit:
    """One split of a cache, indexed 0..len-1 in build order."""

    def __init__(self, cache: LatentCache, name: str, rows: list[tuple[int, int]]):
        self.cache = cache
        self.name = name
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def info(self) -> dict[str, Any]:
        """The data this split was computed from (``data_spec``, ``data_root``, ...)."""
        return self.cache.splits[self.name]

    @property
    def stores_clips(self) -> bool:
        """Whether every clip is stored with its latents (nothing to decode)."""
        return bool(self.cache.meta.get("store_clips"))

    def sample(self, i: int) -> dict:
        """Sample ``i``'s stored record: its view, label (and ``video_id`` if imported)."""
        number, row = self.rows[i]
        return self.cache.shards[number].samples[row]

    def latents(self, i: int) -> torch.Tensor | QuantizedLatents:
        """Sample ``i``'s latents ``[N, D]`` in the stored dtype (int8 ones as codes and
        scales: the loop dequantizes them on its device)."""
        if self.cache.quantized:
            return QuantizedLatents(*(self.cache.read(*self.rows[i], key=k) for k in KEYS_INT8))
        return self.cache.read(*self.rows[i])

    def clip(self, i: int) -> torch.Tensor | None:
        """Sample ``i``'s stored clip ``uint8 [T, C, H, W]``, if the cache stores clips."""
        if not self.stores_clips:
            return None
        return self.cache.read(*self.rows[i], key="clips")

    def view(self, i: int) -> View:
        return View.from_dict(self.sample(i)["view"])

    def incomplete(self) -> str | None:
        """Why this split is not complete (its build did not finish), or None."""
        return self.cache.incomplete().get(self.name)

    def check_complete(self, allow: bool = False) -> str | None:
        """Refuse this split when its build did not finish - unless ``allow``: then say why
        it is incomplete (None when it is complete)."""
        why = self.incomplete()
        if why is not None and not allow:
            raise IncompleteCacheError(
                f"cache {self.cache.path} is incomplete - {why}; or pass "
                f"--allow-incomplete (data.allow_incomplete_cache=true) to use the "
                f"{len(self)} clips it has"
            )
        return why

    def label(self, i: int) -> int:
        label = self.sample(i).get("label", -1)
        return label if isinstance(label, int) else -1


def quantization_error(cache: LatentCache) -> float | None:
    """An int8 cache's relative MSE against the fp16 latents it replaces (sum of squared
    errors over sum of squares, over every shard that recorded them); None otherwise."""
    errors = [s.quant_error for s in cache.shards if s.quant_error]
    if not cache.quantized or not errors:
        return None
    reference = sum(e[1] for e in errors)
    return sum(e[0] for e in errors) / reference if reference > 0 else 0.0
