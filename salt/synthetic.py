"""The built-in procedural dataset: a shape moving over a textured background.

Every clip is a pure function of (seed, index), so the data needs no download, any size
or frame count works, and the motion labels (direction, speed) give temporal probes
ground truth.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

DIRECTIONS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
SPEEDS = (0.004, 0.008, 0.016)  # image widths per source frame
SHAPES = ("disc", "square", "triangle")
COLOURS = (
    (230, 60, 50),
    (50, 180, 70),
    (40, 90, 230),
    (240, 200, 40),
    (200, 60, 200),
    (40, 200, 210),
)


class ProceduralClips(Dataset):
    """Clips that are a pure function of (seed, index), at any geometry: the built-in data.

    Subclasses implement ``render(index, frames) -> uint8 [T, H, W, 3]`` and
    ``label(index)``; ``kind`` names them in data specs and view sources (``kind/N``)."""

    kind = "procedural"

    def __init__(
        self,
        length: int = 2048,
        num_frames: int = 16,
        image_size: int = 224,
        frame_step: int = 4,
        seed: int = 0,
    ):
        if length < 1:
            raise ValueError(f"{self.kind} dataset length must be >= 1, got {length}")
        self.length = length
        self.num_frames = num_frames
        self.image_size = image_size
        self.frame_step = frame_step
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def frames(self) -> tuple[int, ...]:
        """The source-frame numbers of a clip."""
        return tuple(range(0, self.num_frames * self.frame_step, self.frame_step))

    def clip(self, index: int) -> torch.Tensor:
        """Clip ``index`` as ``uint8 [T, C, H, W]``."""
        return torch.from_numpy(self.render(index)).permute(0, 3, 1, 2).contiguous()

    def render(self, index: int, frames: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError


class SyntheticMotion(ProceduralClips):
    """Clips ``uint8 [T, C, H, W]`` of one shape moving in a straight line (wrapping at edges)."""

    kind = "synthetic"
    label_names = {"direction": DIRECTIONS, "speed": SPEEDS, "shape": SHAPES, "colour": COLOURS}

    def label(self, index: int) -> int:
        """The direction of travel."""
        return self.params(index)["direction"]

    def params(self, index: int) -> dict:
        """The clip's generating parameters (labels included)."""
        if not 0 <= index < self.length:
            raise IndexError(f"synthetic clip {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, index])
        return {
            "direction": int(rng.integers(len(DIRECTIONS))),
            "speed": int(rng.integers(len(SPEEDS))),
            "shape": int(rng.integers(len(SHAPES))),
            "colour": int(rng.integers(len(COLOURS))),
            "start": rng.random(2),
            "radius": float(rng.uniform(0.1, 0.16)),
            "texture": rng.normal(size=(3, 4)),
        }

    def render(self, index: int, frames: np.ndarray | None = None, scene: int = 0) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` for the given source-frame numbers (default: the clip's).

        ``scene`` > 0 keeps the clip's motion and shape but draws another background: the
        same event filmed in another place."""
        p = self.params(index)
        if scene:
            p["texture"] = np.random.default_rng([self.seed, index, 1000 + scene]).normal(
                size=(3, 4)
            )
        size = self.image_size
        if frames is None:
            frames = np.arange(self.num_frames) * self.frame_step
        coords = (np.arange(size) + 0.5) / size
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        background = _texture(p["texture"], yy, xx)
        angle = 2 * math.pi * p["direction"] / len(DIRECTIONS)
        velocity = SPEEDS[p["speed"]] * np.array([-math.sin(angle), math.cos(angle)])  # (dy, dx)
        centres = (p["start"][None, :] + frames[:, None] * velocity[None, :]) % 1.0  # [T, 2]
        # Toroidal offsets so a shape leaving one edge re-enters at the other.
        dy = (yy[None] - centres[:, 0, None, None] + 0.5) % 1.0 - 0.5
        dx = (xx[None] - centres[:, 1, None, None] + 0.5) % 1.0 - 0.5
        inside = _shape_mask(SHAPES[p["shape"]], dy, dx, p["radius"])  # [T, H, W]
        colour = np.array(COLOURS[p["colour"]], dtype=np.float32)
        clip = np.where(inside[..., None], colour, background[None])
        return clip.astype(np.uint8)

    def __getitem__(self, index: int) -> dict:
        p = self.params(index)
        clip = self.clip(index)
        labels = {k: p[k] for k in ("direction", "speed", "shape", "colour")}
        return {"video": clip, "label": p["direction"], "labels": labels}


def _texture(coeffs: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A static, low-frequency, muted background ``float32 [H, W, 3]``."""
    wave = (
        coeffs[0, 0] * np.sin(2 * math.pi * (xx + coeffs[1, 0]))
        + coeffs[0, 1] * np.sin(2 * math.pi * (yy + coeffs[1, 1]))
        + coeffs[0, 2] * np.sin(4 * math.pi * (xx + yy + coeffs[1, 2]))
    )
    base = 110 + 18 * wave
    tint = 12 * coeffs[2, :3]
    return (base[..., None] + tint[None, None, :]).clip(0, 255).astype(np.float32)


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    # An upward triangle: below the two slanted edges and above the base.
    return (dy <= 0.7 * r) & (dy >= -r + 2 * np.abs(dx))
