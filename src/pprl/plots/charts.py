"""Figures with axes, drawn with matplotlib (Agg canvas, no pyplot state) and written as PNG and PDF.

- `pareto_figure`: a λ sweep in the privacy-utility plane (identification CCR against expression CCR), the
  Pareto front connected, 95 % intervals as error bars, random guess marked, jobs labelled and explained.
- `curves_figure`: CCR against each λ that a sweep varies, one subplot per λ.
- `confusion_figure`: a confusion matrix (rows = true class, columns = predicted), counts in the cells,
  colour = fraction of the row.
- `labelled_grid`: an image grid (`pprl.plots.grids.grid_pixels`, nearest-neighbour upscaling) with a title and
  row / column labels; the images land pixel for pixel in the PNG (one grid pixel = one PNG pixel).

Every function returns a `matplotlib.figure.Figure` (inspect it, or pass it on); `save_figure(fig, path)` writes
`<stem>.png` and `<stem>.pdf` atomically and `figure_pixels(fig)` gives the PNG's pixels (GIF frames).
Figures are drawn under matplotlib's default style (plus `STYLE`), whatever the user's matplotlibrc says.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import style as mpl_style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from pprl.plots.grids import grid_pixels
from pprl.runtime.imageio import atomic_path

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "pdf.fonttype": 42,  # embedded TrueType (Type 42) fonts, not Type 3: what paper submission systems accept
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}
PLOT_DPI = 150  # PNG resolution of the plots (their PDF is vector)
GRID_DPI = 100  # labelled grids: one grid pixel per PNG pixel at this dpi
FRONT_COLOUR = "#d62728"
DOMINATED_COLOUR = "0.45"
TASK_COLOURS = {  # (task, scenario) -> colour; attack I lighter than attack II
    ("identification", "attack_II"): "#d62728", ("identification", "attack_I"): "#ff9896",
    ("expression", "attack_II"): "#1f77b4", ("expression", "attack_I"): "#aec7e8",
}
SCENARIO_LINESTYLES = {"attack_II": "-", "attack_I": "--"}
GROUP_MARKERS = "osD^v<>ph*"
MAX_LISTED_JOBS = 30
MAX_LEGEND_CHARS = 60

# Type 42 PDFs subset their fonts with fontTools, which logs every table it prunes at INFO (Hydra's log level).
logging.getLogger("fontTools").setLevel(logging.WARNING)


def _style():
    """matplotlib's defaults plus STYLE, for the duration of a `with` block."""
    return mpl_style.context(["default", STYLE])


def _new_figure(width_in: float, height_in: float, dpi: int = PLOT_DPI, layout: str | None = "constrained") -> Figure:
    """A pyplot-free figure on an Agg canvas (constrained layout unless `layout=None`)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)  # the raster canvas; PDF output switches canvas only while saving
    return fig


# ----------------------------------------------------------------------------------------------- output
def figure_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(`<stem>.png`, `<stem>.pdf`) for `path` given with or without the `.png` / `.pdf` suffix."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")


def save_figure(fig: Figure, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `fig` as `<stem>.png` (at the figure's dpi) and `<stem>.pdf`, each atomically; returns both paths.

    The PDF carries no creation date: a figure built from the same data gives the same bytes.
    """
    png, pdf = figure_paths(path)
    png.parent.mkdir(parents=True, exist_ok=True)
    with _style():
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    return png, pdf


def figure_pixels(fig: Figure) -> np.ndarray:
    """The figure rendered at its dpi as uint8 (H, W, 3) RGB: the pixels its PNG holds."""
    with _style():
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _percent_axis(axis) -> None:
    """Ticks at 0 %, 10 %, ..., 100 % of a CCR axis (fractions in [0, 1])."""
    axis.set_major_locator(FixedLocator(np.linspace(0.0, 1.0, 11)))
    axis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))


# ----------------------------------------------------------------------------------------------- Pareto plot
@dataclass
class ParetoPoint:
    """One evaluated job in the privacy-utility plane (CCRs as fractions)."""

    label: str  # what the point is called on the plot (the job number)
    identification: float
    expression: float
    on_front: bool
    identification_ci: tuple[float, float] | None = None  # 95 % interval
    expression_ci: tuple[float, float] | None = None
    description: str = ""  # what the label stands for, e.g. "g2=0.3, g3=0.145"


