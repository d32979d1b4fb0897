"""`pprl.plots.charts`: matplotlib figures (Pareto plot, sweep curves, confusion matrices, labelled image grids) with real
axes, written as PNG + PDF."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import find_block
from pprl.plots import charts as plots
from pprl.plots.grids import grid_image, grid_pixels, save_gif

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tick_texts(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def line_labelled(ax, label: str):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def test_save_figure_writes_png_and_pdf_atomically(tmp_path):
    def figure():
        return plots.confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], "t")

    fig = figure()
    png, pdf = plots.save_figure(fig, tmp_path / "sub" / "conf.png")  # a suffix or none: the same two files
    assert (png.name, pdf.name) == ("conf.png", "conf.pdf")
    assert png.read_bytes()[:8] == PNG_MAGIC and pdf.read_bytes()[:4] == b"%PDF"
    with Image.open(png) as im:
        assert im.size == (round(fig.get_figwidth() * fig.dpi), round(fig.get_figheight() * fig.dpi))
    first = pdf.read_bytes(), png.read_bytes()
    assert plots.save_figure(figure(), tmp_path / "sub" / "conf") == (png, pdf)
    assert (pdf.read_bytes(), png.read_bytes()) == first  # no timestamp: the same figure gives the same bytes
    assert sorted(p.name for p in png.parent.iterdir()) == ["conf.pdf", "conf.png"]  # no temp file left


def test_no_pyplot_state():
    code = ("import sys, numpy as np; from pprl.plots import charts as plots; "
            "plots.figure_pixels(plots.confusion_figure(np.eye(2, dtype=int), ['a', 'b'], 't')); "
            "plots.figure_pixels(plots.labelled_grid(np.zeros((1, 1, 4, 4, 3), np.uint8), 2, ['r'], ['c'], 't')); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------- Pareto
POINTS = [
    plots.ParetoPoint("0", 0.60, 0.90, True, (0.5, 0.7), (0.8, 0.97), "g2=0.15"),
    plots.ParetoPoint("1", 0.40, 0.85, True, (0.3, 0.5), (0.75, 0.92), "g2=0.3"),
    plots.ParetoPoint("2", 0.45, 0.70, False, (0.35, 0.55), None, "g2=0.6"),
    plots.ParetoPoint("3", 0.20, 0.50, True, None, None, "g2=1.2"),
]


def test_pareto_figure_marks_exactly_the_front():
    fig = plots.pareto_figure(POINTS, random_guess=(1 / 6, 1 / 7), key_header="job: λ values",
                              notes=["2 job(s) failed"])
    ax, side = fig.axes
    front = line_labelled(ax, "Pareto front")
    assert front.get_linestyle() == "-"  # joined, in identification order
    np.testing.assert_allclose(front.get_xydata(), [[0.20, 0.50], [0.40, 0.85], [0.60, 0.90]])
    np.testing.assert_allclose(line_labelled(ax, "dominated").get_xydata(), [[0.45, 0.70]])
    np.testing.assert_allclose(line_labelled(ax, "random guess").get_xydata(), [[1 / 6, 1 / 7]])
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "2", "3"]  # every job labelled
    twins = [plots.ParetoPoint("4", 0.3, 0.6, True), plots.ParetoPoint("7", 0.3, 0.6, True)]
    assert [t.get_text() for t in plots.pareto_figure(twins).axes[0].texts] == ["4, 7"]  # one label per spot
    # error bars: x intervals of jobs 0, 1, 2 and y intervals of jobs 0, 1
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    assert len(segments) == 5
    assert any(np.allclose(seg, [[0.35, 0.70], [0.55, 0.70]]) for seg in segments)
    fig.canvas.draw()
    assert tick_texts(ax.xaxis)[:3] == ["0%", "10%", "20%"] and "100%" in tick_texts(ax.xaxis)
    assert "100%" in tick_texts(ax.yaxis)
    assert "identification CCR" in ax.get_xlabel() and "expression CCR" in ax.get_ylabel()
    assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(legend) == {"Pareto front", "dominated", "random guess", "95 % interval"}
    key = [t.get_text() for t in side.texts]
    assert key == ["job: λ values", "0: g2=0.15", "1: g2=0.3", "2: g2=0.6", "3: g2=1.2", "", "2 job(s) failed"]
    assert side.texts[3].get_color() != side.texts[2].get_color()  # the dominated job is not in front colour


def test_pareto_figure_without_points_still_draws(tmp_path):
    png, pdf = plots.save_figure(plots.pareto_figure([], None, notes=["3 job(s) failed"]), tmp_path / "p")
    assert png.read_bytes()[:8] == PNG_MAGIC and pdf.read_bytes()[:4] == b"%PDF"


# ----------------------------------------------------------------------------------------------- curves
def test_curves_figure_one_subplot_per_lambda():
    curves = [plots.Curve("g2", "identification", "attack_II", "g3=0.1", [0.3, 1.2], [0.5, 0.3], [0.4, 0.2],
                          [0.6, 0.4]),
              plots.Curve("g2", "expression", "attack_II", "g3=0.1", [0.3, 1.2], [0.9, 0.8], [None, 0.7],
                          [None, 0.9]),
              plots.Curve("g2", "identification", "attack_II", "g3=0.4", [0.3, 1.2], [0.45, 0.25], [0.4, 0.2],
                          [0.5, 0.3]),
              plots.Curve("g3", "identification", "attack_I", "g2=0.3", [0.1, 0.2, 0.4], [0.2, 0.2, 0.3],
                          [0.1, 0.1, 0.2], [0.3, 0.3, 0.4])]
    fig = plots.curves_figure(curves, ["g2", "g3"], random_guess=(1 / 3, 1 / 7))
    fig.canvas.draw()
    ax_g2, ax_g3 = fig.axes[:2]
    assert ax_g2.get_xlabel() == "λ g2" and ax_g3.get_xlabel() == "λ g3"
    assert tick_texts(ax_g2.xaxis) == ["0.3", "1.2"] and tick_texts(ax_g3.xaxis) == ["0.1", "0.2", "0.4"]
    assert "50%" in tick_texts(ax_g2.yaxis)
    data = [ln.get_xydata().tolist() for ln in ax_g2.get_lines() if ln.get_linestyle() in ("-", "--")]  # no caps
    assert [[0.3, 0.5], [1.2, 0.3]] in data and [[0.3, 0.9], [1.2, 0.8]] in data and len(data) == 3
    assert ax_g3.get_lines()[0].get_linestyle() == "--"  # attack I dashed
    chance = [ln.get_ydata()[0] for ln in ax_g2.get_lines() if ln.get_linestyle() == ":"]
    assert chance == pytest.approx([1 / 3, 1 / 7])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"attack II identification", "attack II expression", "attack I identification", "g3=0.1"} <= set(legend)


# ----------------------------------------------------------------------------------------------- confusion
def test_confusion_figure_shows_counts_names_and_row_fractions():
    matrix = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    names = ["anger", "joy", "surprise"]
    fig = plots.confusion_figure(matrix, names, "Attack Scenario II: expression\nCCR 70.00% (n=10)")
    ax, colourbar = fig.axes
    assert [t.get_text() for t in ax.texts] == [str(v) for v in matrix.ravel()]  # row by row
    assert tick_texts(ax.xaxis) == names and tick_texts(ax.yaxis) == names
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, [[5 / 6, 1 / 6, 0], [0.5, 0.5, 0], [0, 0, 0]])
    assert "CCR 70.00%" in ax.get_title() and "n=10" in ax.get_title()
    assert "fraction" in colourbar.get_ylabel()


# ----------------------------------------------------------------------------------------------- image grids
@pytest.mark.parametrize("scale,size,labels", [(3, 8, True), (2, 16, True), (1, 12, False)])
def test_labelled_grid_is_pixel_exact_with_labels(tmp_path, scale, size, labels):
    tiles = np.random.default_rng(size).integers(0, 256, (2, 3, size, size, 3), dtype=np.uint8)
    rows, cols = (["first row", "second"], ["input", "c=a much longer name", "c=b"]) if labels else (None, None)
    fig = plots.labelled_grid(tiles, scale, rows, cols, title="A title" if labels else None)
    grid = grid_pixels(tiles, scale)
    pixels = plots.figure_pixels(fig)
    assert find_block(pixels, grid) is not None  # the images are not resampled
    png, pdf = plots.save_figure(fig, tmp_path / "grid")
    with Image.open(png) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pixels)  # the PNG holds exactly those pixels
    assert pdf.read_bytes()[:4] == b"%PDF"
    ax = fig.axes[0]
    if labels:
        fig.canvas.draw()
        assert tick_texts(ax.xaxis) == cols and tick_texts(ax.yaxis) == rows
        assert ax.get_xticklabels()[0].get_rotation() == 90  # a label wider than a tile: all written vertically
        assert [t.get_text() for t in fig.texts] == ["A title"]
        # labels sit over the centres of the tiles: column k at scale * (1 + k (W + 1) + W / 2) - 0.5
        np.testing.assert_allclose(ax.get_xticks(), [scale * (1 + k * (size + 1) + size / 2) - 0.5 for k in range(3)])
    else:
        assert pixels.shape[:2] == (grid.shape[0] + 12, grid.shape[1] + 12)  # only the 6 px margin around it


def test_labelled_grid_short_labels_stay_horizontal():
    fig = plots.labelled_grid(np.zeros((1, 2, 32, 32, 3), np.uint8), 3, ["r"], ["I1", "I2"])
    assert all(t.get_rotation() == 0 for t in fig.axes[0].get_xticklabels())


def test_grid_pixels_is_a_nearest_neighbour_upscale():
    tiles = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 4, 3), dtype=np.uint8)
    grid = grid_pixels(tiles, scale=3)
    assert grid.shape == (3 * (2 * 6 + 1), 3 * (3 * 5 + 1), 3)
    np.testing.assert_array_equal(grid[3:18, 3:15], tiles[0, 0].repeat(3, 0).repeat(3, 1))  # tile (0, 0)
    assert (grid[:3] == 255).all() and (grid[18:21, :] == 255).all()  # white gaps, scaled too
    np.testing.assert_array_equal(np.asarray(grid_image(tiles, scale=3)), grid)  # the callback's plain grid


def test_save_gif_pads_frames_to_one_size(tmp_path):
    frames = [np.full((10, 12, 3), 40, np.uint8), np.full((11, 9, 3), 200, np.uint8)]
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=50)
    with Image.open(path) as gif:
        assert gif.n_frames == 2 and gif.size == (12, 11)
        gif.seek(1)
        last = np.asarray(gif.convert("RGB"))
    assert (last[:11, :9] == 200).all() and (last[:, 9:] == 255).all()
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]
