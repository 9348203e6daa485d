"""Shard files: their names, atomic writes, each row's CRC-32 and the int8 encoding.

A shard is ``shard_NNNNN.safetensors`` (its tensors) plus ``shard_NNNNN.json`` (its
:class:`~salt.cache.index.ShardRecord`), written in that order.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import torch

from salt.cache.index import DTYPES, ShardRecord
from salt.io import atomic_write_bytes, write_json
from salt.quant import quantize, squared_error

KEYS_INT8 = ("latents", "token_scale", "channel_scale")  # an int8 shard's tensors


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def shard_name(number: int) -> str:
    """``shard_00012.safetensors``: shards are numbered across splits in build order."""
    return f"shard_{number:05d}.safetensors"


def shard_number(file: str) -> int:
    """The number in a shard's file name (``shard_00012.safetensors`` -> 12)."""
    return int(Path(file).name.split("_")[1].split(".")[0])


def row_checksum(row: torch.Tensor) -> int:
    """CRC-32 of one stored row's bytes (``zlib``: ~GB/s, catches any flipped byte)."""
    return zlib.crc32(row.contiguous().view(torch.uint8).numpy())


def encode_latents(
    latents: torch.Tensor, dtype: str
) -> tuple[dict[str, torch.Tensor], list[float] | None]:
    """The tensors a shard stores for ``latents [rows, N, D]`` in ``dtype`` and, for int8,
    ``[sum (x - x_hat)^2, sum x^2]`` against the fp16 latents it replaces."""
    if dtype != "int8":
        return {"latents": latents.to(DTYPES[dtype])}, None
    q = quantize(latents)
    return q.tensors(), list(squared_error(latents.to(torch.float16), q))


def write_shard(
    out: Path,
    number: int,
    split: str,
    tensors: dict[str, torch.Tensor],
    samples: list[dict],
    skipped: list[str],
    quant_error: list[float] | None = None,
) -> ShardRecord:
    """Atomically write a shard's tensors, then its record (the record marks it complete)."""
    from safetensors.torch import save

    name = shard_name(number)
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / name, lambda f: f.write(data))
    crcs = {k: [row_checksum(row) for row in v] for k, v in tensors.items()}
    digest = hashlib.sha256(data).hexdigest()
    record = ShardRecord(name, split, digest, samples, skipped, crcs, quant_error)
    write_json(out / record.record_path, record.to_dict())
    return record