def _error_bars(ax, points: Sequence[ParetoPoint], colour: str, label: str | None) -> None:
    """95 % intervals of the points as horizontal (identification) and vertical (expression) error bars."""
    for axis in ("identification", "expression"):
        shown = [p for p in points if getattr(p, f"{axis}_ci") is not None]
        if not shown:
            continue
        centre = np.array([getattr(p, axis) for p in shown])
        lo, hi = np.array([getattr(p, f"{axis}_ci") for p in shown]).T
        err = np.clip(np.stack([centre - lo, hi - centre]), 0, None)
        x, y = [p.identification for p in shown], [p.expression for p in shown]
        ax.errorbar(x, y, **{"xerr" if axis == "identification" else "yerr": err}, fmt="none", ecolor=colour,
                    elinewidth=0.9, capsize=2.5, alpha=0.8, zorder=2, label=label)
        label = None  # one legend entry for both directions


def pareto_figure(points: Sequence[ParetoPoint], random_guess: tuple[float, float] | None = None,
                  scenario: str = "attack II", key_header: str = "", notes: Sequence[str] = ()) -> Figure:
    """Identification CCR (x; lower = more private) against expression CCR (y; higher = more useful).

    Points with `on_front` are filled red and joined in identification order; the others are hollow grey.
    On the right, each label with its `description` under `key_header` (front jobs in red), then `notes`.
    """
    with _style():
        fig = _new_figure(9.2, 6.0)
        ax, side = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3.0, 1.1]})
        privacy_utility_axes(ax, f"Privacy-utility of the sweep ({scenario})", scenario, random_guess)
        front = sorted((p for p in points if p.on_front), key=lambda p: (p.identification, -p.expression))
        dominated = [p for p in points if not p.on_front]
        _error_bars(ax, front + dominated, "0.55", "95 % interval")
        if dominated:
            ax.plot([p.identification for p in dominated], [p.expression for p in dominated], linestyle="none",
                    marker="o", markersize=7, markerfacecolor="white", markeredgewidth=1.6,
                    color=DOMINATED_COLOUR, label="dominated", zorder=3)
        if front:
            ax.plot([p.identification for p in front], [p.expression for p in front], "-o", color=FRONT_COLOUR,
                    markersize=7, linewidth=1.8, label="Pareto front", zorder=5)
        at: dict[tuple[float, float], list[ParetoPoint]] = {}
        for p in points:  # jobs on the same spot share one label, "0, 2"
            at.setdefault((p.identification, p.expression), []).append(p)
        for xy, here in at.items():
            ax.annotate(", ".join(p.label for p in here), xy, xytext=(5, 5), textcoords="offset points", fontsize=8,
                        color=FRONT_COLOUR if any(p.on_front for p in here) else "0.25", zorder=6,
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})
        if points or random_guess is not None:
            ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
        _job_key(side, points, key_header, notes)
    return fig


