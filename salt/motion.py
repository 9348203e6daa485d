"""The built-in labelled benchmark: 14 classes that only motion tells apart.

A Something-Something in miniature. Every clip holds the same cast - a textured background,
an occluding bar, two asymmetric objects ``A`` and ``B`` and up to two distractors - and its
class decides only what moves and how:

====  ==============  ==============================================================
  0   right           A travels right (camera and everything else still)
  1   left            A travels left
  2   up              A travels up
  3   down            A travels down
  4   clockwise       A turns clockwise about its centre
  5   anticlockwise   A turns anticlockwise
  6   grow            A grows
  7   shrink          A shrinks
  8   approach        A and B move towards each other
  9   separate        A and B move apart
 10   uncover         the bar slides off A
 11   cover           the bar slides over A
 12   pan-right       the camera pans right: the whole scene slides left
 13   pan-left        the camera pans left: the whole scene slides right
====  ==============  ==============================================================

Classes ``2k`` and ``2k + 1`` are each other's time reversal. Appearance is drawn
independently of the class - background texture, colours, shapes, sizes, distractors,
pixel noise, camera shake - and the first frame of every class comes from one and the same
distribution: A is always partly behind the bar (a random share of it), B always at a
random distance from A, sizes and orientations always from the same ranges. So a single
frame says nothing about the class; ``tests/test_motion.py`` checks that a probe on the
first frame repeated scores chance.

Every clip is a pure function of (seed, index): the class is ``index % 14`` (balanced), the
appearance comes from ``numpy.random.default_rng([seed, index])``, so splits drawn with
different seeds share no appearance. Motion is defined per source frame (a clip of 16
frames 4 apart spans 64 source frames), so any clip geometry works.
"""

from __future__ import annotations

import math

import numpy as np

from salt.synthetic import ProceduralClips

CLASSES = (
    "right",
    "left",
    "up",
    "down",
    "clockwise",
    "anticlockwise",
    "grow",
    "shrink",
    "approach",
    "separate",
    "uncover",
    "cover",
    "pan-right",
    "pan-left",
)
SPAN = 64  # source frames over which one "unit" of motion (the drawn amount) happens
SHAPES = ("triangle", "ell", "tee", "keyhole")  # none is symmetric under rotation


def reversal(label: int) -> int:
    """The class whose clips are this class's clips played backwards."""
    return label ^ 1


