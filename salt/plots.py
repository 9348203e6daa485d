"""Curves drawn with matplotlib: panels of (x, value) lines on one figure, kept as a PNG or
turned into a ``uint8 [H, W, 3]`` image.

One drawing core, :func:`draw_panels`, returns a :class:`matplotlib.figure.Figure` on an Agg
canvas (pyplot is never imported: no display, no global list of open figures). The two
figures only build panels for it: :func:`draw_losses_per_run` (the quick start's: one loss
panel per run, each on its own y scale) and :func:`draw_runs_overlaid` (``salt plot`` and
the viewer's: one panel per quantity, runs overlaid). Ticks fall on round numbers (integer
steps), each loss's minimum is ringed and its value written in a legend beside the panel,
never over the curves; EMA smoothing (:func:`ema`) draws the raw curve faint behind the
smoothed one. matplotlib is imported only when drawing, so ``import salt`` and the palette
stay light.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Colour = tuple[int, int, int]
Points = Sequence[tuple[float, float]]  # (x, value): x a step (or an epoch), in x order

# One colour per run (and per mask group in the viewer), cycling when there are more.
PALETTE: tuple[Colour, ...] = (
    (230, 60, 50),
    (40, 110, 240),
    (40, 180, 80),
    (240, 170, 20),
    (170, 60, 210),
    (20, 190, 200),
)
X_AXES = ("step", "epoch")  # what the curves are drawn against
# Drawn raw even when smoothing: lr and wd are schedules, not noise, and the held-out loss
# is already a mean over its clips, measured a few times a run.
UNSMOOTHED = ("lr", "wd", "val_loss")
DPI = 100  # panel sizes are in pixels; figure inches are pixels / DPI
LEGEND_ROW = 22  # pixels per row of the figure's legend of runs
LEGEND_COLUMNS = 4
RAW_ALPHA = 0.25  # how faint the raw curve is behind its smoothed one


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
    mark_minimum: bool = False  # ring each line's minimum; its value and rebound in a legend
    log_y: bool = False  # log-scale y (kept linear, with a warning, if a value is <= 0)
    smoothed: bool = True  # whether the figure's EMA smoothing applies to its lines


def colour_of(index: int) -> Colour:
    """The palette colour of the ``index``-th run, cycling."""
    return PALETTE[index % len(PALETTE)]


def is_loss(key: str) -> bool:
    """Whether a metric is a loss (``loss``, a ``loss/<term>``, ``val_loss``): the panels
    whose minimum is marked and which ``log`` puts on a log scale."""
    return key in ("loss", "val_loss") or key.startswith("loss/")


def check_smoothing(smooth: float) -> float:
    """``smooth`` if it is an EMA weight in [0, 1), else a ValueError saying what it means."""
    if not (isinstance(smooth, (int, float)) and 0 <= smooth < 1):
        raise ValueError(
            f"smoothing {smooth!r} is not in [0, 1): it is the moving average's weight on the "
            f"past (0 draws the raw curve, 0.9 a smooth one)"
        )
    return float(smooth)


def ema(values: Sequence[float], smooth: float) -> list[float]:
    """The exponential moving average ``s = smooth * s + (1 - smooth) * v``, started at the
    first value (as the run summary's smoothed loss is); ``smooth`` 0 gives the values."""
    smooth = check_smoothing(smooth)
    out: list[float] = []
    for value in values:
        out.append(value if not out else smooth * out[-1] + (1 - smooth) * value)
    return out


def draw_panels(
    panels: Sequence[Panel],
    columns: int = 1,
    panel_size: tuple[int, int] = (480, 360),
    legend: Sequence[tuple[str, Colour]] = (),
    smooth: float = 0.0,
    x: str = "step",
) -> Figure:
    """Panels on a grid of ``columns`` (``panel_size`` pixels each), under an optional
    legend; curves EMA-smoothed by ``smooth`` (0 = raw) against ``x`` (``step`` or
    ``epoch``). :func:`to_image` gives its pixels, :func:`save_png` writes it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not panels:
        raise ValueError("nothing to plot: no panels were given")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if x not in X_AXES:
        raise ValueError(f"x axis {x!r}: choose one of {', '.join(X_AXES)}")
    check_smoothing(smooth)
    width, height = panel_size
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    top = LEGEND_ROW * -(-len(legend) // LEGEND_COLUMNS) + 8 if legend else 0
    figure = Figure(
        figsize=(width * columns / DPI, (height * rows + top) / DPI), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)  # draws in memory, never on a display
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):  # spare cells are removed below
        _draw_panel(ax, panel, smooth, x)
    for ax in axes[len(panels) :]:
        figure.delaxes(ax)
    if legend:
        handles = [Line2D([], [], color=_rgb(c), lw=2.5, label=label) for label, c in legend]
        figure.legend(
            handles=handles,
            loc="outside upper left",
            ncols=min(len(legend), LEGEND_COLUMNS),
            frameon=False,
        )
    # Constrained layout settles on its second pass (the first fits tick labels not yet
    # placed): run one now, so every image and PNG of the figure is the same.
    figure.draw_without_rendering()
    return figure


def _rgb(colour: Colour) -> tuple[float, float, float]:
    """A palette colour as matplotlib takes it (0..1 per channel)."""
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def _draw_panel(ax, panel: Panel, smooth: float, x: str) -> None:
    """Title, grid, curves, readable ticks and the minima's legend of one panel."""
    ax.set_title(panel.title, loc="left", fontsize=10)
    ax.set_xlabel(x, fontsize=9)
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    lines = [line for line in panel.lines if line.points]
    if not lines:
        ax.text(0.5, 0.5, "no finite values logged", transform=ax.transAxes, ha="center")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    smooth = smooth if panel.smoothed else 0.0
    minima = []
    for line in lines:
        xs = [p[0] for p in line.points]
        values = [p[1] for p in line.points]
        colour = _rgb(line.colour)
        dots = "o" if panel.markers or len(xs) == 1 else None
        faint = {"alpha": RAW_ALPHA, "linewidth": 1.0} if smooth else {"linewidth": 1.8}
        ax.plot(xs, values, color=colour, marker=dots, markersize=3, label=line.label, **faint)
        if smooth:  # the raw curve stays faint behind, so noise and spikes are still seen
            ax.plot(xs, ema(values, smooth), color=colour, linewidth=1.8)
        if panel.mark_minimum:
            minima.append(_mark_minimum(ax, line, x))
    _readable_ticks(ax, panel, x)
    if minima:  # beside the plot box: the labels never cover a curve
        ax.legend(
            handles=minima,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            fontsize=8,
            frameon=False,
        )


def _mark_minimum(ax, line: Line, x: str):
    """Ring the line's lowest logged value (hollow: the curve shows through it); returns
    the ring, labelled with the value, where it is and how far the last value rose above."""
    at, low = min(line.points, key=lambda p: p[1])
    last_at, last = line.points[-1]
    where = f"step {at:.0f}" if x == "step" else f"epoch {at:.2f}"
    label = f"{line.label}: min {low:.4g}\nat {where}"  # two short lines: a wider plot box
    if last > low and last_at != at:
        rebound = (last - low) / abs(low) if low else 0.0
        label += f", last {rebound:+.1%}"
    (ring,) = ax.plot(
        [at],
        [low],
        linestyle="none",
        marker="o",
        markersize=9,
        markerfacecolor="none",
        markeredgecolor=_rgb(line.colour),
        markeredgewidth=1.5,
        label=label,
        zorder=3,
        gid="minimum",
    )
    return ring


def _readable_ticks(ax, panel: Panel, x: str) -> None:
    """Ticks on round numbers (whole steps), labels without offsets; powers of ten factored
    out of tiny or huge values (``x10^-5`` over ``1, 2, 3``), or a log scale if asked."""
    from matplotlib.ticker import (
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        ScalarFormatter,
    )

    round_steps = [1, 2, 2.5, 5, 10]
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=round_steps, integer=x == "step"))
    ax.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    values = [v for line in panel.lines for _, v in line.points]
    if panel.log_y and min(values) <= 0:
        log.warning("%s: values <= 0 cannot go on a log scale; drawn linear", panel.title)
    if panel.log_y and min(values) > 0:
        ax.set_yscale("log")
        # 0.2, 0.5, 1, 2, 5 rather than 10^-0.7: numbers a reader compares at a glance;
        # over more than two decades, the powers of ten alone.
        decades = math.log10(max(values) / min(values))
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=round_steps))
    plain = ScalarFormatter(useOffset=False, useMathText=True)
    plain.set_powerlimits((-3, 4))
    ax.yaxis.set_major_formatter(plain)


