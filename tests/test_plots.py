"""The matplotlib plots: panels on a grid, each line in its colour, own or shared y scales,
round ticks, the minimum ringed at its point with its label beside the plot, EMA smoothing,
log-scale losses, and PNGs that read back as drawn."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the plots are drawn with matplotlib")

from PIL import Image  # noqa: E402 - comes with matplotlib

from salt.plots import (  # noqa: E402
    PALETTE,
    Line,
    Panel,
    check_smoothing,
    draw_losses_per_run,
    draw_panels,
    draw_runs_overlaid,
    ema,
    panel_order,
    save_png,
    to_image,
)

FALLING = [(s, 4.0 / s) for s in range(1, 21)]
V_SHAPE = [(s, abs(s - 12) + 1.0) for s in range(1, 21)]


def rgb(colour) -> tuple[float, ...]:
    return tuple(c / 255 for c in colour)


def curves(ax) -> list:
    """The data lines of an axes (not the minimum rings)."""
    return [line for line in ax.get_lines() if line.get_gid() != "minimum"]


def rings(ax) -> list[tuple[float, float]]:
    """Where the minimum rings sit: ``(x, value)`` each."""
    return [
        (line.get_xdata()[0], line.get_ydata()[0])
        for line in ax.get_lines()
        if line.get_gid() == "minimum"
    ]


def shown(label: str) -> str:
    """A tick label as read (mathtext's ``$\\mathdefault{...}$`` wrapper removed)."""
    return re.sub(r"^\$\\mathdefault\{(.*)\}\$$", r"\1", label)


def pixels_of(image: np.ndarray, colour) -> np.ndarray:
    """``[H, W]`` bool: where ``image`` is exactly ``colour``."""
    return (image == np.asarray(colour, dtype=np.uint8)).all(axis=-1)


def test_panels_fill_a_grid_under_the_legend_with_each_line_in_its_colour():
    panels = [
        Panel("a", [Line("run0", PALETTE[0], FALLING)]),
        Panel("b", [Line("run1", PALETTE[1], V_SHAPE)]),
        Panel("c", [Line("run2", PALETTE[2], FALLING)]),
    ]
    figure = draw_panels(panels, columns=2, panel_size=(200, 150))
    assert [ax.get_title("left") for ax in figure.axes] == ["a", "b", "c"]  # spare cell gone
    image = to_image(figure)
    assert image.shape == (2 * 150, 2 * 200, 3) and image.dtype == np.uint8
    for i in range(3):
        assert pixels_of(image, PALETTE[i]).any()
        (line,) = curves(figure.axes[i])
        assert line.get_color() == rgb(PALETTE[i])
    # panel "c" sits in the bottom-left cell
    assert pixels_of(image[150:, :200], PALETTE[2]).any()
    assert not pixels_of(image[:, 200:], PALETTE[2]).any()
    legend = [("run0", PALETTE[0]), ("run1", PALETTE[1])]
    with_legend = draw_panels(panels, columns=2, panel_size=(200, 150), legend=legend)
    (shown,) = with_legend.legends
    assert [t.get_text() for t in shown.get_texts()] == ["run0", "run1"]
    assert to_image(with_legend).shape[0] > 2 * 150  # the legend's row is added on top


def test_a_panel_without_points_is_drawn_empty_and_bad_arguments_are_refused():
    figure = draw_panels([Panel("nothing", [Line("run", PALETTE[0], [])])], panel_size=(200, 150))
    (ax,) = figure.axes
    assert curves(ax) == [] and "no finite values" in ax.texts[0].get_text()
    with pytest.raises(ValueError, match="no panels"):
        draw_panels([])
    with pytest.raises(ValueError, match="choose one of step, epoch"):
        draw_panels([Panel("a")], x="time")
    with pytest.raises(ValueError, match=r"smoothing 1.5 is not in \[0, 1\)"):
        draw_panels([Panel("a")], smooth=1.5)


def test_ticks_are_round_numbers_and_whole_steps():
    # Values like the issue's: a loss near 0.9688 and an lr near 5.8e-05, at steps 1..5.
    loss = [(s, 0.9688 + 0.0003 * s) for s in range(1, 6)]
    lr = [(s, 5.819e-05 * s / 5) for s in range(1, 6)]
    figure = draw_panels(
        [Panel("loss", [Line("a", PALETTE[0], loss)]), Panel("lr", [Line("a", PALETTE[0], lr)])]
    )
    for ax in figure.axes:
        xs = ax.get_xticks()
        assert np.array_equal(xs, np.round(xs))  # no tick at step 2.5
        ys = ax.get_yticks()
        spacing = np.diff(ys)[0]
        mantissa = spacing / 10 ** np.floor(np.log10(spacing))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5))
        assert np.allclose(ys / spacing, np.round(ys / spacing))
        labels = [shown(t.get_text()) for t in ax.get_yticklabels()]
        assert all(len(label) <= 6 for label in labels), labels  # 0.9690, not 0.96884
    lr_axis = figure.axes[1].yaxis
    assert "10^{\N{MINUS SIGN}5}" in lr_axis.get_offset_text().get_text()  # not 5.819e-05


