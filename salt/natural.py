"""The motion benchmark with natural image statistics: ``motion-natural[:N]``.

The same 14 classes, the same cast and the same motion as :mod:`salt.motion` - clip ``i``
of ``motion-natural`` moves exactly as clip ``i`` of ``motion`` - but every surface is cut
from a photograph: the background is a crop of one photo, each object and distractor is
filled with a patch of another (carried with the object as it moves, turns or grows), and
the occluding bar with a third. The photos are scikit-image's sample images, read from its
installed package (never downloaded): people, a cat, coffee, coins, a rocket, brick, grass,
gravel, the moon, a retina, a stained tissue slide, a motorcycle, deep space.

Appearance stays independent of the class - the photos and crops are drawn from their own
random stream, the same way for every class - so a single frame still says nothing about
the class (``tests/test_motion.py`` checks it as it does for ``motion``).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from salt.motion import MotionClasses

# Photos of scikit-image's data folder (BSD-3 or public domain, per its README): the ones
# of a real scene or surface, not charts, text or synthetic test patterns.
PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
BANK_SIZE = 256  # each photo is kept as a BANK_SIZE x BANK_SIZE float32 RGB array


class PhotosMissing(RuntimeError):
    """scikit-image (whose wheel ships the photos) is not installed."""


def photo_folder() -> Path:
    """scikit-image's data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise PhotosMissing(
            "motion-natural draws its textures from scikit-image's sample photos, and "
            "scikit-image is not installed: pip install scikit-image"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def photo_bank() -> tuple[np.ndarray, ...]:
    """Every photo as ``float32 [BANK_SIZE, BANK_SIZE, 3]`` (a centre square, resized),
    loaded once per process."""
    from PIL import Image

    folder = photo_folder()
    bank = []
    for name in PHOTOS:
        path = folder / name
        if not path.is_file():
            raise PhotosMissing(
                f"{path} is missing: reinstall scikit-image (pip install scikit-image)"
            )
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
            image = image.resize((BANK_SIZE, BANK_SIZE), Image.Resampling.BILINEAR)
            bank.append(np.asarray(image, dtype=np.float32))
    return tuple(bank)


def _mirror(coord: np.ndarray) -> np.ndarray:
    """Integer pixel indices into [0, BANK_SIZE), reflected at the edges (so a texture
    sampled past its crop continues without a seam)."""
    period = 2 * BANK_SIZE
    m = np.floor(coord).astype(np.int64) % period
    return np.where(m >= BANK_SIZE, period - 1 - m, m)


def sample(texture: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``float32 [..., 3]``: ``texture`` (a photo, a window on it and a colour gain) at
    texture coordinates ``(y, x)``, where 1.0 spans the window."""
    photo = photo_bank()[texture["photo"]]
    span = texture["scale"] * BANK_SIZE
    rows = _mirror(texture["top"] * BANK_SIZE + y * span)
    cols = _mirror(texture["left"] * BANK_SIZE + x * span)
    return photo[rows, cols] * texture["gain"]


class NaturalMotionClasses(MotionClasses):
    """``motion``'s clips, with photo textures on every surface."""

    kind = "motion-natural"

    def params(self, index: int) -> dict:
        p = super().params(index)
        # Textures from their own stream: the cast and motion are motion's clip ``index``.
        rng = np.random.default_rng([self.seed, index, 2000])
        photos = rng.permutation(len(PHOTOS))

        def texture(k: int, scale: tuple[float, float]) -> dict:
            return _window(rng, int(photos[k % len(photos)]), scale)

        p["background"] = {"texture": texture(0, (0.5, 1.0))}
        p["bar"]["texture"] = texture(1, (0.3, 0.6))
        p["a"]["texture"] = texture(2, (0.2, 0.4))
        p["b"]["texture"] = texture(3, (0.2, 0.4))
        for k, thing in enumerate(p["distractors"]):
            thing["texture"] = texture(4 + k, (0.1, 0.3))
        return p

    def new_background(self, rng: np.random.Generator) -> dict:
        return {"texture": _window(rng)}

    def paint_background(self, spec: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return sample(spec["texture"], y, x)

    def paint_object(self, image, thing, mask, u, v) -> None:
        # Object coordinates: the texture turns, grows and travels with the object.
        image[mask] = sample(thing["texture"], (v[mask] + 1) / 2, (u[mask] + 1) / 2)

    def paint_bar(self, image, bar, inside, y, dx) -> None:
        image[inside] = sample(bar["texture"], y[inside], dx[inside] / bar["width"] + 0.5)


def _window(
    rng: np.random.Generator, photo: int | None = None, scale: tuple[float, float] = (0.5, 1.0)
) -> dict:
    """A texture: a photo (drawn when None), a square window inside it (``scale`` of its
    side) and a colour gain per channel."""
    if photo is None:
        photo = int(rng.integers(len(PHOTOS)))
    side = float(rng.uniform(*scale))
    return {
        "photo": photo,
        "top": float(rng.uniform(0, 1 - side)),
        "left": float(rng.uniform(0, 1 - side)),
        "scale": side,
        "gain": rng.uniform(0.75, 1.25, 3).astype(np.float32),
    }