def privacy_utility_axes(ax, title: str, scenario: str, random_guess: tuple[float, float] | None) -> None:
    """The privacy-utility plane: identification CCR (x) against expression CCR (y), 0-100 % on equal axes, grid,
    random guess marked (dotted lines and an X)."""
    ax.set_title(title)
    ax.set_xlabel(f"identification CCR, {scenario} (lower = more private)")
    ax.set_ylabel(f"expression CCR, {scenario} (higher = more useful)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    _percent_axis(ax.xaxis)
    _percent_axis(ax.yaxis)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    if random_guess is not None:
        gx, gy = random_guess
        ax.axvline(gx, color="0.6", linestyle=":", linewidth=0.9, zorder=1)
        ax.axhline(gy, color="0.6", linestyle=":", linewidth=0.9, zorder=1)
        ax.plot([gx], [gy], linestyle="none", marker="X", markersize=9, color="black", label="random guess", zorder=4)


def _job_key(ax, points: Sequence[ParetoPoint], header: str, notes: Sequence[str]) -> None:
    """The text block beside the plot: one line per labelled point (front in red), then the notes."""
    ax.set_axis_off()
    lines: list[tuple[str, str]] = [(header, "black")] if header else []
    described = [p for p in points if p.description]
    listed = described[:MAX_LISTED_JOBS]
    lines += [(f"{p.label}: {p.description}", FRONT_COLOUR if p.on_front else "black") for p in listed]
    if len(described) > len(listed):
        lines.append((f"... {len(described) - len(listed)} more (see report.md)", "black"))
    if notes:
        lines += [("", "black")] + [(n, "#b00000") for n in notes]
    for k, (text, colour) in enumerate(lines):
        ax.annotate(text, xy=(0, 1), xycoords="axes fraction", xytext=(0, -12 * k), textcoords="offset points",
                    va="top", ha="left", fontsize=8, color=colour, fontweight="bold" if k == 0 and header else None,
                    annotation_clip=False)


# ----------------------------------------------------------------------------------------------- sweep curves
@dataclass
class Curve:
    """CCR of one task under one scenario against one λ, over the jobs that share every other swept value."""

    key: str  # the λ on the x axis
    task: str  # identification | expression
    scenario: str  # attack_II | attack_I
    group: str  # the other swept values of these jobs ("" when only `key` varies)
    x: Sequence[float]
    y: Sequence[float]
    lo: Sequence[float | None]  # 95 % interval, None where unknown
    hi: Sequence[float | None]


def _lambda_axis(ax, values: Sequence[float]) -> None:
    """Ticks at the swept values; a log axis when they are positive and span a factor of 4 or more."""
    values = sorted(set(values))
    if values and values[0] > 0 and values[-1] / values[0] >= 4:
        ax.set_xscale("log")
        ax.set_xlim(values[0] / 1.25, values[-1] * 1.25)
    elif len(values) > 1:
        span = values[-1] - values[0]
        ax.set_xlim(values[0] - 0.08 * span, values[-1] + 0.08 * span)
    ax.set_xticks(values, [f"{v:g}" for v in values])  # a fixed locator: exactly the swept values
    ax.xaxis.set_minor_locator(NullLocator())  # no log-scale minor ticks or labels between them


def curves_figure(curves: Sequence[Curve], keys: Sequence[str],
                  random_guess: tuple[float, float] | None = None) -> Figure:
    """One subplot per λ in `keys`: each curve's CCR against that λ with 95 % error bars, random guess dotted.

    Colour = task and scenario (identification red, expression blue; attack I lighter and dashed), marker =
    the group of jobs sharing the other swept values.
    """
    keys = list(keys)
    cols = min(len(keys), 3) or 1
    rows = max(1, math.ceil(len(keys) / cols))
    groups = list(dict.fromkeys(c.group for c in curves))
    markers = {g: GROUP_MARKERS[k % len(GROUP_MARKERS)] for k, g in enumerate(groups)}
    with _style():
        fig = _new_figure(max(6.0, 4.6 * cols + 0.4), 3.6 * rows + 1.4)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, key in zip(axes, keys):
            mine = [c for c in curves if c.key == key]
            for c in mine:
                y = np.asarray(c.y, float)
                known = [lo is not None and hi is not None for lo, hi in zip(c.lo, c.hi)]
                lo = np.where(known, [v if v is not None else 0.0 for v in c.lo], y)
                hi = np.where(known, [v if v is not None else 0.0 for v in c.hi], y)
                ax.errorbar(c.x, y, yerr=np.clip(np.stack([y - lo, hi - y]), 0, None),
                            color=TASK_COLOURS.get((c.task, c.scenario), "black"),
                            linestyle=SCENARIO_LINESTYLES.get(c.scenario, "-."), marker=markers[c.group],
                            markersize=5, linewidth=1.4, elinewidth=0.8, capsize=3,
                            label=f"{c.scenario.replace('_', ' ')} {c.task}" + (f" ({c.group})" if c.group else ""))
            if random_guess is not None:
                for task, chance in zip(("identification", "expression"), random_guess):
                    ax.axhline(chance, color=TASK_COLOURS[(task, "attack_II")], linestyle=":", linewidth=0.9)
            _lambda_axis(ax, [v for c in mine for v in c.x])
            ax.set_ylim(-0.02, 1.02)
            _percent_axis(ax.yaxis)
            ax.grid(True, color="0.9", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_xlabel(f"λ {key}")
            ax.set_ylabel("CCR")
            ax.set_title(f"CCR against λ {key}")
        for ax in axes[len(keys):]:
            ax.set_axis_off()
        fig.legend(handles=_curve_legend(curves, groups, markers, random_guess is not None),
                   loc="outside lower center", ncols=2 if cols == 1 else 3, fontsize=8, frameon=False)
        fig.suptitle("Sweep: CCR against each swept λ\n(identification: lower = more private; "
                     "expression: higher = more useful)", fontsize=10)
    return fig


def _curve_legend(curves: Sequence[Curve], groups: Sequence[str], markers: dict, chance: bool) -> list[Line2D]:
    """Legend entries: one line style per (scenario, task), the random-guess lines, one marker per job group."""
    handles = []
    for task, scenario in dict.fromkeys((c.task, c.scenario) for c in curves):
        handles.append(Line2D([], [], color=TASK_COLOURS.get((task, scenario), "black"),
                              linestyle=SCENARIO_LINESTYLES.get(scenario, "-."),
                              label=f"{scenario.replace('_', ' ')} {task}"))
    if chance:
        handles += [Line2D([], [], color=TASK_COLOURS[(t, "attack_II")], linestyle=":", label=f"random guess, {t}")
                    for t in ("identification", "expression")]
    if len(groups) > 1:
        handles += [Line2D([], [], color="0.3", linestyle="none", marker=markers[g],
                           label=g if len(g) <= MAX_LEGEND_CHARS else g[:MAX_LEGEND_CHARS - 1] + "…") for g in groups]
    return handles


# ----------------------------------------------------------------------------------------------- confusion
def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """A confusion matrix: rows = true class, columns = predicted; colour = fraction of the row, cells = counts."""
    matrix = np.asarray(matrix)
    k = len(matrix)
    frac = matrix / matrix.sum(1, keepdims=True).clip(min=1)
    side = max(3.2, 0.42 * k + 1.6)
    longest = max((len(str(n)) for n in names), default=1)
    with _style():
        fig = _new_figure(side + 1.3, side + 0.5)
        ax = fig.subplots()
        image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(image, ax=ax, label="fraction of the true class (row)", format=PercentFormatter(xmax=1),
                     shrink=0.85)
        rotation = 45 if longest * k > 40 else 0
        ax.set_xticks(range(k), [str(n) for n in names], rotation=rotation, ha="right" if rotation else "center",
                      rotation_mode="anchor", parse_math=False)
        ax.set_yticks(range(k), [str(n) for n in names], parse_math=False)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, parse_math=False)
        size = max(4.0, min(9.0, 90.0 / max(k, 1)))
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=size,
                        color="white" if frac[i, j] > 0.6 else "black")
    return fig