def test_losses_per_run_are_side_by_side_each_on_its_own_scale():
    small = list(V_SHAPE)
    large = [(s, 8 * v) for s, v in V_SHAPE]
    figure = draw_losses_per_run({"teacher": large, "student": small})
    left, right = figure.axes
    assert left.get_title("left") == "teacher: loss vs step"
    assert left.get_ylim()[1] > 5 * right.get_ylim()[1]  # own scales
    assert curves(left)[0].get_color() == rgb(PALETTE[0])
    assert curves(right)[0].get_color() == rgb(PALETTE[1])
    assert rings(left) == [(12, 8.0)] and rings(right) == [(12, 1.0)]
    image = to_image(figure)
    assert image.shape == (360, 2 * 600, 3)
    assert pixels_of(image[:, :600], PALETTE[0]).any()
    assert not pixels_of(image[:, 600:], PALETTE[0]).any()


def test_runs_overlaid_get_one_panel_per_quantity_and_share_its_scale():
    series = {
        "a": {"loss": FALLING, "loss/mse": FALLING, "lr": [(1, 1e-3), (20, 1e-4)]},
        "b": {"loss": [(s, 10 * v) for s, v in V_SHAPE], "grad_norm": V_SHAPE},
    }
    assert panel_order(series) == ["loss", "loss/mse", "lr", "grad_norm"]
    figure = draw_runs_overlaid(series)
    assert [ax.get_title("left") for ax in figure.axes] == panel_order(series)
    loss = figure.axes[0]
    assert [line.get_color() for line in curves(loss)] == [rgb(PALETTE[0]), rgb(PALETTE[1])]
    assert loss.get_ylim()[1] >= 110  # run a's loss (at most 4) under b's (up to 120)
    assert [line.get_color() for line in curves(figure.axes[3])] == [rgb(PALETTE[1])]
    assert rings(figure.axes[2]) == []  # lr: not a loss, no minimum marked
    assert len(draw_runs_overlaid(series, keys=["lr"]).axes) == 1
    image = to_image(figure)
    assert image.shape[1] == 760 and pixels_of(image, PALETTE[1]).any()


def test_the_minimum_is_ringed_at_its_point_and_labelled_beside_the_plot():
    series = {"a": {"loss": FALLING}, "b": {"loss": V_SHAPE}}
    (ax,) = draw_runs_overlaid(series).axes
    assert rings(ax) == [(20, 0.2), (12, 1.0)]
    (minima,) = [child for child in ax.get_children() if child is ax.get_legend()]
    texts = [t.get_text() for t in minima.get_texts()]
    # V_SHAPE ends at 9 after its minimum 1: the rebound is in the label, not on the curves.
    assert texts == ["a: min 0.2\nat step 20", "b: min 1\nat step 12, last +800.0%"]
    anchor = minima.get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1  # right of the plot box
    ring = next(line for line in ax.get_lines() if line.get_gid() == "minimum")
    assert ring.get_markerfacecolor() == "none"  # hollow: the curve shows through


