"""Curves drawn with PIL: panels of (step, value) lines -> ``uint8 [H, W, 3]`` images or PNGs.

One drawing core, :func:`draw_panels`. The two figures only build panels for it:
:func:`draw_losses_per_run` (the quick start's: one loss panel per run, each on its own y
scale) and :func:`draw_runs_overlaid` (the viewer's: one panel per quantity, runs overlaid,
each loss's minimum circled and a rebound after it annotated). Pillow is imported only when
drawing, so the palette can be imported without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import numpy as np

Colour = tuple[int, int, int]
Points = Sequence[tuple[int, float]]  # (step, value), in step order

# One colour per run (and per mask group in the viewer), cycling when there are more.
PALETTE: tuple[Colour, ...] = (
    (230, 60, 50),
    (40, 110, 240),
    (40, 180, 80),
    (240, 170, 20),
    (170, 60, 210),
    (20, 190, 200),
)
GRID = (225, 225, 225)
# Room around a panel's plot box for its title, tick labels and the "step" label.
MARGIN_LEFT, MARGIN_TOP, MARGIN_RIGHT, MARGIN_BOTTOM = 64, 30, 16, 40
LEGEND_ROW = 18  # pixels per legend entry


@attrs.frozen
class Line:
    """One curve: its legend label, its colour and its points."""

    label: str
    colour: Colour
    points: Points


@attrs.frozen
class Panel:
    """One plot box: a title and lines sharing its x and y scales."""

    title: str
    lines: Sequence[Line] = ()
    markers: bool = False  # a dot on every point
    mark_minimum: bool = False  # circle each line's minimum; annotate a rebound after it


def colour_of(index: int) -> Colour:
    """The palette colour of the ``index``-th run, cycling."""
    return PALETTE[index % len(PALETTE)]


def draw_panels(
    panels: Sequence[Panel],
    columns: int = 1,
    panel_size: tuple[int, int] = (480, 360),
    legend: Sequence[tuple[str, Colour]] = (),
) -> np.ndarray:
    """Panels on a grid of ``columns``, under an optional legend; ``uint8 [H, W, 3]``."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("nothing to plot: no panels were given")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    width, height = panel_size
    rows = -(-len(panels) // columns)
    top = LEGEND_ROW * len(legend) + 10 if legend else 0
    image = Image.new("RGB", (width * min(columns, len(panels)), top + height * rows), "white")
    draw = ImageDraw.Draw(image)
    for i, (label, colour) in enumerate(legend):
        y = 6 + LEGEND_ROW * i
        draw.rectangle([MARGIN_LEFT, y, MARGIN_LEFT + 12, y + 12], fill=colour)
        draw.text((MARGIN_LEFT + 18, y), label, fill="black")
    for p, panel in enumerate(panels):
        x, y = (p % columns) * width, top + (p // columns) * height
        box = (
            x + MARGIN_LEFT,
            y + MARGIN_TOP,
            x + width - MARGIN_RIGHT,
            y + height - MARGIN_BOTTOM,
        )
        _draw_panel(draw, box, panel)
    return np.array(image)


def _draw_panel(draw, box: tuple[int, int, int, int], panel: Panel) -> None:
    """Title, grid, ticks and lines of one panel inside its plot ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.text((x0, y0 - MARGIN_TOP + 8), panel.title, fill="black")
    draw.text(((x0 + x1) / 2 - 12, y1 + 22), "step", fill="black")
    points = [pt for line in panel.lines for pt in line.points]
    if not points:
        draw.rectangle(box, outline="black")
        draw.text((x0 + 10, y0 + 10), "no finite values logged", fill="black")
        return
    first_step, last_step = min(s for s, _ in points), max(s for s, _ in points)
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0  # a flat line sits mid-panel
    lo, hi = lo - pad, hi + pad

    def x_of(step: float) -> float:
        span = last_step - first_step
        return x0 + (x1 - x0) * ((step - first_step) / span if span else 0.5)

    def y_of(value: float) -> float:
        return y1 - (value - lo) / (hi - lo) * (y1 - y0)

    for k in range(5):  # y ticks on a light grid
        value = lo + (hi - lo) * k / 4
        draw.line([x0, y_of(value), x1, y_of(value)], fill=GRID)
        draw.text((x0 - MARGIN_LEFT + 4, y_of(value) - 6), f"{value:.4g}", fill="black")
    for k in range(3):  # x ticks
        step = first_step + (last_step - first_step) * k / 2
        draw.text((x_of(step) - 8, y1 + 6), f"{step:.0f}", fill="black")
    draw.rectangle(box, outline="black")
    for line in panel.lines:
        if not line.points:
            continue
        coords = [(x_of(s), y_of(v)) for s, v in line.points]
        if len(coords) > 1:
            draw.line(coords, fill=line.colour, width=2)
        if panel.markers or len(coords) == 1:
            for x, y in coords:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=line.colour)
        if panel.mark_minimum:
            _mark_minimum(draw, line, x_of, y_of)


def _mark_minimum(draw, line: Line, x_of, y_of) -> None:
    """Circle the line's minimum; if its last value sits above it, show by how much."""
    min_step, min_value = min(line.points, key=lambda sv: sv[1])
    mx, my = x_of(min_step), y_of(min_value)
    draw.ellipse([mx - 5, my - 5, mx + 5, my + 5], outline=line.colour, width=2)
    last_step, last_value = line.points[-1]
    if last_value > min_value and last_step != min_step:
        lx, ly = x_of(last_step), y_of(last_value)
        draw.line([(lx, my), (lx, ly)], fill=line.colour, width=1)
        rebound = (last_value - min_value) / abs(min_value) if min_value else 0.0
        text = f"last {rebound:+.1%} vs min"
        # Left of the bar, so the label stays inside the plot box.
        draw.text((lx - draw.textlength(text) - 4, (ly + my) / 2 - 5), text, fill=line.colour)


def draw_losses_per_run(
    losses: Mapping[str, Points], panel_size: tuple[int, int] = (480, 360)
) -> np.ndarray:
    """One loss-vs-step panel per run, side by side, each on its own y scale (a pixel
    teacher's loss and its student's differ ~10x); ``uint8 [H, W, 3]``."""
    panels = [
        Panel(f"{run}: loss vs step", [Line(run, colour_of(i), points)], markers=True)
        for i, (run, points) in enumerate(losses.items())
    ]
    return draw_panels(panels, columns=len(panels), panel_size=panel_size)


def draw_runs_overlaid(
    series: Mapping[str, Mapping[str, Points]],
    keys: Sequence[str] | None = None,
    panel_size: tuple[int, int] = (720, 200),
) -> np.ndarray:
    """One panel per quantity (``keys``, default :func:`panel_order`), every run overlaid in
    its colour under a legend; each loss's minimum circled, a rebound after it annotated.

    ``series`` is ``{run: {key: [(step, value)]}}`` as :func:`salt.metrics.read_series` gives
    per run; ``uint8 [H, W, 3]``.
    """
    keys = panel_order(series) if keys is None else keys
    runs = list(series)
    panels = [
        Panel(
            key,
            [
                Line(run, colour_of(i), series[run][key])
                for i, run in enumerate(runs)
                if series[run].get(key)
            ],
            mark_minimum=key in ("loss", "val_loss") or key.startswith("loss/"),
        )
        for key in keys
    ]
    legend = [(run, colour_of(i)) for i, run in enumerate(runs)]
    return draw_panels(panels, columns=1, panel_size=panel_size, legend=legend)


def panel_order(series: Mapping[str, Mapping[str, Points]]) -> list[str]:
    """The keys logged by any run: ``loss``, its terms, ``val_loss``, ``lr``, then the rest
    alphabetically."""
    found = {key for curves in series.values() for key in curves}
    terms = sorted(k for k in found if k.startswith("loss/"))
    first = [k for k in ("loss", *terms, "val_loss", "lr") if k in found]
    return first + sorted(found - set(first))


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write ``image [H, W, 3] uint8`` as a PNG (creating its folder); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path