# ----------------------------------------------------------------------------------------------- image grids
def _text_size(text: str, fontsize: float, dpi: int) -> tuple[float, float]:
    """(width, height) in pixels of one line of text at `dpi`."""
    renderer = FigureCanvasAgg(Figure(dpi=dpi)).get_renderer()
    width, height, _ = renderer.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return width, height


def labelled_grid(tiles: np.ndarray, scale: int, row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, title: str | None = None,
                  fontsize: float = 10) -> Figure:
    """(rows, cols, H, W, 3) uint8 images as one grid (`grid_pixels`: 1 px white gaps, ×`scale` nearest
    neighbour) with `title` on top, `col_labels` above the columns and `row_labels` left of the rows.

    The figure is sized in whole pixels at GRID_DPI so that its PNG holds the grid pixel for pixel; column
    labels wider than a tile are written vertically.
    """
    pixels = grid_pixels(tiles, scale=scale)
    grid_h, grid_w = pixels.shape[:2]
    rows, cols, h, w = tiles.shape[:4]
    margin, gap = 6, 4
    with _style():
        line_h = _text_size("Ag", fontsize, GRID_DPI)[1]
        col_w = [_text_size(s, fontsize, GRID_DPI)[0] for s in col_labels or ()]
        vertical = bool(col_w) and max(col_w) > w * scale - 4
        col_h = (max(col_w) if vertical else line_h) + gap + 2 if col_labels else 0
        left = margin + (max(_text_size(s, fontsize, GRID_DPI)[0] for s in row_labels) + gap + 2
                         if row_labels else 0)
        title_w, title_h = _text_size(title, fontsize + 1, GRID_DPI) if title else (0, 0)
        left, top = math.ceil(left), math.ceil(margin + (title_h + gap if title else 0) + col_h)
        width = max(left + grid_w + margin, math.ceil(title_w) + 4 * margin)
        left += (width - (left + grid_w + margin)) // 2  # a title wider than the grid: centre the grid under it
        height = top + grid_h + margin
        fig = _new_figure(width / GRID_DPI, height / GRID_DPI, dpi=GRID_DPI, layout=None)
        ax = fig.add_axes((left / width, margin / height, grid_w / width, grid_h / height))
        ax.imshow(pixels, interpolation="none", aspect="auto", resample=False)
        if not (row_labels or col_labels):
            ax.set_axis_off()
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0, labelsize=fontsize, pad=gap)
        ax.xaxis.tick_top()

        def tile_centre(k: int, size: int) -> float:  # in imshow coordinates: pixel i spans [i - 0.5, i + 0.5]
            return scale * (1 + k * (size + 1) + size / 2) - 0.5

        ax.set_xticks([tile_centre(k, w) for k in range(cols)] if col_labels else [])
        if col_labels:
            ax.set_xticklabels(col_labels, rotation=90 if vertical else 0, parse_math=False)
        ax.set_yticks([tile_centre(k, h) for k in range(rows)] if row_labels else [])
        if row_labels:
            ax.set_yticklabels(row_labels, parse_math=False)
        if title:  # centred over the images, as far as the figure allows
            centre_x = min(max(left + grid_w / 2, title_w / 2 + 2 * margin), width - title_w / 2 - 2 * margin)
            fig.text(centre_x / width, 1 - margin / height, title, ha="center", va="top", fontsize=fontsize + 1,
                     parse_math=False)
    return fig