def test_smoothing_draws_the_moving_average_over_the_faint_raw_curve():
    assert ema([1.0, 0.0, 0.0, 4.0], 0.5) == [1.0, 0.5, 0.25, 2.125]
    assert ema([3.0, 1.0], 0.0) == [3.0, 1.0]
    with pytest.raises(ValueError, match="weight on the past"):
        check_smoothing(1.0)
    points = [(1, 1.0), (2, 0.0), (3, 0.0), (4, 4.0)]
    series = {"a": {"loss": points, "lr": points}}
    loss, lr = draw_runs_overlaid(series, smooth=0.5).axes
    raw, smooth = curves(loss)
    assert raw.get_alpha() < 1 and list(raw.get_ydata()) == [1.0, 0.0, 0.0, 4.0]
    assert list(smooth.get_ydata()) == [1.0, 0.5, 0.25, 2.125] and smooth.get_alpha() is None
    assert rings(loss) == [(2, 0.0)]  # the minimum logged, not the smoothed one
    (schedule,) = curves(lr)  # lr is a schedule: drawn raw
    assert list(schedule.get_ydata()) == [1.0, 0.0, 0.0, 4.0]


def test_log_scale_is_set_on_the_loss_panels_only():
    series = {"a": {"loss": FALLING, "loss/mse": FALLING, "lr": [(1, 1e-3), (20, 1e-4)]}}
    figure = draw_runs_overlaid(series, log_loss=True)
    assert [ax.get_yscale() for ax in figure.axes] == ["log", "log", "linear"]
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert {"0.2", "0.5", "1", "2"} <= set(labels)  # plain numbers, not 10^-0.7
    wide = {"a": {"loss": [(s, 10 ** (-s / 2)) for s in range(1, 21)]}}  # ten decades
    labels = [
        t.get_text() for t in draw_runs_overlaid(wide, log_loss=True).axes[0].get_yticklabels()
    ]
    assert {"1e-08", "0.0001", "1"} <= set(labels)  # powers of ten, still labelled
    # A loss that reaches zero or below cannot go on a log scale: drawn linear instead.
    negative = {"a": {"loss": [(1, 1.0), (2, -0.5)]}}
    assert draw_runs_overlaid(negative, log_loss=True).axes[0].get_yscale() == "linear"


def test_epochs_on_the_x_axis():
    series = {"a": {"loss": [(0.5, 2.0), (1.0, 1.0), (1.5, 1.5)]}}
    (ax,) = draw_runs_overlaid(series, x="epoch").axes
    assert ax.get_xlabel() == "epoch"
    assert list(curves(ax)[0].get_xdata()) == [0.5, 1.0, 1.5]
    assert ax.get_legend().get_texts()[0].get_text() == "a: min 1\nat epoch 1.00, last +50.0%"


def test_save_png_writes_the_figure_or_image_it_was_given(tmp_path):
    figure = draw_losses_per_run({"run": FALLING}, panel_size=(240, 180))
    path = save_png(figure, tmp_path / "new" / "curves.png")
    assert path == tmp_path / "new" / "curves.png"
    image = to_image(figure)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert np.array_equal(np.asarray(png.convert("RGB")), image)
    again = save_png(image, tmp_path / "image.png")
    with Image.open(again) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), image)


def test_matplotlib_is_imported_only_when_drawing():
    code = (
        "import sys, salt, salt.plots, salt.runs, salt.cli.runs; "
        "assert 'matplotlib' not in sys.modules, 'imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