def to_image(figure: Figure) -> np.ndarray:
    """The figure's pixels, ``uint8 [H, W, 3]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else None
    canvas = canvas or FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_losses_per_run(
    losses: Mapping[str, Points], panel_size: tuple[int, int] = (600, 360)
) -> Figure:
    """One loss-vs-step panel per run, side by side, each on its own y scale (a pixel
    teacher's loss and its student's differ ~10x), each minimum marked."""
    panels = [
        Panel(
            f"{run}: loss vs step",
            [Line("loss", colour_of(i), points)],  # the title names the run
            markers=True,
            mark_minimum=True,
        )
        for i, (run, points) in enumerate(losses.items())
    ]
    return draw_panels(panels, columns=len(panels), panel_size=panel_size)


def draw_runs_overlaid(
    series: Mapping[str, Mapping[str, Points]],
    keys: Sequence[str] | None = None,
    panel_size: tuple[int, int] = (760, 240),
    smooth: float = 0.0,
    log_loss: bool = False,
    x: str = "step",
) -> Figure:
    """One panel per quantity (``keys``, default :func:`panel_order`), every run overlaid in
    its colour under a legend of runs; each loss's minimum marked.

    ``series`` is ``{run: {key: [(x, value)]}}`` as :func:`salt.runs.read_curves` gives;
    ``smooth`` is the EMA weight (0 = raw; :data:`UNSMOOTHED` keys stay raw), ``log_loss`` puts the loss panels (see
    :func:`is_loss`) on a log scale, ``x`` names the axis (``step`` or ``epoch``).
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
            mark_minimum=is_loss(key),
            log_y=log_loss and is_loss(key),
            smoothed=key not in UNSMOOTHED,
        )
        for key in keys
    ]
    legend = [(run, colour_of(i)) for i, run in enumerate(runs)]
    return draw_panels(panels, 1, panel_size, legend, smooth=smooth, x=x)


def panel_order(series: Mapping[str, Mapping[str, Points]]) -> list[str]:
    """The keys logged by any run: ``loss``, its terms, ``val_loss``, ``lr``, then the rest
    alphabetically."""
    found = {key for curves in series.values() for key in curves}
    terms = sorted(k for k in found if k.startswith("loss/"))
    first = [k for k in ("loss", *terms, "val_loss", "lr") if k in found]
    return first + sorted(found - set(first))


def save_png(drawing: Figure | np.ndarray, path: str | Path) -> Path:
    """Write a figure (or an image ``[H, W, 3] uint8``) as an RGB PNG, creating its folder;
    returns the path. A figure is written as :func:`to_image` draws it, pixel for pixel."""
    from PIL import Image  # matplotlib's own dependency

    image = drawing if isinstance(drawing, np.ndarray) else to_image(drawing)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path