class MotionClasses(ProceduralClips):
    """Clips ``uint8 [T, C, H, W]`` of the 14 motion classes, labelled."""

    kind = "motion"
    classes = CLASSES

    def label(self, index: int) -> int:
        return index % len(CLASSES)

    def params(self, index: int) -> dict:
        """Everything a clip is drawn from: its class, the cast and the motion amounts."""
        if not 0 <= index < self.length:
            raise IndexError(f"motion clip {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, index])

        def thing(size_range):
            return {
                "shape": SHAPES[int(rng.integers(len(SHAPES)))],
                "colour": rng.uniform(20, 235, 3),
                "size": float(rng.uniform(*size_range)),
                "angle": float(rng.uniform(0, 2 * math.pi)),
            }

        a = {**thing((0.1, 0.16)), "pos": rng.random(2)}  # (y, x) on a torus
        b = thing((0.09, 0.14))
        towards = rng.uniform(0, 2 * math.pi)
        distance = float(rng.uniform(0.32, 0.42))
        b["pos"] = (a["pos"] + distance * np.array([math.sin(towards), math.cos(towards)])) % 1
        side = 1 if rng.random() < 0.5 else -1  # the bar lies right (+1) or left (-1) of A
        covered = float(rng.uniform(0.1, 0.5))  # share of A's width behind the bar at t=0
        width = float(rng.uniform(0.14, 0.22))
        edge = a["pos"][1] + side * a["size"] * (1 - 2 * covered)  # the bar's edge facing A
        bar = {
            "centre": (edge + side * width / 2) % 1,
            "width": width,
            "colour": rng.uniform(20, 235, 3),
            "stripes": float(rng.uniform(8, 20)),
            "side": side,
        }
        waves = _waves(rng)  # the background as new_background draws it, but interleaved
        return {  # with the distractors: every motion clip stays what it always was
            "label": self.label(index),
            "a": a,
            "b": b,
            "bar": bar,
            "distractors": [
                {**thing((0.04, 0.08)), "pos": rng.random(2)} for _ in range(int(rng.integers(3)))
            ],
            "background": {
                "base": float(rng.uniform(70, 180)),
                "tint": rng.uniform(-30, 30, 3),
                "waves": waves,
            },
            "amount": float(rng.uniform(0.35, 0.5)),  # travel, in image widths per SPAN
            "turn": float(rng.uniform(0.75, 1.25)) * math.pi,  # radians per SPAN
            "growth": float(rng.uniform(2.2, 3.0)),  # size factor per SPAN
            "closing": float(rng.uniform(0.16, 0.22)),  # change of A-B distance per SPAN
            "noise": float(rng.uniform(0, 8)),
            "shake": float(rng.uniform(0, 0.006)),
            "shake_draws": rng.normal(size=(self.num_frames, 2)),
            "noise_seed": int(rng.integers(1 << 31)),
        }

    def render(self, index: int, frames: np.ndarray | None = None, scene: int = 0) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` at the given source-frame numbers (default: the clip's).

        ``scene`` > 0 keeps the clip's cast and motion but draws another background: the
        same event filmed in another place."""
        p = self.params(index)
        if scene:
            p["background"] = self.new_background(
                np.random.default_rng([self.seed, index, 1000 + scene])
            )
        if frames is None:
            frames = np.arange(self.num_frames) * self.frame_step
        size = self.image_size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        draws = p["shake_draws"]
        shakes = [p["shake"] * draws[k % len(draws)] for k in range(len(frames))]
        # Every frame at once, [T, H, W]: each pixel's value is what a frame-by-frame
        # render computes (the same float operations, in the same order), only vectorized.
        # A per-frame number joins the arrays in the dtype the same number as a scalar
        # would (float64 once shaken under NumPy 2's promotion, float32 under NumPy 1's).
        dtype = np.result_type(yy, shakes[0][0]) if shakes else yy.dtype
        y = yy + _per_frame([s[0] for s in shakes], dtype)
        x = xx + _per_frame([s[1] for s in shakes], dtype)
        out = self._frames(p, [float(frame) / SPAN for frame in frames], y, x)
        if p["noise"] > 0:
            noise = np.random.default_rng(p["noise_seed"])
            out += noise.normal(scale=p["noise"], size=out.shape).astype(np.float32)
        return out.clip(0, 255).astype(np.uint8)

    def _frames(self, p: dict, times: list[float], y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The frames ``float32 [T, H, W, 3]`` at clip times ``times`` (in SPANs), from each
        pixel's shaken coordinates ``y, x [T, H, W]``."""
        moved = [_moved(p, t) for t in times]
        x = x + _per_frame([m["pan"] for m in moved], x.dtype)  # the world coordinates shown
        image = self.paint_background(p["background"], y, x)
        # Painted in this order, each over the last; the distractors keep one pose, B and A
        # have one per frame.
        cast = [(thing, [thing]) for thing in p["distractors"]]
        cast += [(p[key], [m[key] for m in moved]) for key in ("b", "a")]
        for thing, poses in cast:
            self.paint_object(image, thing, *_placed(poses, y, x))
        bar = p["bar"]
        dx = _wrap(x - _per_frame([m["bar_centre"] for m in moved], x.dtype))
        inside = np.abs(dx) <= bar["width"] / 2
        self.paint_bar(image, bar, inside, y, dx)
        return image

    # How surfaces look; ``salt.natural`` paints them with photos instead.
    def new_background(self, rng: np.random.Generator) -> dict:
        """A background's appearance, drawn from ``rng``."""
        waves = _waves(rng)
        return {
            "base": float(rng.uniform(70, 180)),
            "tint": rng.uniform(-30, 30, 3),
            "waves": waves,
        }

    def paint_background(self, spec: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The background ``float32 [..., 3]`` at world coordinates ``(y, x)`` (``[...]``:
        the frames and pixels, ``[T, H, W]``)."""
        return _background(spec, y, x)

    def paint_object(self, image, thing, mask, u, v) -> None:
        """Fill ``mask`` (the object's pixels; ``u, v`` its own coordinates) in ``image``."""
        image[mask] = np.asarray(thing["colour"], dtype=np.float32)

    def paint_bar(self, image, bar, inside, y, dx) -> None:
        """Fill the bar's pixels ``inside`` (``dx``: offset from its centre line)."""
        # Only the bar's own pixels: the stripes' sine is most of a frame's cost.
        stripes = 0.85 + 0.15 * np.sign(np.sin(2 * math.pi * bar["stripes"] * y[inside]))
        image[inside] = (bar["colour"][None, :] * stripes[:, None]).astype(np.float32)


def _waves(rng: np.random.Generator) -> list[tuple[int, int, float, float]]:
    """Three plane waves (frequencies, amplitude, phase) of a background texture."""
    waves = []
    for _ in range(3):
        fy, fx = (0, 0)
        while (fy, fx) == (0, 0):  # integer frequencies keep the texture periodic
            fy, fx = (int(v) for v in rng.integers(-4, 5, 2))
        waves.append((fy, fx, float(rng.uniform(8, 30)), float(rng.uniform(0, 2 * math.pi))))
    return waves


def _background(spec: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A periodic texture of three plane waves, tinted ``float32 [..., 3]``."""
    gray = np.full(y.shape, spec["base"], dtype=np.float32)
    for fy, fx, amp, phase in spec["waves"]:
        gray += amp * np.sin(2 * math.pi * (fy * y + fx * x) + phase)
    return gray[..., None] + np.asarray(spec["tint"], dtype=np.float32)[None, None, :]


def _moved(p: dict, t: float) -> dict:
    """What the class moves, at clip time ``t``: the pan, A and B (position, angle, size)
    and the bar's centre."""
    label, amount = p["label"], p["amount"] * t
    a, b, bar = dict(p["a"]), dict(p["b"]), dict(p["bar"])
    pan = {12: amount, 13: -amount}.get(label, 0.0)
    moves = {0: (0, 1), 1: (0, -1), 2: (-1, 0), 3: (1, 0)}
    if label in moves:
        a["pos"] = a["pos"] + amount * np.array(moves[label])
    elif label in (4, 5):
        a["angle"] += p["turn"] * t * (1 if label == 4 else -1)
    elif label in (6, 7):
        a["size"] *= p["growth"] ** (t if label == 6 else -t)
    elif label in (8, 9):
        axis = _wrap(b["pos"] - a["pos"])
        axis = axis / max(np.linalg.norm(axis), 1e-6)
        step = p["closing"] * t / 2 * (1 if label == 9 else -1)
        a["pos"], b["pos"] = a["pos"] - step * axis, b["pos"] + step * axis
    elif label in (10, 11):  # the bar slides away from A (uncover) or over it (cover)
        bar["centre"] += bar["side"] * amount * (1 if label == 10 else -1)
    return {"pan": pan, "a": a, "b": b, "bar_centre": bar["centre"]}


def _per_frame(values: list, dtype) -> np.ndarray:
    """Per-frame numbers as ``[T, 1, 1]``, to broadcast against ``[T, H, W]`` (a single
    pose - a still object - stays one number for every frame)."""
    return np.asarray(values, dtype=dtype).reshape(-1, 1, 1)


def _wrap(d: np.ndarray) -> np.ndarray:
    """``(d + 0.5) % 1 - 0.5``, in place on a temporary: the offset on the torus, in
    [-0.5, 0.5). ``w - floor(w)`` is exactly what ``w % 1`` gives (both the fraction of
    ``w``, rounded once) at a fraction of its cost."""
    w = d + 0.5
    w -= np.floor(w)
    w -= 0.5
    return w


def _placed(poses: list[dict], y: np.ndarray, x: np.ndarray):
    """An object's pixels (its shape at each frame's position, size and angle: ``poses``,
    one per frame, or one for all) and its own coordinates ``u`` (along its axis) and
    ``v``, in units of its size."""
    dtype = y.dtype
    dy = _wrap(y - _per_frame([pose["pos"][0] for pose in poses], dtype))
    dx = _wrap(x - _per_frame([pose["pos"][1] for pose in poses], dtype))
    c = _per_frame([math.cos(pose["angle"]) for pose in poses], dtype)
    s = _per_frame([math.sin(pose["angle"]) for pose in poses], dtype)
    size = _per_frame([pose["size"] for pose in poses], dtype)
    u = (c * dx + s * dy) / size
    v = (-s * dx + c * dy) / size
    return _shape(poses[0]["shape"], u, v), u, v


def _shape(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit-size masks; each has a single orientation (no rotational symmetry)."""
    if name == "triangle":  # a pointed triangle along +u
        return (u >= -0.7) & (u <= 0.9) & (np.abs(v) <= 0.6 * (0.9 - u) / 1.6)
    if name == "ell":
        return ((np.abs(u) <= 0.8) & (v >= -0.8) & (v <= -0.35)) | (
            (u >= -0.8) & (u <= -0.35) & (np.abs(v) <= 0.8)
        )
    if name == "tee":
        return ((u >= 0.35) & (u <= 0.8) & (np.abs(v) <= 0.8)) | (
            (np.abs(v) <= 0.22) & (np.abs(u) <= 0.8)
        )
    # keyhole: a disc with a bar sticking out along +u
    return (u**2 + v**2 <= 0.25) | ((u >= 0) & (u <= 0.95) & (np.abs(v) <= 0.18))
