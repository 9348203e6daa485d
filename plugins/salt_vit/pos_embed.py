"""Position embeddings over a (T, H, W) token grid: fixed sine-cosine tables, and the
resampling of a learned table to another grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine features ``[len(positions), dim]`` for ``dim`` even."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Position embeddings ``[T*H*W, dim]`` in (t, h, w) raster order.

    The width is split into three even parts for height, width and time; time takes the
    remainder so any ``dim`` divisible by 2 works.
    """
    t, h, w = grid
    part = 2 * ((dim // 3) // 2)
    dim_t = dim - 2 * part
    if part == 0 or dim_t % 2:
        raise ValueError(f"3-D sin-cos embedding needs an even width >= 6, got {dim}")
    gt, gh, gw = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat(
        [
            sincos_1d(dim_t, gt.reshape(-1)),
            sincos_1d(part, gh.reshape(-1)),
            sincos_1d(part, gw.reshape(-1)),
        ],
        dim=1,
    )
    return emb.float()


def resample_3d(
    table: torch.Tensor, grid: tuple[int, int, int], new_grid: tuple[int, int, int]
) -> torch.Tensor:
    """A table ``[B, T*H*W, D]`` on ``grid`` resampled trilinearly to ``new_grid`` (in float32,
    returned in the table's dtype), as a learned table is stretched to other clip sizes."""
    b, n, d = table.shape
    if n != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"a table of {n} positions is not on a {grid} grid")
    volume = table.float().reshape(b, *grid, d).permute(0, 4, 1, 2, 3)  # [B, D, T, H, W]
    volume = F.interpolate(volume, size=tuple(new_grid), mode="trilinear", align_corners=False)
    return volume.flatten(2).transpose(1, 2).to(table.dtype)
