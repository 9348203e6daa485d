"""The PIL plots: image shapes, each line in its colour, own or shared y scales, the
minimum and rebound marks, and PNGs that read back as drawn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL", reason="the plots are drawn with Pillow")

from PIL import Image  # noqa: E402

from salt.plots import (  # noqa: E402
    PALETTE,
    Line,
    Panel,
    draw_losses_per_run,
    draw_panels,
    draw_runs_overlaid,
    panel_order,
    save_png,
)

FALLING = [(s, 4.0 / s) for s in range(1, 21)]
V_SHAPE = [(s, abs(s - 12) + 1.0) for s in range(1, 21)]


def pixels_of(image: np.ndarray, colour) -> np.ndarray:
    """``[H, W]`` bool: where ``image`` is exactly ``colour``."""
    return (image == np.asarray(colour, dtype=np.uint8)).all(axis=-1)


def test_panels_fill_a_grid_under_the_legend_with_each_line_in_its_colour():
    panels = [
        Panel("a", [Line("run0", PALETTE[0], FALLING)]),
        Panel("b", [Line("run1", PALETTE[1], V_SHAPE)]),
        Panel("c", [Line("run2", PALETTE[2], FALLING)]),
    ]
    image = draw_panels(panels, columns=2, panel_size=(200, 150))
    assert image.shape == (2 * 150, 2 * 200, 3) and image.dtype == np.uint8
    for i in range(3):
        assert pixels_of(image, PALETTE[i]).any()
    # panel "c" sits in the bottom-left cell
    assert pixels_of(image[150:, :200], PALETTE[2]).any()
    assert not pixels_of(image[:, 200:], PALETTE[2]).any()
    legend = [("run0", PALETTE[0]), ("run1", PALETTE[1])]
    with_legend = draw_panels(panels, columns=2, panel_size=(200, 150), legend=legend)
    assert with_legend.shape == (2 * 150 + 18 * 2 + 10, 400, 3)


def test_a_panel_without_points_is_drawn_empty():
    image = draw_panels([Panel("nothing", [Line("run", PALETTE[0], [])])], panel_size=(200, 150))
    assert image.shape == (150, 200, 3)
    assert not pixels_of(image, PALETTE[0]).any()
    with pytest.raises(ValueError, match="no panels"):
        draw_panels([])


def test_losses_per_run_are_side_by_side_each_on_its_own_scale():
    # The second run's loss is 8x the first's (exact in floating point): on its own y scale
    # its line covers the same pixel rows, in its own panel and colour.
    small = [(s, v) for s, v in V_SHAPE]
    large = [(s, 8 * v) for s, v in V_SHAPE]
    image = draw_losses_per_run({"teacher": large, "student": small})
    assert image.shape == (360, 2 * 480, 3)
    left, right = image[:, :480], image[:, 480:]
    assert pixels_of(left, PALETTE[0]).any() and not pixels_of(right, PALETTE[0]).any()
    assert pixels_of(right, PALETTE[1]).any() and not pixels_of(left, PALETTE[1]).any()
    rows_large = np.flatnonzero(pixels_of(left, PALETTE[0]).any(axis=1))
    rows_small = np.flatnonzero(pixels_of(right, PALETTE[1]).any(axis=1))
    assert abs(rows_large[0] - rows_small[0]) <= 1 and abs(rows_large[-1] - rows_small[-1]) <= 1
    assert rows_large[-1] - rows_large[0] > 200  # the line spans most of the panel


def test_runs_overlaid_get_one_panel_per_quantity_and_share_its_scale():
    series = {
        "a": {"loss": FALLING, "loss/mse": FALLING, "lr": [(1, 1e-3), (20, 1e-4)]},
        "b": {"loss": [(s, 10 * v) for s, v in V_SHAPE], "grad_norm": V_SHAPE},
    }
    assert panel_order(series) == ["loss", "loss/mse", "lr", "grad_norm"]
    image = draw_runs_overlaid(series)
    legend = 18 * 2 + 10
    assert image.shape == (legend + 4 * 200, 720, 3)
    loss_panel = image[legend : legend + 200]
    assert pixels_of(loss_panel, PALETTE[0]).any() and pixels_of(loss_panel, PALETTE[1]).any()
    # Shared scale: run a's loss (at most 4) is squeezed near the bottom under b's (up to 120).
    rows_a = np.flatnonzero(pixels_of(loss_panel[:, 64:], PALETTE[0]).any(axis=1))
    rows_b = np.flatnonzero(pixels_of(loss_panel[:, 64:], PALETTE[1]).any(axis=1))
    assert rows_a[0] > rows_b[0] + 50
    only_b = image[legend + 3 * 200 :]  # grad_norm: run b only
    assert pixels_of(only_b, PALETTE[1]).any() and not pixels_of(only_b, PALETTE[0]).any()
    assert draw_runs_overlaid(series, keys=["lr"]).shape == (legend + 200, 720, 3)


def test_the_minimum_is_circled_and_a_rebound_annotated():
    def coloured(points, mark):
        panel = Panel("loss", [Line("run", PALETTE[0], points)], mark_minimum=mark)
        return int(pixels_of(draw_panels([panel]), PALETTE[0]).sum())

    falling_plain, falling_marked = coloured(FALLING, False), coloured(FALLING, True)
    rebound_plain, rebound_marked = coloured(V_SHAPE, False), coloured(V_SHAPE, True)
    assert falling_marked > falling_plain  # the circle
    # circle, plus the rebound's bar and its "last +x% vs min" label
    assert rebound_marked - rebound_plain > falling_marked - falling_plain + 20


def test_save_png_writes_the_image_it_was_given(tmp_path):
    image = draw_losses_per_run({"run": FALLING}, panel_size=(240, 180))
    path = save_png(image, tmp_path / "new" / "curves.png")
    assert path == tmp_path / "new" / "curves.png"
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert np.array_equal(np.asarray(png.convert("RGB")), image)
